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


def redirected_to(browser: Browser, path: str) -> bool:
    """The last POST answered 303 to `path` (and the page shown is its GET)."""
    last = browser.last
    return (last is not None and [r.status for r in last.history] == [303]
            and last.url.path == path and last.method == "GET")


async def test_created_key_is_shown_once_and_works_with_the_sdk(
    provider: FakeProvider, make_gateway: GatewayFactory, browsers: Any
) -> None:
    gw = await make_gateway(console_config(provider.base_url))
    first = await new_key(gw, await new_account(gw))
    browser: Browser = browsers(gw)
    await browser.sign_in_with_key(first["key"])
    status, text = await browser.post("/console/keys", {"name": "laptop"})
    assert status == 200 and redirected_to(browser, "/console/keys")  # Post/Redirect/Get
    found = KEY.search(text)
    assert found is not None and 'data-copy="new-key"' in text
    key = found.group(1)
    assert f'-H "Authorization: Bearer {key}"' in text  # a first request to copy
    status, listing = await browser.get("/console/keys")  # a reload: shown once, made once
    assert status == 200 and key not in listing and first["key"] not in listing
    assert len(re.findall(r"<tr data-key-id=", listing)) == 2
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
    status, text = await browser.get(f"/console/keys/confirm?action=revoke&key={doomed['id']}")
    assert status == 200 and f"<h1>Revoke doomed ({doomed['prefix']}…)?</h1>" in text
    assert "Every server refuses this key within a second" in text
    assert (await admin(gw, "GET", f"/admin/keys/{doomed['id']}"))[1]["revoked"] is False
    status, text = await browser.post(f"/console/keys/{doomed['id']}/revoke")
    assert status == 200 and redirected_to(browser, "/console/keys")
    assert f'<p class="notice" role="status" id="flash">Revoked doomed ({doomed["prefix"]}…): it is refused on every server now.</p>' in text
    assert re.search(rf'data-key-id="{doomed["id"]}">.*?class="state-revoked">revoked</td>', text, re.S)
    assert f"Revoke<span class=\"visually-hidden\"> doomed ({doomed['prefix']}…)" not in text
    status, text = await browser.get("/console/keys")  # a reload repeats nothing, says nothing
    assert status == 200 and 'id="flash"' not in text
    client = openai.AsyncOpenAI(base_url=gw.v1, api_key=doomed["key"], max_retries=0)
    try:
        await client.models.list()
        raise AssertionError("a revoked key was accepted")
    except openai.AuthenticationError:
        pass
    await client.close()

    status, text = await browser.get(f"/console/keys/confirm?action=rotate&key={old['id']}")
    assert status == 200 and "The old key keeps working until <strong>" in text and "(24 hours)" in text
    status, text = await browser.post(f"/console/keys/{old['id']}/rotate")
    assert status == 200 and redirected_to(browser, "/console/keys")
    assert f"the successor of {old['prefix']}…; the old key keeps working until " in text
    successor = KEY.search(text)
    assert successor is not None
    keys = {k["id"]: k for k in (await admin(gw, "GET", f"/admin/accounts/{account}/keys"))[1]["keys"]}
    assert len(keys) == 4 and keys[old["id"]]["expires"] is not None
    assert keys[old["id"]]["name"] == "old (rotated)"
    [new] = [k for k in keys.values() if k["prefix"] == successor.group(1)[:9]]
    assert (new["name"], new["revoked"], new["expires"]) == ("old", False, None)
    # Each row's buttons name their key; the retiring key offers no second rotation.
    _, listing = await browser.get("/console/keys")
    new_label = f"old ({new['prefix']}…)"
    assert f'Rotate<span class="visually-hidden"> {new_label}</span>' in listing
    assert f'Revoke<span class="visually-hidden"> {new_label}</span>' in listing
    old_label = f"old (rotated) ({old['prefix']}…)"
    assert f'Revoke<span class="visually-hidden"> {old_label}</span>' in listing
    assert f'Rotate<span class="visually-hidden"> {old_label}</span>' not in listing
    status, text = await browser.post(f"/console/keys/{old['id']}/rotate")  # a resubmission
    assert status == 200 and "cannot be rotated any more" in text
    assert len((await admin(gw, "GET", f"/admin/accounts/{account}/keys"))[1]["keys"]) == 4


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
        status, text = await browser.get(f"/console/keys/confirm?action={action}&key={theirs['id']}")
        assert status == 404 and "No such key." in text
    status, text = await browser.post("/console/keys/key_does_not_exist/revoke")
    assert status == 404 and "No such key." in text
    _, listing = await browser.get("/console/keys")
    assert theirs["prefix"] not in listing
    [after] = (await admin(gw, "GET", f"/admin/accounts/{victim_account}/keys"))[1]["keys"]
    assert (after["revoked"], after["expires"]) == (False, None)
