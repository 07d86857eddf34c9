"""Retries, fallbacks and per-deployment timeouts, against fake providers on loopback."""

from __future__ import annotations

import json
import time

from tests.conftest import GatewayFactory
from tests.plugins.router.conftest import (
    ProviderFactory,
    chat,
    deployment,
    error_of,
    metric,
    router_config,
)


async def test_retryable_failure_moves_to_the_next_deployment(fakes: ProviderFactory, make_gateway: GatewayFactory) -> None:
    a, b = await fakes(2)
    a.behaviour.status = 503
    gw = await make_gateway(router_config(
        {"a": a, "b": b}, {"m": {"strategy": "priority", "deployments": [deployment("a"), deployment("b")]}}))
    status, _, body = await chat(gw.url)
    assert status == 200
    assert json.loads(body)["choices"][0]["message"]["content"] == "Hello, world!"
    assert (len(a.received), len(b.received)) == (1, 1)
    assert await metric(gw.admin_url, 'lunos_deployment_attempts_total{deployment="a/up",model="m",outcome="server_error"}') == 1
    assert await metric(gw.admin_url, 'lunos_deployment_attempts_total{deployment="b/up",model="m",outcome="ok"}') == 1
    assert await metric(gw.admin_url, 'lunos_route_retries_total{model="m"}') == 1


async def test_no_retry_once_the_first_byte_reached_the_client(fakes: ProviderFactory, make_gateway: GatewayFactory) -> None:
    a, b = await fakes(2)
    a.behaviour.cut_after = 2
    gw = await make_gateway(router_config(
        {"a": a, "b": b}, {"m": {"strategy": "priority", "deployments": [deployment("a"), deployment("b")]}}))
    status, _, body = await chat(gw.url, stream=True)
    assert status == 200
    events = [e for e in body.decode().split("\n\n") if e]
    assert len(events) == 3  # two from the provider, then our error event
    assert json.loads(events[2].removeprefix("data: "))["error"]["code"] == "upstream_error"
    assert (len(a.received), len(b.received)) == (1, 0)
    assert await metric(gw.admin_url, 'lunos_deployment_attempts_total{deployment="a/up",model="m",outcome="stream_broken"}') == 1


async def test_stall_before_first_byte_is_cut_by_the_deployment_timeout_and_retried(
    fakes: ProviderFactory, make_gateway: GatewayFactory
) -> None:
    a, b = await fakes(2)
    a.behaviour.delay_headers = 5.0
    gw = await make_gateway(router_config({"a": a, "b": b}, {"m": {"strategy": "priority", "deployments": [
        deployment("a", timeouts={"first_byte": 0.3}), deployment("b")]}}))
    started = time.perf_counter()
    status, _, _ = await chat(gw.url)
    elapsed = time.perf_counter() - started
    assert status == 200
    assert (len(a.received), len(b.received)) == (1, 1)
    assert elapsed >= 0.3  # a was waited on for its 0.3 s, then cut (b served, not a)
    assert await metric(gw.admin_url, 'lunos_deployment_attempts_total{deployment="a/up",model="m",outcome="timeout"}') == 1


async def test_fallback_model_serves_when_every_deployment_failed(fakes: ProviderFactory, make_gateway: GatewayFactory) -> None:
    a, b, c = await fakes(3)
    a.behaviour.status = b.behaviour.status = 500
    gw = await make_gateway(router_config({"a": a, "b": b, "c": c}, {
        "m": {"fallbacks": ["backup"], "deployments": [deployment("a"), deployment("b")]},
        "backup": {"deployments": [deployment("c", "small")]},
    }, router={"max_attempts": 3}))
    status, _, _ = await chat(gw.url)
    assert status == 200
    assert [r.json()["model"] for r in c.received] == ["small"]
    assert (len(a.received), len(b.received)) == (1, 1)
    assert await metric(gw.admin_url, 'lunos_route_fallbacks_total{fallback="backup",model="m"}') == 1


