"""Cooldowns from Retry-After, and the circuit breaker, seen through the admin API and /metrics."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import GatewayFactory
from tests.plugins.router.conftest import (
    ProviderFactory,
    admin_json,
    chat,
    deployment,
    metric,
    router_config,
    shift_clock,
)


def by_id(snapshot: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["deployment"]: d for d in snapshot["deployments"]}


async def test_retry_after_cools_the_deployment_down(fakes: ProviderFactory, make_gateway: GatewayFactory) -> None:
    a, b = await fakes(2)
    a.behaviour.statuses = [429]
    a.behaviour.headers = {"Retry-After": "30"}
    gw = await make_gateway(router_config(
        {"a": a, "b": b}, {"m": {"strategy": "priority", "deployments": [deployment("a"), deployment("b")]}}))
    for _ in range(3):
        assert (await chat(gw.url))[0] == 200
    assert (len(a.received), len(b.received)) == (1, 3)
    state = by_id(await admin_json(gw.admin_url, "/admin/routing"))["a/up"]
    assert 25 < state["cooldown_seconds_left"] <= 30
    assert await metric(gw.admin_url, 'lunos_route_skips_total{deployment="a/up",reason="cooldown"}') == 2


async def test_all_deployments_cooling_is_503_with_retry_after(fakes: ProviderFactory, make_gateway: GatewayFactory) -> None:
    (a,) = await fakes(1)
    a.behaviour.statuses = [503]
    a.behaviour.headers = {"Retry-After": "20"}
    gw = await make_gateway(router_config({"a": a}, {"m": {"deployments": [deployment("a")]}}))
    status, headers, _ = await chat(gw.url)
    assert (status, headers["Retry-After"]) == (503, "20")  # the provider's own answer, passed on
    status, headers, body = await chat(gw.url)
    assert status == 503
    assert 19 <= int(headers["Retry-After"]) <= 20
    assert b"all_deployments_down" in body
    assert len(a.received) == 1


async def test_breaker_opens_then_a_half_open_probe_closes_it(fakes: ProviderFactory, make_gateway: GatewayFactory) -> None:
    a, b = await fakes(2)
    a.behaviour.status = 500
    breaker = {"min_requests": 2, "failure_rate": 0.5, "open_seconds": 30, "window_seconds": 60}
    gw = await make_gateway(router_config(
        {"a": a, "b": b}, {"m": {"strategy": "priority", "deployments": [deployment("a"), deployment("b")]}},
        router={"breaker": breaker}))
    clock = shift_clock(gw.gateway)
    for _ in range(2):
        assert (await chat(gw.url))[0] == 200
    state = by_id(await admin_json(gw.admin_url, "/admin/routing"))["a/up"]
    assert (state["breaker"], state["breaker_open_seconds_left"]) == ("open", pytest.approx(30, abs=1))
    assert await metric(gw.admin_url, 'lunos_breaker_open{deployment="a/up",model="m",provider="a"}') == 1
    assert (await chat(gw.url))[0] == 200
    assert (len(a.received), len(b.received)) == (2, 3)  # the open breaker kept the third away from a
    a.behaviour.status = 200
    clock.advance(31)
    assert (await chat(gw.url))[0] == 200
    assert len(a.received) == 3  # the probe
    assert by_id(await admin_json(gw.admin_url, "/admin/routing"))["a/up"]["breaker"] == "closed"
    assert await metric(gw.admin_url, 'lunos_breaker_open{deployment="a/up",model="m",provider="a"}') == 0


async def test_failed_probe_opens_the_breaker_again(fakes: ProviderFactory, make_gateway: GatewayFactory) -> None:
    a, b = await fakes(2)
    a.behaviour.status = 500
    breaker = {"min_requests": 1, "failure_rate": 1.0, "open_seconds": 30}
    gw = await make_gateway(router_config(
        {"a": a, "b": b}, {"m": {"strategy": "priority", "deployments": [deployment("a"), deployment("b")]}},
        router={"breaker": breaker}))
    clock = shift_clock(gw.gateway)
    assert (await chat(gw.url))[0] == 200
    clock.advance(31)
    assert (await chat(gw.url))[0] == 200  # probe fails, b serves
    assert (await chat(gw.url))[0] == 200  # open again: a is skipped
    assert (len(a.received), len(b.received)) == (2, 3)
    assert by_id(await admin_json(gw.admin_url, "/admin/routing"))["a/up"]["breaker"] == "open"
