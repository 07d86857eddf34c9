"""The console in a real browser: headless Chromium (Debian's package) driven by Playwright.

One journey, as an account holder would take it: sign in with an emailed
code, create a key (shown once, copied, a reload makes no second key), call
the API with it through the `openai` SDK, see the overview (and its warning
once a budget is nearly spent), the request log (the requests with their
endpoint and latency, never their content), rotate and revoke the key (each after a
confirmation page, each with a result message, each reload-safe), set alert
thresholds, change the email through its confirmation link, download the
export, delete the account.

Every page on the way is checked at 1280 px and at 390 px wide: the
document is never wider than the window (no sideways scrolling), axe-core
finds no serious or critical accessibility violation, and a full-page
screenshot is kept in test-artifacts/console/ (ignored by git) as
``<step>-<width>.png``; with LUNOS_UPDATE_SCREENSHOTS=1 the overview at
1280 px is also written to docs/console-usage.png, the README's picture.

axe-core is the npm package pinned in tests/console/package.json
(`make test` runs ``npm ci`` there); its axe.min.js is injected into each
page (the context bypasses the console's CSP for that script only in this
test). Playwright never downloads a browser here: it launches
/usr/bin/chromium, which `make test` installs.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import openai
from playwright.async_api import async_playwright

from lunos_proxy.store.base import SpendDelta
from tests.auth_support import admin
from tests.conftest import GatewayFactory
from tests.console.support import Mailbox, console_config
from tests.fakes import FakeProvider
from tests.meter_support import PRICING

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "console"
README_SHOT = ROOT / "docs" / "console-usage.png"
AXE = Path(__file__).resolve().parent / "node_modules" / "axe-core" / "axe.min.js"
WIDTHS = ((1280, 800), (390, 844))
NARROWEST = 360  # checked for sideways scrolling only
PROMPT = "browser-canary-41c9 what is in my drawer"


def journey_config(provider: FakeProvider, mailbox: Mailbox, pricing: Path) -> dict[str, Any]:
    config = console_config(provider.base_url, console={
        "delivery": "webhook", "webhook_url": mailbox.url, "webhook_secret": "s" * 16,
        "public_url": "http://placeholder.invalid", "docs_url": "https://docs.example.test/api"})
    config["pipeline"].append({"name": "meter", "settings": {
        "flush_interval_seconds": 0.2, "pricing": str(pricing),
        "budgets": {"accounts": {}, "plans": {"pro": {"monthly": "5", "daily": "1"}}}}})
    return config


async def test_account_holder_journey_in_chromium(
    provider: FakeProvider, make_gateway: GatewayFactory, mailbox: Mailbox, tmp_path: Path
) -> None:
    assert os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing: scripts/install-system-packages.sh chromium"
    assert AXE.is_file(), f"{AXE} is missing: cd tests/console && npm ci"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (tmp_path / "pricing.yaml").write_text(PRICING)
    gw = await make_gateway(journey_config(provider, mailbox, tmp_path / "pricing.yaml"))
    status, made = await admin(gw, "POST", "/admin/accounts", {"name": "Ada", "email": "ada@example.com", "plan": "pro"})
    assert status == 201
    account = str(made["id"])
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                          args=["--no-sandbox", "--disable-gpu"])
        context = await browser.new_context(accept_downloads=True, viewport=dict(zip(("width", "height"), WIDTHS[0], strict=True)),
                                            bypass_csp=True)
        await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=gw.url)
        page = await context.new_page()
        try:
            await journey(page, gw, mailbox, account)
        except BaseException:
            await page.screenshot(path=str(ARTIFACTS / "failure.png"), full_page=True)
            raise
        finally:
            await browser.close()


async def check(page: Any, name: str) -> None:
    """At each width: no sideways scrolling, no serious or critical axe
    violation, a screenshot; at `NARROWEST`, no sideways scrolling either.
    The page is left at the first width."""
    axe = await asyncio.to_thread(AXE.read_text)
    await page.set_viewport_size({"width": NARROWEST, "height": 740})
    size = await page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert size[0] <= size[1], f"{name} at {NARROWEST} px: the document is {size[0]} px wide"
    for width, height in WIDTHS:
        await page.set_viewport_size({"width": width, "height": height})
        await page.wait_for_timeout(50)
        size = await page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert size[0] <= size[1], f"{name} at {width} px: the document is {size[0]} px wide"
        await page.screenshot(path=str(ARTIFACTS / f"{name}-{width}.png"), full_page=True)
        if not await page.evaluate("typeof window.axe !== 'undefined'"):
            await page.add_script_tag(content=axe)
        result = await page.evaluate(
            "axe.run(document, {resultTypes: ['violations']}).then(r => r.violations"
            ".filter(v => v.impact === 'serious' || v.impact === 'critical')"
            ".map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)})))")
        assert result == [], f"{name} at {width} px: {json.dumps(result, indent=1)}"
    await page.set_viewport_size(dict(zip(("width", "height"), WIDTHS[0], strict=True)))


async def flash(page: Any) -> str:
    return (await page.text_content("#flash") or "").strip()


async def journey(page: Any, gw: Any, mailbox: Mailbox, account: str) -> None:
    # Signed out: the sign-in page, and what is kept without signing in.
    await page.goto(gw.url + "/console/")
    await check(page, "01-sign-in")
    await page.click("text=What we keep")
    assert page.url == gw.url + "/console/what-we-keep"
    await check(page, "02-what-we-keep")

    # Sign in with the emailed code.
    await page.goto(gw.url + "/console/sign-in")
    await page.fill("#email", "ada@example.com")
    await page.click("#send-link")
    await page.wait_for_selector("#code")
    sent = (await mailbox.received())[-1]
    await page.fill("#code", sent["code"])
    await check(page, "03-code")
    # The message's link opens a page naming the account (opening it changes nothing);
    # this journey goes on with the code, in the page it left.
    landing = await page.context.new_page()
    await landing.goto(sent["link"].replace("http://placeholder.invalid", gw.url))
    assert "ada@example.com" in (await landing.text_content("main") or "")
    await check(landing, "03b-sign-in-link")
    await landing.close()
    await page.click("#enter-code")
    await page.wait_for_selector("#spend-today")
    assert page.url == gw.url + "/console/usage"
    assert await page.is_visible("#onboarding")  # no key yet: how to start
    assert await page.get_attribute("#onboarding a[href^=https]", "href") == "https://docs.example.test/api"
    await check(page, "04-overview-new")

    # Keys: none yet, then create one; it is shown once, with a request to copy.
    await page.click("nav >> text=Keys")
    assert await page.is_visible("#no-keys")
    await check(page, "05-keys-empty")
    await page.fill("#key-name", "laptop")
    await page.click("#create-key")
    key = (await page.text_content("#new-key") or "").strip()
    assert key.startswith("lk-") and len(key) == 46
    assert page.url == gw.url + "/console/keys"  # redirected after the POST
    assert f"Bearer {key}" in (await page.text_content("#first-request") or "")
    await page.click("#copy-key")
    assert await page.evaluate("navigator.clipboard.readText()") == key
    await check(page, "06-key-created")
    await page.reload()  # neither a second key nor the secret again
    assert await page.locator("#keys tbody tr").count() == 1
    assert await page.locator("#new-key").count() == 0 and key not in await page.content()

    # Use it with the SDK; the meter counts the usage and writes it behind.
    client = openai.AsyncOpenAI(base_url=gw.v1, api_key=key, max_retries=0)
    for _ in range(3):
        reply = await client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": PROMPT}])
        assert reply.usage is not None
    await client.close()
    answer = reply.choices[0].message.content or ""
    await page.goto(gw.url + "/console/usage")
    for _ in range(40):
        totals = await page.text_content("#totals") or ""
        if totals.startswith("3 requests"):
            break
        await page.wait_for_timeout(250)
        await page.reload()
    assert totals.startswith(f"3 requests · {3 * reply.usage.prompt_tokens:,} input tokens · "
                             f"{3 * reply.usage.completion_tokens:,} output tokens"), totals
    assert await page.locator("#usage-chart rect[fill]:not(.day)").count() >= 1
    assert await page.locator("#usage-chart text").count() >= 3  # y and date ticks
    assert re.fullmatch(r"\$0\.000\d+", (await page.text_content("#spend-today") or "").strip())
    assert await page.locator("progress").count() == 2  # the daily and monthly budgets
    await check(page, "07-overview")
    if os.environ.get("LUNOS_UPDATE_SCREENSHOTS"):
        README_SHOT.parent.mkdir(exist_ok=True)
        shutil.copy(ARTIFACTS / "07-overview-1280.png", README_SHOT)
    await page.click("text=Last 7 days")
    assert "range=7d" in page.url and "3 requests" in (await page.text_content("#totals") or "")

    # Spend near the daily budget ($1; alerts at 50, 80, 100 %): a warning, not yet a refusal.
    day = time.strftime("%Y-%m-%d", time.gmtime())
    await gw.gateway.store.add_spend([SpendDelta(subject=f"account:{account}", period=f"d:{day}", micros=850_000)])
    await page.reload()
    warning = (await page.text_content("#budget-nearly-spent") or "").strip()
    assert re.fullmatch(r"Your account: the daily budget of \$1\.00 is nearly spent \(\$0\.85, 85%\)\. "
                        r"\$0\.15 is left until it resets on \d{4}-\d\d-\d\d 00:00 UTC; past it, "
                        r"requests with any of your keys are refused\.", warning), warning
    assert await page.locator("#budget-exhausted").count() == 0
    await check(page, "07b-overview-nearly-spent")

    # The request log: the three requests, never what they said.
    await page.click("nav >> text=Requests")
    for _ in range(40):
        if await page.locator("#requests tbody tr").count() == 3:
            break
        await page.wait_for_timeout(250)
        await page.reload()
    assert await page.locator("#requests tbody tr").count() == 3
    content = await page.content()
    assert key[:9] in content and PROMPT not in content and answer not in content
    endpoints = await page.locator("#requests td[data-label=Endpoint]").all_text_contents()
    assert [e.strip() for e in endpoints] == ["chat/completions"] * 3
    latencies = await page.locator("#requests td[data-label=Latency]").all_text_contents()
    assert all(re.fullmatch(r"\d+ ms|[\d,]+\.\d s", t.strip()) for t in latencies), latencies
    await check(page, "08-requests")

    # Rotate: a confirmation saying until when the old key works, then the new key once.
    await page.click("nav >> text=Keys")
    assert await page.get_by_role("link", name=f"Rotate laptop ({key[:9]}…)").count() == 1
    await page.get_by_role("link", name=f"Rotate laptop ({key[:9]}…)").click()
    assert "The old key keeps working until" in (await page.text_content("main") or "")
    await check(page, "09-confirm-rotate")
    await page.click("#confirm-rotate")
    successor = (await page.text_content("#new-key") or "").strip()
    assert successor.startswith("lk-") and successor != key
    await page.reload()
    assert await page.locator("#keys tbody tr").count() == 2
    names = await page.locator("#keys tbody td[data-label=Name]").all_text_contents()
    assert sorted(names) == ["laptop", "laptop (rotated)"]
    await check(page, "10-keys-rotated")

    # Revoke the old one: a confirmation stating the consequence, a result message.
    await page.get_by_role("link", name=f"Revoke laptop (rotated) ({key[:9]}…)").click()
    assert "refuses this key within a second" in (await page.text_content("main") or "")
    await check(page, "11-confirm-revoke")
    await page.click("#confirm-revoke")
    assert (await flash(page)).startswith(f"Revoked laptop (rotated) ({key[:9]}…)")
    await page.reload()
    assert await page.locator("#flash").count() == 0
    assert await page.locator("#keys td.state-revoked").count() == 1

    # Budgets: an out-of-range threshold is explained next to the field and kept.
    await page.click("nav >> text=Budgets")
    await page.fill("#alert-thresholds", "150")
    await page.click("#save-alerts")
    assert await page.input_value("#alert-thresholds") == "150"
    assert "outside 1 to 100" in (await page.text_content("#thresholds-error") or "")
    await check(page, "12-budgets-error")
    await page.fill("#alert-thresholds", "50, 90")
    await page.click("#save-alerts")
    assert await flash(page) == "Saved: alerts at 50 %, 90 %"
    await page.reload()
    assert await page.locator("#flash").count() == 0

    # Privacy: a new email takes effect once its link is opened.
    await page.click("nav >> text=Privacy")
    await page.fill("#profile-email", "ada@new.example")
    await page.click("#save-profile")
    assert "We sent a confirmation link to ada@new.example" in await flash(page)
    await check(page, "13-privacy")
    link = (await mailbox.received(2))[-1]["link"]
    await page.goto(link.replace("http://placeholder.invalid", gw.url))
    await check(page, "14-confirm-email")
    await page.click("#confirm-email")
    assert "is now ada@new.example" in (await page.text_content("#email-changed") or "")
    assert page.url == gw.url + "/console/privacy/email/changed"  # redirected after the POST
    await page.reload()
    assert "is now ada@new.example" in (await page.text_content("#email-changed") or "")
    await check(page, "14b-email-changed")
    await page.goto(gw.url + "/console/privacy")
    assert await page.input_value("#profile-email") == "ada@new.example"

    # Download the export: readable, with dates.
    async with page.expect_download() as info:
        await page.click("#export")
    download = await info.value
    text = await asyncio.to_thread(Path(await download.path()).read_text)
    exported = json.loads(text)
    assert exported["account"]["id"] == account and len(exported["keys"]) == 2
    assert text.startswith('{\n  "') and "T" in exported["exported_at"]

    # Delete the account with the typed confirmation.
    await page.click("#delete-account")
    await page.fill("#confirm", "delete my account")
    await check(page, "15-confirm-delete")
    await page.click("#confirm-delete")
    await page.wait_for_selector("#deleted")
    assert page.url == gw.url + "/console/deleted"  # redirected after the POST
    await check(page, "16-deleted")
    await page.reload()
    assert "Deleted: your profile, 2 keys" in (await page.text_content("#deleted") or "")
    assert await gw.gateway.store.account(account) is None
    await page.goto(gw.url + "/console/keys")
    assert page.url == gw.url + "/console/sign-in"
