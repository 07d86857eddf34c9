"""Ids in admin paths are checked against their formats before any use, the audit log included."""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import pytest

from lunos_proxy.admin import admin_app
from lunos_proxy.admin.auth import PATH_IDS
from lunos_proxy.config import ConfigError, parse_config
from lunos_proxy.keys import valid_id
from tests.auth_support import ADMIN_TOKEN, admin, auth_config, static_entry
from tests.conftest import GatewayFactory, Running
from tests.fakes import FakeProvider

# As sent on the wire (percent-encoded); what the router hands the handler is decoded.
HOSTILE = {
    "../../etc/passwd": "..%2F..%2Fetc%2Fpasswd",
    "acc_1\x00PATHCANARY": "acc_1%00PATHCANARY",
    "A" * 8000: "A" * 8000,
    "key_01 23": "key_01%2023",
    "tok_<script>": "tok_%3Cscript%3E",
}
EXPECTED = {
    "account_id": "the account_id in the path is not an account id: 1 to 64 letters, digits, "
                  "'_', '.' or '-'",
    "key_id": "the key_id in the path is not a key id: key_ and 16 hex digits",
    "token_id": "the token_id in the path is not an admin token id: tok_ and 16 hex digits",
    "address": "the address in the path is not an IPv4 or IPv6 address, or an IPv6 /64 network",
}


def _routes_with_ids(gw: Running) -> list[tuple[str, str, str]]:
    """(method, pattern, parameter) of every admin route with a path parameter."""
    found = []
    for route in admin_app(gw.gateway).router.routes():
        info = route.resource.get_info() if route.resource else {}
        pattern = str(info.get("formatter", ""))
        names = re.findall(r"\{(\w+)\}", pattern)
        if names and route.method != "HEAD":
            [name] = names
            found.append((route.method, pattern, name))
    return found


async def _call(gw: Running, method: str, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.request(
        method, gw.admin_url + path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, json={}
    ) as r:
        return r.status, await r.text()


async def test_malformed_ids_in_admin_paths_are_400_quoting_nothing_and_never_audited(
    provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(auth_config(provider.base_url))
    routes = _routes_with_ids(gw)
    # Accounts, bans, keys, data rights, usage and tokens are all covered.
    assert {p.split("/")[2] for _, p, _ in routes} == {"accounts", "bans", "keys", "tokens", "usage"}
    assert len(routes) >= 14
    for method, pattern, name in routes:
        for sent in HOSTILE.values():
            path = pattern.replace("{" + name + "}", sent)
            status, text = await _call(gw, method, path)
            assert status == 400, (method, pattern, sent[:40], status, text[:200])
            assert text == (
                '{"error":{"message":"' + EXPECTED[name] + '","status":400}}'
            ), (method, pattern, text[:200])
    entries = (await admin(gw, "GET", "/admin/audit?limit=10000"))[1]["entries"]
    assert len(entries) == len(routes) * len(HOSTILE)
    assert {(e["target"], e["account_id"], e["status"], e["result"]) for e in entries} == {
        ("", "", 400, "error")
    }


async def test_the_audit_filter_takes_only_an_account_id(
    provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(auth_config(provider.base_url))
    status, body = await admin(gw, "GET", "/admin/audit?account_id=..%2F..%2Fetc%2Fpasswd")
    assert (status, body["error"]["message"]) == (
        400, "the account_id parameter is not an account id: 1 to 64 letters, digits, '_', '.' "
        "or '-'")


async def test_well_formed_but_unknown_ids_are_404_and_audited_by_id(
    provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(auth_config(provider.base_url))
    assert (await admin(gw, "GET", "/admin/keys/key_0123456789abcdef"))[0] == 404
    assert (await admin(gw, "GET", "/admin/accounts/acc_0123456789abcdef"))[0] == 404
    # A static key's account (a name, not acc_...) is reachable in the usage API.
    assert (await admin(gw, "GET", "/admin/usage/static-acc"))[0] == 200
    entries = (await admin(gw, "GET", "/admin/audit"))[1]["entries"]
    assert [e["target"] for e in reversed(entries)] == [
        "key_0123456789abcdef", "acc_0123456789abcdef", "static-acc"]


async def test_an_unknown_admin_path_is_not_echoed(
    provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(auth_config(provider.base_url))
    status, body = await admin(gw, "GET", "/admin/PATHCANARY")
    assert (status, body) == (404, {"error": {"message": "not found", "status": 404}})


async def test_every_admin_path_parameter_has_a_format(
    provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(auth_config(provider.base_url))
    assert {name for _, _, name in _routes_with_ids(gw)} == set(PATH_IDS)
    assert valid_id("account", "acc_0123456789abcdef") and valid_id("account", "demo")
    assert not valid_id("account", "demo\n") and not valid_id("account", ".hidden")
    assert valid_id("key", "key_0123456789abcdef") and not valid_id("key", "static:lk-abc")


@pytest.mark.parametrize("account", ["../../etc/passwd", "a b", "x" * 65, "", "-lead"])
def test_a_static_key_account_must_have_the_account_id_form(provider: FakeProvider, account: str) -> None:
    import yaml

    cfg: dict[str, Any] = auth_config(provider.base_url, static=[static_entry(account=account)])
    with pytest.raises(ConfigError) as e:
        parse_config(yaml.safe_dump(cfg), "test.yaml")
    assert "static_keys[0].account" in str(e.value)
