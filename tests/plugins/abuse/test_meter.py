"""Reservations settled from the real meter's usage (abuse → meter → core)."""

from __future__ import annotations

import aiohttp
import pytest

from lunos_proxy.store import Limit
from tests.conftest import GatewayFactory
from tests.fakes import COMPLETION_TOKENS, PROMPT_TOKENS, FakeProvider
from tests.plugins.abuse.fakes import abuse_fakes  # noqa: F401 - fixture
from tests.plugins.abuse.helpers import CHAT, abuse_config, eventually_async, plan

pytestmark = pytest.mark.usefixtures("abuse_fakes")

LIMIT = 1000  # per day: one token comes back every 86 s, so sums stay exact


@pytest.mark.parametrize("stream", [False, True])
async def test_the_meters_usage_settles_the_reservation(
    stream: bool, provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    cfg = abuse_config(provider.base_url, plan(key={"tokens_per_day": LIMIT}), meter=False)
    cfg["pipeline"].append({"name": "meter"})
    gw = await make_gateway(cfg)
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.v1 + "/chat/completions", json={**CHAT, "stream": stream},
                          headers={"Authorization": "Bearer acct1.key1"}) as r:
            assert r.status == 200
            reserved = LIMIT - int(r.headers["x-ratelimit-remaining-tokens"])
            await r.read()
    assert reserved > 100  # max_tokens and the prompt estimate
    look = Limit("k:key1:tpd", LIMIT, 86_400, cost=0)

    async def settled_to_usage() -> bool:  # a stream's last byte may reach us before settling
        verdict = await gw.gateway.store.hit("acct:acct1", [look])
        return verdict.states[0].remaining == LIMIT - PROMPT_TOKENS - COMPLETION_TOKENS

    await eventually_async(settled_to_usage)
