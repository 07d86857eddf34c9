"""The privacy pages: data kept (from the running config), correct, export, delete."""

from __future__ import annotations

import json
import re
from typing import Any

import aiohttp

from lunos_proxy.store.base import BillingRecord, SpendDelta, UsageDelta
from tests.auth_support import admin
from tests.conftest import GatewayFactory
from tests.console.support import (
    Browser,
    Mailbox,
    console_config,
    mail_config,
    new_account,
    new_key,
    signed_in,
)
from tests.fakes import FakeProvider


async def test_data_kept_page_is_derived_from_the_running_config(
    provider: FakeProvider, make_gateway: GatewayFactory, browsers: Any
) -> None:
    config = console_config(provider.base_url, console={"idle_timeout_seconds": 900})
    config["pipeline"].insert(1, {"name": "logger", "settings": {"address": "dropped"}})
    config["models"]["gpt-test"]["deployments"][0]["region"] = "eu-west"
    gw = await make_gateway(config)
    _, _made, browser = await signed_in(gw, browsers)
    status, text = await browser.get("/console/privacy")
    assert status == 200
    kept = re.search(r'<dl id="data-kept">(.*?)</dl>', text, re.S)
    assert kept is not None
    kept_text = kept.group(1)
    assert "your IP address is not written at all" in kept_text
    assert "in the regions eu-west" in kept_text and "the memory store" in kept_text
    assert "usage events and billing records in a SQLite database" in kept_text
    assert "ending 15 minutes after your last visit" in kept_text
    assert "no analytics" in text


async def test_name_is_saved_and_a_new_email_only_once_its_link_is_opened(
    provider: FakeProvider, make_gateway: GatewayFactory, browsers: Any, mailbox: Mailbox
) -> None:
    gw = await make_gateway(mail_config(provider.base_url, mailbox))
    account, _made, browser = await signed_in(gw, browsers)
    status, text = await browser.post("/console/privacy/profile", {"name": "Ada King", "email": "ada@king.example"})
    assert status == 200 and 'value="Ada King"' in text
    assert ('id="flash">We sent a confirmation link to ada@king.example. Your email changes when you open it; '
            "until then it stays ada@example.com.</p>") in text
    shown = (await admin(gw, "GET", f"/admin/accounts/{account}"))[1]
    assert (shown["name"], shown["email"]) == ("Ada King", "ada@example.com")  # a typo locks nobody out
    [message] = await mailbox.received()
    assert message["to"] == "ada@king.example" and message["code"] == ""
    assert "ada@king.example" not in message["link"]  # sealed in the token
    path = message["link"].removeprefix("https://console.example.test")
    other: Browser = browsers(gw)  # the new address's mail client: not signed in
    status, text = await other.get(path)
    assert status == 200 and "Make <strong>ada@king.example</strong> the email" in text
    assert (await admin(gw, "GET", f"/admin/accounts/{account}"))[1]["email"] == "ada@example.com"
    token = re.search(r'name="t" value="([^"]+)"', text)
    assert token is not None
    async with other.http.post(other.base + "/console/privacy/email", allow_redirects=False,
                               data={"t": token.group(1), "csrf": other.csrf}) as r:
        assert (r.status, r.headers["Location"]) == (303, "/console/privacy/email/changed")
    status, text = await other.get("/console/privacy/email/changed")  # and again on a reload
    assert status == 200 and "Your account's email is now ada@king.example." in text
    status, text = await browsers(gw).get("/console/privacy/email/changed")  # nothing confirmed there
    assert "<h1>Sign in</h1>" in text
    assert (await admin(gw, "GET", f"/admin/accounts/{account}"))[1]["email"] == "ada@king.example"
    status, text = await other.post("/console/privacy/email", {"t": token.group(1)})
    assert status == 400 and "invalid, used or expired" in text
    forged = token.group(1)[:-4] + "AAAA"
    assert (await other.get(f"/console/privacy/email?t={forged}"))[0] == 400

    # Errors are shown next to their field, and what was typed stays.
    await new_account(gw, "Other", "taken@example.com")
    status, text = await browser.post("/console/privacy/profile", {"name": "Ada", "email": "taken@example.com"})
    assert status == 400 and '<span class="error" id="email-error">Another account already has this email.</span>' in text
    assert 'id="profile-email" value="taken@example.com"' in text and 'id="profile-name" value="Ada"' in text
    status, text = await browser.post("/console/privacy/profile", {"name": "Ada", "email": "not an email"})
    assert status == 400 and 'value="not an email"' in text and 'aria-invalid="true"' in text
    assert len(mailbox.messages) == 1
    assert (await admin(gw, "GET", f"/admin/accounts/{account}"))[1]["name"] == "Ada King"


