"""The abuse plugin behind the real auth plugin: real keys, plans from the store."""

from __future__ import annotations

import aiohttp
import openai

from tests.auth_support import STATIC_KEY, auth_config, put_key
from tests.conftest import GatewayFactory, shipped_config
from tests.fakes import FakeProvider
from tests.limits.helpers import post


def with_abuse(provider_url: str, settings: dict[str, object]) -> dict[str, object]:
    cfg = auth_config(provider_url)
    cfg["pipeline"] = [*cfg["pipeline"], {"name": "abuse", "settings": settings}]
    return cfg


async def test_a_key_plan_overrides_its_account_plan(
    provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    settings = {"plans": {"free": {"key": {"requests_per_minute": 1}},
                          "pro": {"key": {"requests_per_minute": 3}}}}
    gw = await make_gateway(with_abuse(provider.base_url, settings))
    store = gw.gateway.store
    free_key, _ = await put_key(store)  # the account's plan: free
    pro_key, _ = await put_key(store, plan="pro")
    async with aiohttp.ClientSession() as s:
        free = [(await post(s, gw, key=free_key))[0] for _ in range(2)]
        pro = [(await post(s, gw, key=pro_key))[0] for _ in range(4)]
    assert free == [200, 429]
    assert pro == [200, 200, 200, 429]


async def test_repeated_bad_keys_ban_the_address_even_for_a_good_key(
    provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    settings = {"auth_failures": {"limit": 2, "window": 300, "ban_seconds": 30}}
    gw = await make_gateway(with_abuse(provider.base_url, settings))
    async with aiohttp.ClientSession() as s:
        bad = [(await post(s, gw, key="lk-wrong-0123456789"))[0] for _ in range(3)]
        good = await post(s, gw, key=STATIC_KEY)
    assert bad == [401, 401, 429]
    assert good[0] == 429 and 25 <= int(good[1]["Retry-After"]) <= 30  # what is left of the ban
    assert provider.received == []


async def test_an_ipv6_client_is_banned_by_its_64_not_each_address(
    provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    settings = {"auth_failures": {"limit": 2, "window": 300, "ban_seconds": 30},
                "addresses": {"trusted_proxies": ["127.0.0.1"]}}
    gw = await make_gateway(with_abuse(provider.base_url, settings))

    async def status(s: aiohttp.ClientSession, address: str, key: str) -> int:
        return (await post(s, gw, key=key, **{"X-Forwarded-For": address}))[0]

    async with aiohttp.ClientSession() as s:
        # A new address of the same /64 for each bad key: one client rotating.
        bad = [await status(s, f"2001:db8:1:2::{i}", "lk-wrong-0123456789") for i in (1, 2, 3)]
        same_64 = await status(s, "2001:db8:1:2:ffff::9", STATIC_KEY)
        other_64 = await status(s, "2001:db8:1:3::1", STATIC_KEY)
    assert bad == [401, 401, 429]
    assert (same_64, other_64) == (429, 200)


def test_address_subjects() -> None:
    from lunos_proxy.limits.addresses import subject

    assert [subject(a) for a in ("203.0.113.5", "2001:db8:1:2:3:4:5:6", "::ffff:203.0.113.5",
                                 "fe80::1%eth0", "not-an-address")] == [
        "203.0.113.5", "2001:db8:1:2::/64", "203.0.113.5", "fe80::/64", "not-an-address"]


async def test_openai_sdk_sees_rate_limit_headers_with_a_real_key(
    provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    settings = {"plans": {"std": {"account": {"requests_per_minute": 5,
                                              "tokens_per_minute": 5000}}},
                "default_plan": "std"}
    gw = await make_gateway(with_abuse(provider.base_url, settings))
    async with openai.AsyncOpenAI(base_url=gw.v1, api_key=STATIC_KEY, max_retries=0) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-test", max_tokens=50, messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-ratelimit-limit-requests"] == "5"
    assert raw.headers["x-ratelimit-remaining-requests"] == "4"
    assert raw.headers["x-ratelimit-limit-tokens"] == "5000"
    assert int(raw.headers["x-ratelimit-remaining-tokens"]) < 5000 - 50


async def test_the_shipped_config_limits_the_demo_key(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(shipped_config())
    demo_key = "lk-6btyxEq06JC8MobCcJ1UovhbLZcHGE1yVhtZfe_HgmY"  # the README's
    body = {"model": "demo-chat", "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as s:
        answer = await post(s, gw, key=demo_key, body=body)
    assert answer[0] == 200
    assert answer[1]["x-ratelimit-limit-requests"] == "600"
    assert answer[1]["x-ratelimit-remaining-requests"] == "599"
