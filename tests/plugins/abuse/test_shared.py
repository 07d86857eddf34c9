"""The abuse plugin across instances sharing a real Redis (and a 3-node Cluster)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from typing import Any

import aiohttp
import pytest

from lunos_proxy.store import Slot
from lunos_proxy.store.redis import RedisStore
from tests.conftest import GatewayFactory, Running
from tests.fakes import COMPLETION_TOKENS, PROMPT_TOKENS, FakeProvider
from tests.plugins.abuse.fakes import abuse_fakes  # noqa: F401 - fixture
from tests.plugins.abuse.helpers import CHAT, abuse_config, eventually_async, metric, plan, post
from tests.redis_servers import RedisServer

pytestmark = pytest.mark.usefixtures("abuse_fakes")


async def two_instances(
    make_gateway: GatewayFactory, provider: FakeProvider, url: str, settings: dict[str, Any],
    **store_options: Any,
) -> tuple[Running, Running]:
    prefix = f"t{uuid.uuid4().hex[:10]}:"
    # A generous store timeout: on a busy machine 1 s could switch to the
    # fail-open local limiter, which is a different promise (tested below).
    store_options.setdefault("timeout", 30)
    store_options.setdefault("connect_timeout", 30)
    cfg = abuse_config(provider.base_url, settings, store=url, prefix=prefix, **store_options)
    return await make_gateway(cfg), await make_gateway(cfg)


@pytest.mark.parametrize("server", ["redis", "cluster"])
async def test_two_instances_admit_exactly_the_limit_of_400_concurrent_requests(
    server: str, request: pytest.FixtureRequest, provider: FakeProvider,
    make_gateway: GatewayFactory,
) -> None:
    url = request.getfixturevalue("redis_url" if server == "redis" else "redis_cluster_url")
    # 100 per day, not per minute: GCRA gives one request back every 0.6 s
    # at 100/minute, and 400 HTTP requests take longer than that here, so a
    # per-minute run admits 100 plus what came back meanwhile (README).
    a, b = await two_instances(make_gateway, provider, url,
                               plan(account={"requests_per_day": 100}))
    connector = aiohttp.TCPConnector(limit=400)
    async with aiohttp.ClientSession(connector=connector) as s:
        answers = await asyncio.gather(*(post(s, (a, b)[i % 2]) for i in range(400)))
    statuses = Counter(status for status, _, _ in answers)
    assert statuses == {200: 100, 429: 300}
    assert len(provider.received) == 100
    assert metric(a, "lunos_limits_store_degraded") == metric(b, "lunos_limits_store_degraded") == 0


async def test_token_limit_holds_its_bound_with_50_concurrent_streams(
    redis_url: str, provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    limit = 1000
    settings = plan(key={"tokens_per_minute": limit}) | {"tokens": {"bytes_per_token": 1}}
    a, b = await two_instances(make_gateway, provider, redis_url, settings)
    provider.behaviour.chunk_interval = 0.01
    body = {**CHAT, "stream": True, "max_tokens": 10}
    start = time.monotonic()
    async with aiohttp.ClientSession() as s:

        async def stream(gw: Running) -> int:
            async with s.post(gw.v1 + "/chat/completions", json=body,
                              headers={"Authorization": "Bearer acct1.key1"}) as r:
                await r.read()
                return r.status

        statuses = await asyncio.gather(*(stream((a, b)[i % 2]) for i in range(50)))
    elapsed = time.monotonic() - start
    admitted = statuses.count(200)
    used = admitted * (PROMPT_TOKENS + COMPLETION_TOKENS)
    # Documented bound: reservations cover real usage (max_tokens honoured,
    # one byte per token), so admitted usage <= limit + refill over the run.
    assert used <= limit + limit / 60 * elapsed
    reservation = len(aiohttp.JsonPayload(body)._value) + 10
    assert admitted >= limit // reservation  # the limit was used, not refused outright
    assert statuses.count(429) == 50 - admitted


async def test_auth_failures_on_one_instance_ban_the_address_on_another_escalating(
    redis_url: str, provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    settings = plan() | {"auth_failures": {"limit": 3, "window": 300, "ban_seconds": 1,
                                           "longest_ban_seconds": 10}}
    a, b = await two_instances(make_gateway, provider, redis_url, settings)
    async with aiohttp.ClientSession() as s:
        failures = [await post(s, a, key="bad") for _ in range(4)]
        assert [f[0] for f in failures] == [401, 401, 401, 429]
        assert failures[3][1]["Retry-After"] == "1"

        async def refused_on_b() -> bool:
            return (await post(s, b))[0] == 429  # even with a good key

        await eventually_async(refused_on_b)
        assert metric(a, "lunos_abuse_bans_total") == 1

        async def served_on_b() -> bool:
            return (await post(s, b))[0] == 200

        await eventually_async(served_on_b)  # the ban runs out
        again = await post(s, b, key="bad")  # failures are remembered: banned at once, longer
        assert again[0] == 429 and again[1]["Retry-After"] == "2"


async def test_a_long_stream_keeps_its_slot_past_the_lease_ttl(
    redis_url: str, provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    settings = plan(key={"concurrent": 1}) | {"concurrency_ttl": 3}
    a, b = await two_instances(make_gateway, provider, redis_url, settings)
    provider.behaviour.pause_after_first = 4.0
    async with aiohttp.ClientSession() as s:
        async with s.post(a.v1 + "/chat/completions", json={**CHAT, "stream": True},
                          headers={"Authorization": "Bearer acct1.key1"}) as r:
            await r.content.readline()
            await asyncio.sleep(3.3)  # past the ttl: only renewal keeps the lease
            provider.behaviour.pause_after_first = 0.0
            assert (await post(s, b))[0] == 429
            await r.read()

        async def served() -> bool:  # the stream's end reaches the client before its settling
            return (await post(s, b))[0] == 200

        await eventually_async(served)


@pytest.mark.parametrize("policy", ["fail_open", "fail_closed"])
async def test_redis_killed_during_load_follows_the_policy_and_recovers(
    policy: str, redis_server: RedisServer, provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    settings = plan(key={"requests_per_minute": 10_000}) | {
        "on_store_failure": policy, "retry_store_after": 0.2}
    gw = await make_gateway(abuse_config(provider.base_url, settings, store=redis_server.url,
                                         timeout=0.5, connect_timeout=0.5))
    seen: Counter[int] = Counter()
    async with aiohttp.ClientSession() as s:

        async def load(n: int) -> None:
            for _ in range(n):
                seen[(await post(s, gw))[0]] += 1

        loaders = [asyncio.create_task(load(40)) for _ in range(4)]
        await asyncio.sleep(0.05)
        redis_server.stop()
        await asyncio.gather(*loaders)
        down = await post(s, gw)
        assert metric(gw, "lunos_limits_store_degraded") == 1
        if policy == "fail_open":
            assert down[0] == 200
            assert set(seen) == {200}
        else:
            assert down[0] == 503 and down[1]["Retry-After"] == "1"
            assert set(seen) <= {200, 503} and seen[503] > 0
        redis_server.start()

        async def recovered() -> bool:
            return (await post(s, gw))[0] == 200 and metric(
                gw, "lunos_limits_store_degraded") == 0

        await eventually_async(recovered, timeout=10)


async def test_a_crashed_instances_concurrency_lease_expires(
    redis_url: str, provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}:"
    settings = plan(key={"concurrent": 1}) | {"concurrency_ttl": 3}
    gw = await make_gateway(abuse_config(provider.base_url, settings, store=redis_url,
                                         prefix=prefix, timeout=30, connect_timeout=30))
    crashed = RedisStore(redis_url, prefix=prefix)  # took a slot, then never gave it back
    await crashed.start()
    try:
        taken = await crashed.hit("acct:acct1", [], slots=[Slot("k:key1:conc", 1, ttl=3)],
                                  lease="lost")
    finally:
        await crashed.close()
    assert taken.allowed
    async with aiohttp.ClientSession() as s:
        assert (await post(s, gw))[0] == 429

        async def served() -> bool:
            return (await post(s, gw))[0] == 200

        await eventually_async(served, timeout=8)


async def test_failing_open_holds_each_instance_to_its_share_of_the_limit(
    redis_server: RedisServer, provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    settings = plan(key={"requests_per_minute": 10}) | {
        "on_store_failure": "fail_open", "local_share": 0.5}
    gw = await make_gateway(abuse_config(provider.base_url, settings, store=redis_server.url,
                                         timeout=0.5, connect_timeout=0.5))
    redis_server.stop()
    async with aiohttp.ClientSession() as s:
        answers = [await post(s, gw) for _ in range(7)]
    assert [a[0] for a in answers] == [200] * 5 + [429] * 2
    assert answers[0][1]["x-ratelimit-limit-requests"] == "5"


async def test_a_client_gone_during_the_limit_call_does_not_keep_its_slot(
    provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    server = RedisServer(["--enable-debug-command", "yes"]).start()
    try:
        gw = await make_gateway(abuse_config(provider.base_url, plan(key={"concurrent": 1}),
                                             store=server.url, timeout=5, connect_timeout=5))
        async with aiohttp.ClientSession() as s:
            assert (await post(s, gw))[0] == 200  # the lane is connected
            # Redis stalls: the next limit call waits, and its client gives up.
            stall = asyncio.get_running_loop().run_in_executor(
                None, server.command, "DEBUG", "SLEEP", "1")
            await asyncio.sleep(0.2)
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):
                    await post(s, gw)
            await stall
            # The script ran after the client left and took the lease; it was
            # given back right behind it, so the next request has the slot.
            assert (await post(s, gw))[0] == 200
    finally:
        server.remove()
