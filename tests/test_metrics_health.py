"""Gauges that follow their state without anyone polling, and series that exist from start."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
import yaml

from lunos_proxy.config import parse_config
from lunos_proxy.metrics import ATTEMPT_OUTCOMES, LIMIT_SCOPES
from lunos_proxy.store.base import StoreError
from tests.conftest import GatewayFactory, Running, basic_config
from tests.fakes import FakeProvider
from tests.redis_servers import RedisServer
from tests.test_metrics import samples, scrape, value


def two_deployments(provider_url: str, **extra: Any) -> dict[str, Any]:
    """Model "duo" on two deployments of the fake, behind the router."""
    config = basic_config(provider_url, **extra)
    config["models"]["duo"] = {
        "fallbacks": ["gpt-test"],
        "deployments": [
            {"provider": "fake", "model": "duo-a", "name": "duo-a"},
            {"provider": "fake", "model": "duo-b", "name": "duo-b"},
        ],
    }
    config["pipeline"] = [{"name": "request_id"}, {"name": "router"}]
    return config


async def eventually(check: Any, what: str, within: float = 8.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)


async def store_up(gw: Running) -> float | None:
    return samples(await scrape(gw)).get(("lunos_store_up", frozenset()))


async def test_store_up_follows_the_store_calls_without_anyone_polling_readyz(
    provider: FakeProvider, make_gateway: GatewayFactory, redis_server: RedisServer
) -> None:
    gw = await make_gateway(basic_config(provider.base_url, store={"url": redis_server.url}))
    assert await store_up(gw) == 1  # from start, no /readyz asked
    redis_server.stop()
    with pytest.raises(StoreError):
        await gw.gateway.store.key_by_hash("no-such-hash")
    assert await store_up(gw) == 0  # the failed call itself says so
    redis_server.start()
    assert await gw.gateway.store.key_by_hash("no-such-hash") is None
    assert await store_up(gw) == 1  # and the next answer


async def test_an_idle_store_is_probed_so_store_up_follows_it(
    provider: FakeProvider, make_gateway: GatewayFactory, redis_server: RedisServer
) -> None:
    gw = await make_gateway(basic_config(provider.base_url, store={"url": redis_server.url}))
    assert await store_up(gw) == 1
    redis_server.stop()  # and nothing calls the store
    started = time.monotonic()

    async def down() -> bool:
        return await store_up(gw) == 0

    await eventually(down, "lunos_store_up never went to 0 on an idle store")
    assert time.monotonic() - started < 6  # one probe interval (2 s) and a failed ping
    redis_server.start()

    async def up() -> bool:
        return await store_up(gw) == 1

    await eventually(up, "lunos_store_up never came back to 1")
    text = await scrape(gw)
    assert value(text, "lunos_store_errors_total", operation="ping") >= 1


async def test_every_configured_label_has_its_series_at_zero_from_start(
    provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(two_deployments(provider.base_url))
    found = samples(await scrape(gw))

    def at_zero(name: str, **labels: str) -> bool:
        return found.get((name, frozenset(labels.items()))) == 0

    for deployment in ("duo-a", "duo-b"):
        assert at_zero("lunos_breaker_open", model="duo", deployment=deployment, provider="fake")
        for reason in ("cooldown", "breaker", "capacity"):
            assert at_zero("lunos_route_skips_total", deployment=deployment, reason=reason)
        for outcome in ATTEMPT_OUTCOMES:
            assert at_zero("lunos_deployment_attempts_total", model="duo", deployment=deployment, outcome=outcome)
    for provider_name in ("fake", "none"):
        assert at_zero("lunos_requests_total", model="duo", provider=provider_name, status_class="5xx",
                       error_type="provider")
    assert at_zero("lunos_requests_total", model="duo", provider="fake", status_class="2xx", error_type="none")
    assert at_zero("lunos_route_fallbacks_total", model="duo", fallback="gpt-test")
    assert at_zero("lunos_cost_usd_total", model="duo", provider="fake")
    assert at_zero("lunos_tokens_total", model="duo", provider="fake", type="output")
    assert at_zero("lunos_request_duration_seconds_count", model="duo", provider="fake")
    for result in ("applied", "rejected"):
        assert at_zero("lunos_config_reloads_total", result=result)
    for scope in LIMIT_SCOPES:
        assert at_zero("lunos_limit_refusals_total", scope=scope)
    for operation in ("hit", "settle", "ping", "key_by_hash", "add_usage"):
        assert at_zero("lunos_store_errors_total", operation=operation)
    # Bounded by the config: nothing per client, nothing for a model not configured.
    models = {dict(labels).get("model") for name, labels in found if name == "lunos_requests_total"}
    assert models == {"duo", "gpt-test", "gpt-same", "claude-test", "none", "unknown"}


async def test_a_healthy_deployment_reads_zero_beside_a_broken_one(
    provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    """The issue's false page: min by (model) saw only the broken deployment."""
    healthy = FakeProvider()
    await healthy.start()
    try:
        config = two_deployments(provider.base_url)
        config["providers"]["healthy"] = {"format": "openai", "base_url": healthy.base_url, "api_key": "sk-h"}
        duo = config["models"]["duo"]
        duo["strategy"] = "priority"
        duo["deployments"][1].update(provider="healthy", priority=2)
        config["pipeline"][1]["settings"] = {"breaker": {"min_requests": 2, "failure_rate": 0.5}}
        gw = await make_gateway(config)
        provider.behaviour.status = 500  # duo-a fails; duo-b answers every request
        async with aiohttp.ClientSession() as s:
            for _ in range(4):
                async with s.post(gw.v1 + "/chat/completions", json={"model": "duo", "messages": []}) as r:
                    assert r.status == 200
        text = await scrape(gw)
    finally:
        await healthy.close()
    assert value(text, "lunos_breaker_open", model="duo", deployment="duo-a", provider="fake") == 1
    assert samples(text)[("lunos_breaker_open", frozenset(
        {"model": "duo", "deployment": "duo-b", "provider": "healthy"}.items()))] == 0
    assert value(text, "lunos_requests_total", model="duo", provider="healthy", status_class="2xx",
                 error_type="none") == 4