async def test_when_every_option_fails_the_client_gets_the_last_status(
    fakes: ProviderFactory, make_gateway: GatewayFactory
) -> None:
    a, b = await fakes(2)
    a.behaviour.status = 503
    b.behaviour.status = 502
    b.behaviour.error_body = b'{"error":{"message":"sk-b leaked prompt text","type":"server_error"}}'
    gw = await make_gateway(router_config(
        {"a": a, "b": b}, {"m": {"strategy": "priority", "deployments": [deployment("a"), deployment("b")]}}))
    status, _, body = await chat(gw.url)
    assert status == 502
    assert error_of(body) == {
        "message": "The provider returned HTTP 502 (server_error); 2 attempts failed.",
        "type": "server_error", "param": None, "code": "upstream_status"}


async def test_max_attempts_bounds_the_retries(fakes: ProviderFactory, make_gateway: GatewayFactory) -> None:
    providers = await fakes(4)
    for p in providers:
        p.behaviour.status = 500
    names = {f"p{i}": p for i, p in enumerate(providers)}
    gw = await make_gateway(router_config(
        names, {"m": {"deployments": [deployment(n) for n in names]}}, router={"max_attempts": 2}))
    status, _, _ = await chat(gw.url)
    assert status == 500
    assert sum(len(p.received) for p in providers) == 2


async def test_a_client_error_from_the_provider_is_not_retried(fakes: ProviderFactory, make_gateway: GatewayFactory) -> None:
    a, b = await fakes(2)
    a.behaviour.status = 400
    gw = await make_gateway(router_config(
        {"a": a, "b": b}, {"m": {"strategy": "priority", "deployments": [deployment("a"), deployment("b")]}}))
    status, _, _ = await chat(gw.url)
    assert status == 400
    assert (len(a.received), len(b.received)) == (1, 0)


async def test_tier_two_serves_only_while_tier_one_is_unavailable(
    fakes: ProviderFactory, make_gateway: GatewayFactory
) -> None:
    a1, a2, b = await fakes(3)
    gw = await make_gateway(router_config({"a1": a1, "a2": a2, "b": b}, {"m": {"deployments": [
        deployment("b", priority=2, weight=100), deployment("a1"), deployment("a2")]}}))
    for _ in range(10):
        assert (await chat(gw.url))[0] == 200
    assert (len(a1.received) + len(a2.received), len(b.received)) == (10, 0)
    a1.behaviour.status = a2.behaviour.status = 429
    a1.behaviour.headers = a2.behaviour.headers = {"Retry-After": "30"}
    assert (await chat(gw.url))[0] == 200  # tier 1 answers 429 (and cools down), tier 2 serves
    assert (await chat(gw.url))[0] == 200  # tier 1 is cooling: straight to tier 2
    assert len(a1.received) + len(a2.received) == 12
    assert len(b.received) == 2


async def test_requests_per_minute_capacity_passes_a_full_deployment_over(
    fakes: ProviderFactory, make_gateway: GatewayFactory
) -> None:
    a, b = await fakes(2)
    gw = await make_gateway(router_config({"a": a, "b": b}, {"m": {"strategy": "priority", "deployments": [
        deployment("a", capacity={"requests_per_minute": 2}), deployment("b")]}}))
    for _ in range(3):
        assert (await chat(gw.url))[0] == 200
    assert (len(a.received), len(b.received)) == (2, 1)
    assert await metric(gw.admin_url, 'lunos_route_skips_total{deployment="a/up",reason="capacity"}') == 1


async def test_attempts_spent_on_the_model_leave_none_for_its_fallback(
    fakes: ProviderFactory, make_gateway: GatewayFactory
) -> None:
    a, b, c = await fakes(3)
    a.behaviour.status = b.behaviour.status = 500
    gw = await make_gateway(router_config({"a": a, "b": b, "c": c}, {
        "m": {"fallbacks": ["backup"], "deployments": [deployment("a"), deployment("b")]},
        "backup": {"deployments": [deployment("c")]},
    }, router={"max_attempts": 2}))
    assert (await chat(gw.url))[0] == 500
    assert (len(a.received), len(b.received), len(c.received)) == (1, 1, 0)
    assert await metric(gw.admin_url, 'lunos_route_fallbacks_total{fallback="backup",model="m"}') == 0
