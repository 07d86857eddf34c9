"""Strategies, decided in-process (no HTTP): exact or seeded, so they cannot flake."""

from __future__ import annotations

import random
from collections import Counter

from lunos_proxy.loading import parse_config
from lunos_proxy.store.memory import MemoryStore
from plugins.router.breaker import BreakerSettings
from plugins.router.routes import Route, build_routes
from plugins.router.state import Registry


def route(strategy: str, deployments: str, seed: int = 7, explore: float = 0.05) -> Route:
    cfg = parse_config(f"""
providers:
  p: {{format: openai, base_url: "http://127.0.0.1:1/v1"}}
models:
  m:
    strategy: {strategy}
    deployments: {deployments}
""", "t.yaml")
    registry = Registry(MemoryStore(None), BreakerSettings(), 2.0)
    routes, _ = build_routes(cfg, registry, random.Random(seed), explore)
    return routes["m"]


def picks(r: Route, n: int) -> Counter[str]:
    return Counter(r.strategy.choose(r.candidates).id for _ in range(n))


def test_weighted_random_holds_the_weights() -> None:
    r = route("weighted", "[{provider: p, model: a, weight: 1}, {provider: p, model: b, weight: 3},"
                          " {provider: p, model: c, weight: 6}]")
    got = picks(r, 2000)
    # Expected 200/600/1200; +-100 is over 4 standard deviations for each,
    # and the seed makes the run repeatable.
    assert abs(got["p/a"] - 200) < 100
    assert abs(got["p/b"] - 600) < 100
    assert abs(got["p/c"] - 1200) < 100
    assert sum(got.values()) == 2000


def test_weighted_random_spreads_over_fifty_deployments() -> None:
    deployments = ", ".join(f"{{provider: p, model: d{i}, weight: {1 + i % 2}}}" for i in range(50))
    got = picks(route("weighted", f"[{deployments}]"), 30000)
    assert len(got) == 50
    heavy = sum(got[f"p/d{i}"] for i in range(1, 50, 2))
    assert abs(heavy / 30000 - 2 / 3) < 0.02  # 25 of weight 2 against 25 of weight 1


def test_least_in_flight_picks_the_idlest() -> None:
    r = route("least_in_flight", "[{provider: p, model: a}, {provider: p, model: b}, {provider: p, model: c}]")
    a, b, c = r.candidates
    a.state.in_flight, b.state.in_flight, c.state.in_flight = 4, 1, 2
    assert picks(r, 50) == Counter({"p/b": 50})
    b.state.in_flight = 2
    assert set(picks(r, 200)) == {"p/b", "p/c"}  # a tie is shared


def test_lowest_latency_prefers_the_fastest_and_explores_the_rest() -> None:
    r = route("lowest_latency", "[{provider: p, model: slow}, {provider: p, model: fast}]", explore=0.1)
    slow, fast = r.candidates
    slow.state.observe_latency(2.0, 0.3)
    fast.state.observe_latency(0.2, 0.3)
    got = picks(r, 2000)
    # exploration picks uniformly 10% of the time: slow gets about 5%
    assert 40 < got["p/slow"] < 160
    assert got["p/fast"] == 2000 - got["p/slow"]


def test_lowest_latency_tries_an_unmeasured_deployment_first() -> None:
    r = route("lowest_latency", "[{provider: p, model: known}, {provider: p, model: new}]", explore=0.0)
    r.candidates[0].state.observe_latency(0.05, 0.3)
    assert picks(r, 10) == Counter({"p/new": 10})


def test_latency_average_moves_toward_new_samples() -> None:
    r = route("lowest_latency", "[{provider: p, model: a}]")
    state = r.candidates[0].state
    state.observe_latency(1.0, 0.5)
    state.observe_latency(0.0, 0.5)
    assert state.latency == 0.5


def test_lowest_price_picks_the_cheapest_and_unpriced_last() -> None:
    r = route("lowest_price", "[{provider: p, model: a}, {provider: p, model: b, price: 2.5},"
                              " {provider: p, model: c, price: 0.5}]")
    assert picks(r, 20) == Counter({"p/c": 20})
    assert r.strategy.choose(r.candidates[:2]).id == "p/b"
    assert r.strategy.choose(r.candidates[:1]).id == "p/a"


def test_priority_is_listed_order() -> None:
    r = route("priority", "[{provider: p, model: a}, {provider: p, model: b}]")
    assert picks(r, 10) == Counter({"p/a": 10})
    assert r.strategy.choose(r.candidates[1:]).id == "p/b"