async def test_what_we_keep_is_readable_signed_out_and_links_say_which_account(
    provider: FakeProvider, make_gateway: GatewayFactory, browsers: Any, mailbox: Mailbox
) -> None:
    gw = await make_gateway(mail_config(provider.base_url, mailbox))
    await new_account(gw)
    browser: Browser = browsers(gw)
    status, text = await browser.get("/console/sign-in")
    assert '<a href="/console/what-we-keep">What we keep</a>' in text
    status, text = await browser.get("/console/what-we-keep")
    assert status == 200 and '<dl id="data-kept">' in text and "Prompts and completions" in text
    await browser.post("/console/sign-in/email", {"email": "ada@example.com"})
    [message] = await mailbox.received()
    status, text = await browser.get(message["link"].removeprefix("https://console.example.test"))
    assert status == 200 and "signing in to the account of <strong>ada@example.com</strong>" in text


async def test_export_downloads_everything_kept_about_the_account(
    provider: FakeProvider, make_gateway: GatewayFactory, browsers: Any
) -> None:
    gw = await make_gateway(console_config(provider.base_url))
    account = await new_account(gw)
    made = await new_key(gw, account)
    await gw.gateway.store.add_usage([UsageDelta(account_id=account, key_id=made["id"], model="gpt-test", day="2026-11-01", input_tokens=5)])
    browser: Browser = browsers(gw)
    await browser.sign_in_with_key(made["key"])
    async with browser.http.get(gw.url + "/console/privacy/export") as r:
        assert r.status == 200
        assert r.headers["Content-Disposition"].startswith('attachment; filename="lunos-export-')
        raw = await r.read()
        document = json.loads(raw)
    assert document["account"]["email"] == "ada@example.com"
    assert [k["id"] for k in document["keys"]] == [made["id"]]
    assert "hash" not in document["keys"][0] and made["key"] not in json.dumps(document)
    assert [u["input_tokens"] for u in document["usage"]] == [5]
    assert raw.startswith(b'{\n  "') and raw.endswith(b"}\n")  # indented, for a person
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", document["keys"][0]["created"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", document["exported_at"])


async def test_deletion_needs_the_typed_confirmation_then_erases_keeps_billing_and_signs_out(
    provider: FakeProvider, make_gateway: GatewayFactory, browsers: Any
) -> None:
    gw = await make_gateway(console_config(provider.base_url))
    account = await new_account(gw)
    made = await new_key(gw, account)
    store = gw.gateway.store
    records = gw.gateway.records
    await records.add("b1", [], [BillingRecord(id="bill_1", account_id=account, period="2026-11", model="gpt-test",
                                               requests=1, input_tokens=1, output_tokens=1, cost_micros=10, created=1.0)])
    await store.add_spend([SpendDelta(subject=f"account:{account}", period="credit", micros=10)])
    browser: Browser = browsers(gw)
    await browser.sign_in_with_key(made["key"])
    status, text = await browser.get("/console/privacy/delete")
    assert status == 200 and "Your 1 API key: it stops working on every server immediately" in text and "Billing records (1)" in text
    status, text = await browser.post("/console/privacy/delete", {"confirm": "yes"})
    assert status == 400 and "delete my account" in text
    assert await store.account(account) is not None
    status, text = await browser.post("/console/privacy/delete", {"confirm": "Delete my account"})
    assert status == 200 and "Your account is deleted" in text and "Kept: billing records (1)" in text
    assert "and 1 spend counter." in text
    assert (await browser.get("/console/deleted")) == (status, text)  # a reload: the same page
    assert await store.account(account) is None and await store.keys_of(account) == []
    assert await store.spend_counters(f"account:{account}") == {}
    assert await records.billing(account) == []  # re-keyed to a pseudonym
    status, text = await browser.get("/console/keys")
    assert "<h1>Sign in</h1>" in text
    async with aiohttp.ClientSession() as http, http.get(gw.v1 + "/models", headers={"Authorization": f"Bearer {made['key']}"}) as r:
        assert r.status == 401
    [record] = [a for a in await store.audit(account) if a.action == "console.accounts.delete"]
    assert (record.actor, record.target) == ("console", account)
