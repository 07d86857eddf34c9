"""The privacy pages: data kept (from the running config), correct, export, delete."""

from __future__ import annotations

import json
import re
from typing import Any

import aiohttp

from lunos_proxy.store.base import BillingRecord, SpendDelta, UsageDelta
from tests.auth_support import admin
from tests.conftest import GatewayFactory
from tests.console.support import Browser, console_config, new_account, new_key, signed_in
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
    assert "ending 15 minutes after your last visit" in kept_text
    assert "no analytics" in text


async def test_name_and_email_are_corrected(
    provider: FakeProvider, make_gateway: GatewayFactory, browsers: Any
) -> None:
    gw = await make_gateway(console_config(provider.base_url))
    account, _made, browser = await signed_in(gw, browsers)
    status, text = await browser.post("/console/privacy/profile", {"name": "Ada King", "email": "ada@king.example"})
    assert status == 200 and "Saved." in text and 'value="Ada King"' in text
    shown = (await admin(gw, "GET", f"/admin/accounts/{account}"))[1]
    assert (shown["name"], shown["email"]) == ("Ada King", "ada@king.example")
    await new_account(gw, "Other", "taken@example.com")
    status, text = await browser.post("/console/privacy/profile", {"name": "Ada", "email": "taken@example.com"})
    assert status == 409 and "another account already has this email" in text
    status, _ = await browser.post("/console/privacy/profile", {"name": "Ada", "email": "not an email"})
    assert status == 400


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
        document = json.loads(await r.read())
    assert document["account"]["email"] == "ada@example.com"
    assert [k["id"] for k in document["keys"]] == [made["id"]]
    assert "hash" not in document["keys"][0] and made["key"] not in json.dumps(document)
    assert [u["input_tokens"] for u in document["usage"]] == [5]


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
    assert status == 200 and "Your 1 API key(s)" in text and "Billing records (1)" in text
    status, text = await browser.post("/console/privacy/delete", {"confirm": "yes"})
    assert status == 400 and "delete my account" in text
    assert await store.account(account) is not None
    status, text = await browser.post("/console/privacy/delete", {"confirm": "Delete my account"})
    assert status == 200 and "Your account is deleted" in text and "Kept: 1 billing records" in text
    assert "and 1 spend counter(s)." in text
    assert await store.account(account) is None and await store.keys_of(account) == []
    assert await store.spend_counters(f"account:{account}") == {}
    assert await records.billing(account) == []  # re-keyed to a pseudonym
    status, text = await browser.get("/console/keys")
    assert "<h1>Sign in</h1>" in text
    async with aiohttp.ClientSession() as http, http.get(gw.v1 + "/models", headers={"Authorization": f"Bearer {made['key']}"}) as r:
        assert r.status == 401
    [record] = [a for a in await store.audit(account) if a.action == "console.accounts.delete"]
    assert (record.actor, record.target) == ("console", account)
