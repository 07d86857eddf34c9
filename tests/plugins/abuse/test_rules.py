"""The abuse plugin's other rules: sizes, address lists, trusted proxies, anomalies."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict

from tests.conftest import GatewayFactory
from tests.fakes import FakeProvider
from tests.plugins.abuse.fakes import abuse_fakes  # noqa: F401 - fixture
from tests.plugins.abuse.helpers import CHAT, abuse_config, metric, post, refusals

pytestmark = pytest.mark.usefixtures("abuse_fakes")


@pytest.mark.parametrize(
    ("sizes", "body", "headers", "status", "code"),
    [
        ({"max_headers": 10}, CHAT, {f"x-extra-{i}": "1" for i in range(10)}, 400, "too_many_headers"),
        ({"max_header_bytes": 1000}, CHAT, {"x-big": "a" * 1000}, 400, "headers_too_large"),
        ({"max_body_bytes": 100}, {**CHAT, "user": "u" * 100}, {}, 413, "request_too_large"),
        ({"max_messages": 2}, {**CHAT, "messages": [{"role": "user", "content": "x"}] * 3}, {},
         400, "too_many_messages"),
    ],
)
async def test_size_limits_refuse_before_forwarding(
    sizes: dict[str, Any], body: dict[str, Any], headers: dict[str, str], status: int, code: str,
    provider: FakeProvider, make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(abuse_config(provider.base_url, {"sizes": sizes}))
    shadow = await make_gateway(abuse_config(provider.base_url, {"sizes": {**sizes, "shadow": True}}))
    async with aiohttp.ClientSession() as s:
        refused = await post(s, gw, body=body, **headers)
        passed = await post(s, shadow, body=body, **headers)
        fine = await post(s, gw)
    assert (refused[0], refused[2]["error"]["code"]) == (status, code)
    assert passed[0] == 200 and fine[0] == 200
    assert refusals(gw, "size") == 1
    assert refusals(shadow, "size", "shadow") == 1
    assert len(provider.received) == 2


@pytest.mark.parametrize(
    ("rules", "status"),
    [
        ({"deny": ["127.0.0.0/8"]}, 403),
        ({"allow": ["10.0.0.0/8", "2001:db8::/32"]}, 403),
        ({"allow": ["127.0.0.1/32"], "deny": ["192.0.2.0/24"]}, 200),
        ({"deny": ["127.0.0.0/8"], "shadow": True}, 200),
    ],
)
async def test_allow_and_deny_lists(
    rules: dict[str, Any], status: int, provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(abuse_config(provider.base_url, {"addresses": rules}))
    async with aiohttp.ClientSession() as s:
        answer = await post(s, gw)
    assert answer[0] == status
    if status == 403:
        assert answer[2]["error"]["code"] == "address_denied"
    assert refusals(gw, "address", "shadow" if rules.get("shadow") else "enforced") == (
        0 if status == 200 and not rules.get("shadow") else 1)


async def test_forwarded_for_is_believed_only_from_trusted_proxies(
    provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    limits = {"address": {"requests_per_minute": 1}}
    trusting = await make_gateway(abuse_config(
        provider.base_url, limits | {"addresses": {"trusted_proxies": ["127.0.0.1"]}}))
    default = await make_gateway(abuse_config(provider.base_url, limits))
    async with aiohttp.ClientSession() as s:

        async def status(gw: Any, xff: str) -> int:
            return (await post(s, gw, key="anon", **{"X-Forwarded-For": xff}))[0]

        assert [await status(trusting, ip) for ip in ("203.0.113.1", "203.0.113.2")] == [200, 200]
        # the client's own claim comes first; the proxy appended what it saw
        assert await status(trusting, "198.51.100.7, 203.0.113.1") == 429
        # ... or added a line of its own after the client's (HAProxy does)
        lines = CIMultiDict([("Authorization", "Bearer anon"), ("X-Forwarded-For", "198.51.100.9"),
                             ("X-Forwarded-For", "203.0.113.1")])
        async with s.post(trusting.v1 + "/chat/completions", json=CHAT, headers=lines) as r:
            assert r.status == 429  # 203.0.113.1 again, not the forged 198.51.100.9
        assert [await status(default, ip) for ip in ("203.0.113.1", "203.0.113.2")] == [200, 429]


async def test_an_account_far_above_its_baseline_is_flagged_and_held_to_its_safe_rate(
    provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    settings = {
        "plans": {"basic": {"safe_tokens_per_minute": 1}},
        "default_plan": "basic",
        "anomaly": {"factor": 1, "min_tokens_per_minute": 30, "warmup_minutes": 0,
                    "throttle": True},
    }
    gw = await make_gateway(abuse_config(provider.base_url, settings))
    async with aiohttp.ClientSession() as s:
        statuses = [(await post(s, gw))[0] for _ in range(2)]  # 17 tokens each: flagged at 34
        held = await post(s, gw)
        other = await post(s, gw, key="acct2.key1")
    assert statuses == [200, 200]
    assert metric(gw, "lunos_abuse_anomalies_total") == 1
    assert held[0] == 429 and held[2]["error"]["message"].startswith("Token rate held")
    assert other[0] == 200