async def test_a_reload_adds_the_new_series_and_drops_a_removed_deployments_breaker(
    provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    config = two_deployments(provider.base_url)
    gw = await make_gateway(config)
    config["models"]["duo"]["deployments"].pop()  # duo-b goes
    config["models"]["trio"] = {"deployments": [{"provider": "fake", "model": "t", "name": "trio-a"}]}
    await gw.gateway.swap(parse_config(yaml.safe_dump(config), "test.yaml"))
    found = samples(await scrape(gw))
    breakers = {
        (dict(labels)["model"], dict(labels)["deployment"]) for name, labels in found if name == "lunos_breaker_open"
    }
    assert breakers == {("duo", "duo-a"), ("trio", "trio-a"), ("gpt-test", "fake/gpt-upstream"),
                        ("gpt-same", "fake/gpt-same"), ("claude-test", "fake-anthropic/claude-upstream")}
    assert found[("lunos_requests_total", frozenset(
        {"model": "trio", "provider": "none", "status_class": "5xx", "error_type": "provider"}.items()))] == 0


async def test_event_loop_lag_shows_a_blocked_loop(provider: FakeProvider, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(basic_config(provider.base_url))
    await asyncio.sleep(1.1)  # a couple of ticks on time
    before = samples(await scrape(gw))
    assert before[("lunos_event_loop_lag_seconds_count", frozenset())] >= 2
    assert before[("lunos_event_loop_lag_seconds_bucket", frozenset({"le": "0.25"}.items()))] == \
        before[("lunos_event_loop_lag_seconds_count", frozenset())]
    time.sleep(0.9)  # the loop is blocked: the timer due meanwhile runs late  # noqa: ASYNC251
    await asyncio.sleep(0.6)
    after = samples(await scrape(gw))
    late = after[("lunos_event_loop_lag_seconds_count", frozenset())] - \
        after[("lunos_event_loop_lag_seconds_bucket", frozenset({"le": "0.25"}.items()))]
    assert late == 1  # exactly one tick ran more than 0.25 s late
    assert after[("lunos_event_loop_lag_seconds_sum", frozenset())] - \
        before[("lunos_event_loop_lag_seconds_sum", frozenset())] > 0.35
