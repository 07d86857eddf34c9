"""The ban lever: list bans, lift one on every instance, from the API and the CLI."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from typing import Any

import aiohttp

from tests.auth_support import STATIC_KEY, auth_config
from tests.conftest import ADMIN_HEADERS, ADMIN_TOKEN, GatewayFactory, Running
from tests.fakes import FakeProvider
from tests.limits.helpers import post

BAD_KEY = "lk-wrong-0123456789"
FAILURES = {"auth_failures": {"limit": 2, "window": 300, "ban_seconds": 30}}


def with_abuse(provider_url: str, settings: dict[str, Any], **extra: Any) -> dict[str, Any]:
    cfg = auth_config(provider_url, **extra)
    cfg["pipeline"] = [*cfg["pipeline"], {"name": "abuse", "settings": settings}]
    return cfg


async def admin(s: aiohttp.ClientSession, gw: Running, method: str, path: str,
                token: str = ADMIN_TOKEN) -> tuple[int, Any]:
    async with s.request(method, gw.admin_url + path,
                         headers={"Authorization": f"Bearer {token}"}) as r:
        return r.status, await r.json()


async def status_of(s: aiohttp.ClientSession, gw: Running, key: str, **headers: str) -> int:
    return (await post(s, gw, key=key, **headers))[0]


async def test_a_lifted_ban_is_served_again_on_every_instance_within_a_second(
    redis_url: str, provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    cfg = with_abuse(provider.base_url, FAILURES, store_url=redis_url,
                     store_options={"prefix": f"t{uuid.uuid4().hex[:10]}:", "timeout": 30})
    a, b = await make_gateway(cfg), await make_gateway(cfg)
    async with aiohttp.ClientSession() as s:
        # A mistyped key in a CI job bans the shared address on instance a...
        assert [await status_of(s, a, BAD_KEY) for _ in range(3)] == [401, 401, 429]
        # ...and b, having heard it, refuses the valid key from it too.
        deadline = time.monotonic() + 5
        while await status_of(s, b, STATIC_KEY) != 429:
            assert time.monotonic() < deadline, "b never heard of the ban"
            await asyncio.sleep(0.02)

        status, listed = await admin(s, b, "GET", "/admin/bans")
        assert status == 200
        [ban] = listed["bans"]
        assert set(ban) == {"address", "reason", "expires", "seconds_left"}
        assert (ban["address"], ban["reason"]) == ("127.0.0.1", "auth_failures")
        assert 25 < ban["seconds_left"] <= 30
        assert abs(ban["expires"] - (time.time() + ban["seconds_left"])) < 2

        status, body = await admin(s, a, "DELETE", "/admin/bans/127.0.0.1")
        assert (status, body) == (200, {"address": "127.0.0.1", "lifted": True})
        lifted = time.monotonic()
        while await status_of(s, b, STATIC_KEY) != 200:
            assert time.monotonic() - lifted < 1.0, "b still refuses the address"
            await asyncio.sleep(0.01)
        assert await status_of(s, a, STATIC_KEY) == 200
        assert (await admin(s, b, "GET", "/admin/bans")) == (200, {"bans": []})
        # The failure count went with the ban: one more mistyped key is a 401, not a ban.
        assert await status_of(s, a, BAD_KEY) == 401
        assert await status_of(s, b, STATIC_KEY) == 200
        # Lifting again finds nothing in force.
        assert (await admin(s, a, "DELETE", "/admin/bans/127.0.0.1"))[0] == 404
        status, audit = await admin(s, a, "GET", "/admin/audit")
    lifts = [r for r in audit["entries"] if r["action"] == "bans.lift"]
    assert [(r["target"], r["status"]) for r in lifts] == [("127.0.0.1", 404), ("127.0.0.1", 200)]


async def test_lifting_checks_the_address_strictly_and_needs_the_operator_scope(
    provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(with_abuse(provider.base_url, FAILURES))
    async with aiohttp.ClientSession() as s:
        for bad in ("not-an-address", "10.0.0.1/32", "2001:db8::/48", "2001:db8::1%25eth0",
                    "1.2.3.4.5", "%20127.0.0.1", "<b>1.2.3.4</b>"):
            status, body = await admin(s, gw, "DELETE", f"/admin/bans/{bad}")
            assert status == 400, bad
            assert body["error"]["message"] == (
                "the address in the path is not an IPv4 or IPv6 address, or an IPv6 /64 network")
        async with s.post(gw.admin_url + "/admin/tokens", json={"name": "ro", "scope": "read"},
                          headers=ADMIN_HEADERS) as r:
            read_token = (await r.json())["token"]
        assert (await admin(s, gw, "GET", "/admin/bans", read_token))[0] == 200
        status, _ = await admin(s, gw, "DELETE", "/admin/bans/127.0.0.1", read_token)
        assert status == 403


def cli(gw: Running, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lunos_proxy", *args, "--admin-url", gw.admin_url,
         "--token", ADMIN_TOKEN],
        capture_output=True, text=True, timeout=60,
    )


async def test_cli_lists_and_lifts_an_ipv6_clients_ban_by_its_64(
    provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    settings = {**FAILURES, "addresses": {"trusted_proxies": ["127.0.0.1"]}}
    gw = await make_gateway(with_abuse(provider.base_url, settings))
    client = {"X-Forwarded-For": "2001:db8:1:2::7"}
    async with aiohttp.ClientSession() as s:
        assert [await status_of(s, gw, BAD_KEY, **client) for _ in range(3)] == [401, 401, 429]
        listed = await asyncio.to_thread(cli, gw, "bans", "list")
        assert listed.returncode == 0, listed.stderr
        assert '"address": "2001:db8:1:2::/64"' in listed.stdout
        lifted = await asyncio.to_thread(cli, gw, "bans", "lift", "2001:db8:1:2::/64")
        assert lifted.returncode == 0, lifted.stderr
        assert '"lifted": true' in lifted.stdout
        assert await status_of(s, gw, STATIC_KEY, **client) == 200
        # Any address of the /64 names the same ban; a refused lift exits 1.
        assert [await status_of(s, gw, BAD_KEY, **client) for _ in range(3)] == [401, 401, 429]
        again = await asyncio.to_thread(cli, gw, "bans", "lift", "2001:db8:1:2::ffff")
        assert again.returncode == 0, again.stderr
        missing = await asyncio.to_thread(cli, gw, "bans", "lift", "2001:db8:1:2::ffff")
    assert missing.returncode == 1 and ": 404: " in missing.stderr
