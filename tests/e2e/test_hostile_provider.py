"""A provider's Retry-After is a number the gateway reads, not text it
passes on: whatever a broken or hostile provider sends (infinite, NaN,
astronomically large, not a number), the client gets the provider's 429 in
its SDK's shape with a `Retry-After` of whole seconds no longer than the
router's `max_cooldown_seconds`, or none."""

from __future__ import annotations

import aiohttp
import pytest

from tests.conftest import GatewayFactory, basic_config
from tests.fakes import FakeProvider

CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("sent, passed_on", [
    ("inf", "300"), ("1e308", "300"), ("86400", "300"), ("nan", None), ("-5", None),
    ("Wed, 21 Oct 2015 07:28:00 GMT", None), ("7", "7"), ("0.2", "1"),
])
async def test_a_providers_retry_after_is_passed_on_as_bounded_whole_seconds(
    provider: FakeProvider, make_gateway: GatewayFactory, sent: str, passed_on: str | None
) -> None:
    gw = await make_gateway(basic_config(provider.base_url, pipeline=[
        {"name": "request_id"},
        {"name": "router", "settings": {"max_attempts": 1, "max_cooldown_seconds": 300}},
    ]))
    provider.behaviour.status = 429
    provider.behaviour.headers = {"Retry-After": sent}
    async with aiohttp.ClientSession() as s, s.post(gw.v1 + "/chat/completions", json=CHAT) as r:
        body = await r.json()
        assert r.status == 429, body
        assert body["error"]["type"] and "message" in body["error"]
        assert r.headers.get("Retry-After") == passed_on
