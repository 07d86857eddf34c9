"""What /metrics says about requests, plugins, tokens, limits and the store."""

from __future__ import annotations

import itertools

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lunos_proxy.config import Config
from lunos_proxy.exchange import Exchange, Usage
from lunos_proxy.loading import parse_config
from lunos_proxy.metrics import DURATION_BUCKETS, TTFT_BUCKETS, Metrics, instrument_store
from lunos_proxy.store import open_store
from lunos_proxy.store.base import StoreError
from tests.conftest import GatewayFactory, Running, basic_config
from tests.fakes import FakeProvider
from tests.redis_servers import RedisServer


def samples(exposition: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(exposition):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(exposition: str, name: str, **labels: str) -> float:
    return samples(exposition).get((name, frozenset(labels.items())), 0.0)


async def scrape(gw: Running) -> str:
    async with aiohttp.ClientSession() as s:
        async with s.get(gw.admin_url + "/metrics") as r:
            assert r.headers["Content-Type"].startswith("text/plain; version=")
            return await r.text()


def config() -> Config:
    return parse_config(
        "models: {gpt-test: {aliases: [gpt-alias], deployments: [{provider: p, model: m}]}}\n"
        "providers: {p: {format: openai, base_url: 'http://127.0.0.1:9/v1'}}\n",
        "t.yaml",
    )


async def test_each_plugin_has_its_own_time_apart_from_the_provider_wait(
    provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    cfg = basic_config(provider.base_url, pipeline=[{"name": "request_id"}, {"name": "logger"}])
    cfg["metrics"] = {"plugin_time_share": 1.0}
    gw = await make_gateway(cfg)
    provider.behaviour.delay_headers = 0.5
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.v1 + "/chat/completions", json={"model": "gpt-test", "messages": []}) as r:
            assert r.status == 200
    text = await scrape(gw)
    for plugin in ("request_id", "logger"):
        assert value(text, "lunos_plugin_duration_seconds_count", plugin=plugin) == 1
        # The plugin's own code, not the half second it spent awaiting the provider.
        assert value(text, "lunos_plugin_duration_seconds_sum", plugin=plugin) < 0.25
    assert value(text, "lunos_request_duration_seconds_sum", model="gpt-test", provider="fake") >= 0.5
    assert value(text, "lunos_upstream_duration_seconds_sum", model="gpt-test", provider="fake") >= 0.5
    assert value(text, "lunos_upstream_time_to_first_byte_seconds_count", model="gpt-test", provider="fake") == 1
    assert value(text, "lunos_gateway_overhead_seconds_count") == 1
    assert value(text, "lunos_requests_in_flight") == 0
    assert value(
        text, "lunos_requests_total", model="gpt-test", provider="fake", status_class="2xx", error_type="none"
    ) == 1


async def test_plugin_time_counts_a_refusal_that_never_reaches_the_provider(
    provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    cfg = basic_config(provider.base_url, pipeline=[{"name": "request_id"}, {"name": "logger"}])
    cfg["metrics"] = {"plugin_time_share": 1.0}
    gw = await make_gateway(cfg)
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.v1 + "/chat/completions", data=b"{not json") as r:
            assert r.status == 400
    text = await scrape(gw)
    assert value(text, "lunos_plugin_duration_seconds_count", plugin="logger") == 1
    assert value(
        text, "lunos_requests_total", model="none", provider="none", status_class="4xx", error_type="caller"
    ) == 1
    assert provider.received == []


@pytest.mark.parametrize(("share", "low", "high"), [(0.25, 60, 140), (0.0, 0, 0), (1.0, 400, 400)])
async def test_plugins_are_timed_for_the_configured_share_of_requests(
    provider: FakeProvider, make_gateway: GatewayFactory, share: float, low: int, high: int
) -> None:
    """Every request is served and counted; only `plugin_time_share` of them
    (at random: 100 of 400 expected at a quarter, 60-140 is 4.6 standard
    deviations either side) have their plugins timed."""
    cfg = basic_config(provider.base_url, pipeline=[{"name": "request_id"}, {"name": "logger"}])
    cfg["metrics"] = {"plugin_time_share": share}
    gw = await make_gateway(cfg)
    async with aiohttp.ClientSession() as s:
        for _ in range(400):
            async with s.post(gw.v1 + "/chat/completions", json={"model": "gpt-test", "messages": []}) as r:
                assert r.status == 200
    text = await scrape(gw)
    assert value(
        text, "lunos_requests_total", model="gpt-test", provider="fake", status_class="2xx", error_type="none"
    ) == 400
    timed = {value(text, "lunos_plugin_duration_seconds_count", plugin=p) for p in ("request_id", "logger")}
    assert len(timed) == 1  # a request is timed through every plugin or none
    assert low <= timed.pop() <= high


def test_tokens_cost_and_unknown_models_are_counted_by_config_names() -> None:
    m = Metrics()
    cfg = config()
    ex = Exchange()
    ex.model, ex.provider, ex.status = "gpt-alias", "p", 200
    ex.usage = Usage(input_tokens=11, output_tokens=6, cached_input_tokens=4, source="reported")
    ex.cost_micros = 2_500
    m.record(ex, cfg)
    other = Exchange()
    other.model, other.status, other.error_type = "client-chosen-name", 404, "caller"
    m.record(other, cfg)
    text = m.registry_for_scrape()
    from prometheus_client import generate_latest

    out = generate_latest(text).decode()
    assert value(out, "lunos_tokens_total", model="gpt-test", provider="p", type="input") == 11
    assert value(out, "lunos_tokens_total", model="gpt-test", provider="p", type="output") == 6
    assert value(out, "lunos_tokens_total", model="gpt-test", provider="p", type="cached_input") == 4
    assert ("lunos_tokens_total", frozenset({"model": "gpt-test", "provider": "p", "type": "reasoning"}.items())) not in samples(out)
    assert value(out, "lunos_cost_usd_total", model="gpt-test", provider="p") == pytest.approx(0.0025)
    assert value(
        out, "lunos_requests_total", model="unknown", provider="none", status_class="4xx", error_type="caller"
    ) == 1
    assert "client-chosen-name" not in out


@pytest.mark.parametrize(
    ("code", "scope", "counted"),
    [
        ("rate_limit_exceeded", "key", "key"),
        ("rate_limit_exceeded", "made-up", "other"),
        ("rate_limit_exceeded", None, "other"),
        ("insufficient_quota", None, "budget"),
    ],
)
def test_limit_refusals_are_counted_by_a_bounded_scope(code: str, scope: str | None, counted: str) -> None:
    from prometheus_client import generate_latest

    m = Metrics()
    ex = Exchange()
    ex.status, ex.error_type, ex.error_code = 429, "policy", code
    if scope is not None:
        ex.extra["limit_scope"] = scope
    m.record(ex, config())
    out = generate_latest(m.registry).decode()
    assert value(out, "lunos_limit_refusals_total", scope=counted) == 1
    assert sum(v for (n, _), v in samples(out).items() if n == "lunos_limit_refusals_total") == 1


def test_buckets_follow_the_genai_conventions() -> None:
    assert DURATION_BUCKETS[0] == 0.01 and DURATION_BUCKETS[-1] == 81.92
    assert all(b == a * 2 for a, b in itertools.pairwise(DURATION_BUCKETS))
    assert TTFT_BUCKETS[0] == 0.001 and TTFT_BUCKETS[-1] == 10.0


async def test_store_operations_are_timed_and_failures_counted(redis_server: RedisServer) -> None:
    from prometheus_client import generate_latest

    m = Metrics()
    store = instrument_store(open_store(redis_server.url), m)
    await store.start()
    try:
        assert await store.key_by_id("key_missing") is None
        redis_server.stop()
        with pytest.raises(StoreError):
            await store.key_by_id("key_missing")
    finally:
        await store.close()
    out = generate_latest(m.registry).decode()
    assert value(out, "lunos_store_operation_seconds_count", operation="key_by_id") == 2
    assert value(out, "lunos_store_errors_total", operation="key_by_id") == 1


def test_every_gauge_says_how_workers_combine() -> None:
    # With `serve --workers N` a gauge left at the default mode ("all") would
    # export one series per worker process; each must say sum, max or min.
    from prometheus_client import Gauge

    gauges = [c for c in Metrics().registry._collector_to_names if isinstance(c, Gauge)]
    assert gauges
    assert {g._name: g._multiprocess_mode for g in gauges if g._multiprocess_mode == "all"} == {}


def test_our_counters_and_histograms_expose_what_prometheus_client_s_own_would() -> None:
    import prometheus_client
    from prometheus_client import CollectorRegistry, generate_latest

    from lunos_proxy import metrics

    buckets = (0.001, 0.01, 0.1, 1.0)
    amounts = [0.0, 0.0005, 0.001, 0.002, 0.01, 0.5, 1.0, 7.0, float("nan"), -0.25]
    exposed = []
    for histogram, counter in ((metrics.Histogram, metrics.Counter),
                               (prometheus_client.Histogram, prometheus_client.Counter)):
        registry = CollectorRegistry()
        h = histogram("t_seconds", "t", ["k"], buckets=buckets, registry=registry).labels("a")
        c = counter("t_events", "t", ["k"], registry=registry).labels("a")
        for amount in amounts:
            h.observe(amount)
        c.inc()
        c.inc(2.5)
        with pytest.raises(ValueError, match="negative"):
            c.inc(-1)
        text = generate_latest(registry).decode()
        exposed.append("\n".join(line for line in text.splitlines() if "_created" not in line))
    ours, theirs = exposed
    assert ours == theirs
    # 0, 0.0005, 0.001 itself and -0.25 count at le=0.001; NaN in no bucket
    assert 't_seconds_bucket{k="a",le="0.001"} 4.0' in ours
    assert 't_events_total{k="a"} 3.5' in ours
