"""Admin tokens and scopes: every /admin/ route is closed by default, every call is audited."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from aiohttp import web

from tests.auth_support import ADMIN_TOKEN, admin, auth_config
from tests.conftest import GatewayFactory, Running, start_site
from tests.fakes import FakeProvider
from tests.logcapture import Captured


async def test_calls_without_a_valid_token_are_401_and_not_audited(provider: FakeProvider, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(auth_config(provider.base_url))
    assert (await admin(gw, "GET", "/admin/accounts", token=""))[0] == 401
    status, body = await admin(gw, "GET", "/admin/accounts", token="lat-wrong")
    assert (status, body["error"]["status"]) == (401, 401)
    assert await gw.gateway.store.audit() == []


async def test_a_refused_admin_call_is_logged_by_its_route_never_the_clients_path(
    provider: FakeProvider, make_gateway: GatewayFactory, captured_logs: Captured
) -> None:
    gw = await make_gateway(auth_config(provider.base_url))
    assert (await admin(gw, "GET", "/admin/accounts/PROMPT-TEXT-CANARY", token=""))[0] == 401
    assert (await admin(gw, "GET", "/admin/PROMPT-TEXT-CANARY/x", token=""))[0] == 401
    refused = [line for line in captured_logs.lines() if line["event"] == "admin_unauthenticated"]
    assert [line["route"] for line in refused] == ["GET /admin/accounts/{account_id}", "GET (no route)"]
    assert "CANARY" not in captured_logs.text


async def test_scopes_are_ordered_read_operator_full_and_each_call_is_audited(
    provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(auth_config(provider.base_url))
    tokens = {}
    for scope in ("read", "operator"):
        status, made = await admin(gw, "POST", "/admin/tokens", {"name": f"{scope} bot", "scope": scope})
        assert status == 201 and made["token"].startswith("lat-") and made["prefix"] == made["token"][:10]
        tokens[scope] = made
    read, op = tokens["read"]["token"], tokens["operator"]["token"]

    assert (await admin(gw, "GET", "/admin/accounts", token=read))[0] == 200
    status, body = await admin(gw, "POST", "/admin/accounts", {"name": "A"}, token=read)
    assert (status, body["error"]["message"]) == (403, "this call needs the 'operator' scope; the token has 'read'")
    status, account = await admin(gw, "POST", "/admin/accounts", {"name": "A"}, token=op)
    assert status == 201
    assert (await admin(gw, "DELETE", f"/admin/accounts/{account['id']}", token=op))[0] == 403
    assert (await admin(gw, "GET", "/admin/tokens", token=op))[0] == 403
    assert (await admin(gw, "DELETE", f"/admin/accounts/{account['id']}"))[0] == 200

    entries = (await admin(gw, "GET", "/admin/audit", token=read))[1]["entries"]
    got = [(e["actor"], e["action"], e["target"], e["account_id"], e["status"], e["result"]) for e in reversed(entries)]
    read_id, op_id = tokens["read"]["id"], tokens["operator"]["id"]
    # Entries about the account made before its deletion now name its pseudonym.
    anon = got[4][2]
    assert anon.startswith("anon_")
    assert got == [
        ("config", "tokens.create", read_id, "", 201, "ok"),
        ("config", "tokens.create", op_id, "", 201, "ok"),
        (read_id, "accounts.list", "", "", 200, "ok"),
        (read_id, "accounts.create", "", "", 403, "denied"),
        (op_id, "accounts.create", anon, anon, 201, "ok"),
        (op_id, "accounts.delete", anon, anon, 403, "denied"),
        (op_id, "tokens.list", "", "", 403, "denied"),
        ("config", "accounts.delete", account["id"], account["id"], 200, "ok"),
    ]
    # Content-free: no token, name or body anywhere in the log.
    assert read not in str(entries) and op not in str(entries) and ADMIN_TOKEN not in str(entries)


async def test_a_revoked_admin_token_is_refused_at_once(provider: FakeProvider, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(auth_config(provider.base_url))
    made = (await admin(gw, "POST", "/admin/tokens", {"name": "tmp", "scope": "full"}))[1]
    assert (await admin(gw, "GET", "/admin/tokens", token=made["token"]))[0] == 200
    assert (await admin(gw, "DELETE", f"/admin/tokens/{made['id']}"))[0] == 200
    assert (await admin(gw, "GET", "/admin/tokens", token=made["token"]))[0] == 401
    listed = (await admin(gw, "GET", "/admin/tokens"))[1]["tokens"]
    assert listed == []


async def test_a_route_that_declares_no_scope_is_closed_even_to_full_tokens(
    provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(auth_config(provider.base_url))
    app = gw.gateway.admin_app()

    async def undeclared(request: web.Request) -> web.Response:
        return web.json_response({"secret": "data"})

    app.router.add_get("/admin/undeclared", undeclared)
    runner = web.AppRunner(app)
    await runner.setup()
    port = await start_site(runner)
    try:
        other = Running(gw.gateway, gw.url, f"http://127.0.0.1:{port}")
        status, body = await admin(other, "GET", "/admin/undeclared")
        assert (status, body["error"]["message"]) == (403, "this admin route declares no scope, so it is closed")
        assert (await admin(other, "GET", "/admin/undeclared", token=""))[0] == 401
    finally:
        await runner.cleanup()


async def test_token_file_is_created_private_on_first_start_and_reused(
    provider: FakeProvider, make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    path = tmp_path / "data" / "admin-token"
    config = auth_config(provider.base_url, admin={"token_file": str(path)})
    first = await make_gateway(config)
    token = path.read_text().strip()
    assert token.startswith("lat-") and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    second = await make_gateway(config)
    assert path.read_text().strip() == token
    for gw in (first, second):
        assert (await admin(gw, "GET", "/admin/accounts", token=token))[0] == 200
    assert (await admin(first, "GET", "/admin/accounts"))[0] == 401  # no env token configured here


async def test_metrics_stay_open_and_unknown_admin_paths_need_a_token(provider: FakeProvider, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(auth_config(provider.base_url))
    import aiohttp

    async with aiohttp.ClientSession() as s, s.get(gw.admin_url + "/metrics") as r:
        assert r.status == 200
    assert (await admin(gw, "GET", "/admin/nothing-here", token=""))[0] == 401
    assert (await admin(gw, "GET", "/admin/nothing-here"))[0] == 404
