"""The keys page: list by prefix, create shown once, revoke, rotate; only one's own keys."""

from __future__ import annotations

import re
from typing import Any

import openai

from tests.auth_support import admin
from tests.conftest import GatewayFactory
from tests.console.support import Browser, console_config, new_account, new_key
from tests.fakes import FakeProvider

KEY = re.compile(r'<code id="new-key">(lk-[A-Za-z0-9_-]{43})</code>')


async def test_created_key_is_shown_once_and_works_with_the_sdk(
    provider: FakeProvider, make_gateway: GatewayFactory, browsers: Any
) -> None:
    gw = await make_gateway(console_config(provider.base_url))
    first = await new_key(gw, await new_account(gw))
    browser: Browser = browsers(gw)
    await browser.sign_in_with_key(first["key"])
    status, text = await browser.post("/console/keys", {"name": "laptop"})
    assert status == 201
    found = KEY.search(text)
    assert found is not None and 'data-copy="new-key"' in text
    key = found.group(1)
    status, listing = await browser.get("/console/keys")
    assert status == 200 and key not in listing and first["key"] not in listing
    assert f"<code>{key[:9]}…</code>" in listing and f"<code>{first['prefix']}…</code>" in listing
    client = openai.AsyncOpenAI(base_url=gw.v1, api_key=key, max_retries=0)
    reply = await client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content
    await client.close()


async def test_revoked_key_is_refused_by_the_api_and_rotation_issues_a_successor(
    provider: FakeProvider, make_gateway: GatewayFactory, browsers: Any
) -> None:
    gw = await make_gateway(console_config(provider.base_url))
    account = await new_account(gw)
    signin, doomed, old = [await new_key(gw, account, n) for n in ("signin", "doomed", "old")]
    browser: Browser = browsers(gw)
    await browser.sign_in_with_key(signin["key"])
    status, text = await browser.post(f"/console/keys/{doomed['id']}/revoke")
    assert status == 200 and re.search(rf'data-key-id="{doomed["id"]}">.*?<td>revoked</td>', text, re.S)
    client = openai.AsyncOpenAI(base_url=gw.v1, api_key=doomed["key"], max_retries=0)
    try:
        await client.models.list()
        raise AssertionError("a revoked key was accepted")
    except openai.AuthenticationError:
        pass
    await client.close()

    status, text = await browser.post(f"/console/keys/{old['id']}/rotate")
    assert status == 201 and "keeps working for 24 hours" in text
    successor = KEY.search(text)
    assert successor is not None
    keys = {k["id"]: k for k in (await admin(gw, "GET", f"/admin/accounts/{account}/keys"))[1]["keys"]}
    assert len(keys) == 4 and keys[old["id"]]["expires"] is not None
    [new] = [k for k in keys.values() if k["prefix"] == successor.group(1)[:9]]
    assert (new["name"], new["revoked"], new["expires"]) == ("old", False, None)


async def test_another_accounts_key_id_is_not_found_and_left_alone(
    provider: FakeProvider, make_gateway: GatewayFactory, browsers: Any
) -> None:
    gw = await make_gateway(console_config(provider.base_url))
    mine = await new_key(gw, await new_account(gw))
    victim_account = await new_account(gw, "Eve's target", "target@example.com")
    theirs = await new_key(gw, victim_account)
    browser: Browser = browsers(gw)
    await browser.sign_in_with_key(mine["key"])
    for action in ("revoke", "rotate"):
        status, text = await browser.post(f"/console/keys/{theirs['id']}/{action}")
        assert status == 404 and "No such key." in text
    status, text = await browser.post("/console/keys/key_does_not_exist/revoke")
    assert status == 404 and "No such key." in text
    _, listing = await browser.get("/console/keys")
    assert theirs["prefix"] not in listing
    [after] = (await admin(gw, "GET", f"/admin/accounts/{victim_account}/keys"))[1]["keys"]
    assert (after["revoked"], after["expires"]) == (False, None)
