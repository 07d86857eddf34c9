"""Capacity (concurrent requests per instance, tokens per minute in the store) and price."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from tests.conftest import GatewayFactory
from tests.plugins.router.conftest import ProviderFactory, chat, deployment, router_config


async def test_max_concurrent_sends_the_overflow_elsewhere(fakes: ProviderFactory, make_gateway: GatewayFactory) -> None:
    a, b = await fakes(2)
    a.behaviour.gate = asyncio.Event()  # a holds every request until released
    gw = await make_gateway(router_config({"a": a, "b": b}, {"m": {"strategy": "priority", "deployments": [
        deployment("a", capacity={"max_concurrent": 1}), deployment("b")]}}))
    first = asyncio.create_task(chat(gw.url))
    for _ in range(100):  # until a holds the first request (bounded: 5 s)
        if a.received:
            break
        await asyncio.sleep(0.05)
    assert (await chat(gw.url))[0] == 200
    a.behaviour.gate.set()
    assert (await first)[0] == 200
    assert (len(a.received), len(b.received)) == (1, 1)


async def test_max_concurrent_holds_while_the_store_counts_the_per_minute_limit(
    fakes: ProviderFactory, make_gateway: GatewayFactory, redis_url: str
) -> None:
    import uuid

    a, b = await fakes(2)
    a.behaviour.gate = asyncio.Event()
    capacity = {"max_concurrent": 1, "requests_per_minute": 1000}  # a store round trip first
    gw = await make_gateway(router_config(
        {"a": a, "b": b},
        {"m": {"strategy": "priority", "deployments": [deployment("a", capacity=capacity),
                                                       deployment("b")]}},
        store=redis_url, store_options={"prefix": f"t{uuid.uuid4().hex[:10]}:"}))
    requests = [asyncio.ensure_future(chat(gw.url)) for _ in range(3)]  # all at once
    for _ in range(100):  # until two have gone to b (bounded: 5 s)
        if len(b.received) == 2:
            break
        await asyncio.sleep(0.05)
    a.behaviour.gate.set()
    assert [status for status, *_ in await asyncio.gather(*requests)] == [200, 200, 200]
    assert (len(a.received), len(b.received)) == (1, 2)


async def test_tokens_per_minute_passes_a_spent_deployment_over(fakes: ProviderFactory, make_gateway: GatewayFactory) -> None:
    a, b = await fakes(2)
    gw = await make_gateway(router_config({"a": a, "b": b}, {"m": {"strategy": "priority", "deployments": [
        deployment("a", capacity={"tokens_per_minute": 1000}), deployment("b")]}}))
    body = {"model": "m", "max_tokens": 700, "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as s:
        for _ in range(2):  # 700 + a few tokens of prompt each: the second does not fit
            async with s.post(gw.url + "/v1/chat/completions", json=body) as r:
                assert r.status == 200
    assert (len(a.received), len(b.received)) == (1, 1)


async def test_a_failed_attempt_gives_its_token_estimate_back(
    fakes: ProviderFactory, make_gateway: GatewayFactory
) -> None:
    a, b = await fakes(2)
    gw = await make_gateway(router_config({"a": a, "b": b}, {"m": {"strategy": "priority", "deployments": [
        deployment("a", capacity={"tokens_per_minute": 1000}), deployment("b")]}}))
    a.behaviour.statuses = [500]  # a's first answer fails: the request goes on to b
    body = {"model": "m", "max_tokens": 700, "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as s:
        for _ in range(2):
            async with s.post(gw.url + "/v1/chat/completions", json=body) as r:
                assert r.status == 200
    # The second request fits in a again: the failed attempt's 700 + tokens came back.
    assert (len(a.received), len(b.received)) == (2, 1)


async def test_lowest_price_follows_the_meters_pricing_table(
    fakes: ProviderFactory, make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    a, b = await fakes(2)
    (tmp_path / "pricing.yaml").write_text(
        "currency: USD\n"
        "models:\n"
        "  a/up: [{from: 2025-01-01, input: 3.0, output: 12.0}]\n"
        "  b/up: [{from: 2025-01-01, input: 0.5, output: 1.5}]\n"
    )
    config = router_config({"a": a, "b": b}, {"m": {"strategy": "lowest_price", "deployments": [
        deployment("a", price=0.01), deployment("b")]}})  # the table wins over `price`
    config["pipeline"].insert(2, {"name": "meter", "settings": {"pricing": str(tmp_path / "pricing.yaml")}})
    gw = await make_gateway(config)
    for _ in range(5):
        assert (await chat(gw.url))[0] == 200
    assert (len(a.received), len(b.received)) == (0, 5)
