"""The console in a real browser: headless Chromium (Debian's package) driven by Playwright.

One journey: sign in with an emailed code, create a key and copy it, use it
with the `openai` SDK, see the usage, download the export, delete the
account. Screenshots of each step go to test-artifacts/console/ (ignored by
git); with LUNOS_UPDATE_SCREENSHOTS=1 the usage page is also written to
docs/console-usage.png, the README's picture. Playwright never downloads a
browser here: it launches /usr/bin/chromium, which `make test` installs.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

import openai
from playwright.async_api import async_playwright

from tests.conftest import GatewayFactory
from tests.console.support import Mailbox, console_config, new_account
from tests.fakes import FakeProvider

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
README_SHOT = Path(__file__).resolve().parents[2] / "docs" / "console-usage.png"


def journey_config(provider: FakeProvider, mailbox: Mailbox) -> dict[str, Any]:
    config = console_config(provider.base_url, console={
        "delivery": "webhook", "webhook_url": mailbox.url, "webhook_secret": "s" * 16,
        "public_url": "http://placeholder.invalid"})
    config["pipeline"].append({"name": "meter", "settings": {"flush_interval_seconds": 0.2}})
    return config


async def test_account_holder_journey_in_chromium(
    provider: FakeProvider, make_gateway: GatewayFactory, mailbox: Mailbox
) -> None:
    assert os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing: scripts/install-system-packages.sh chromium"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    gw = await make_gateway(journey_config(provider, mailbox))
    account = await new_account(gw)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                          args=["--no-sandbox", "--disable-gpu"])
        context = await browser.new_context(accept_downloads=True, viewport={"width": 1000, "height": 760})
        await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=gw.url)
        page = await context.new_page()
        try:
            await journey(page, gw, mailbox, account)
        except BaseException:
            await page.screenshot(path=str(ARTIFACTS / "failure.png"), full_page=True)
            raise
        finally:
            await browser.close()


async def journey(page: Any, gw: Any, mailbox: Mailbox, account: str) -> None:
    shot = lambda name: page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)  # noqa: E731

    # Sign in with the emailed code.
    await page.goto(gw.url + "/console/")
    await page.fill("#email", "ada@example.com")
    await page.click("#send-link")
    await page.wait_for_selector("#code")
    await page.fill("#code", (await mailbox.received())[-1]["code"])
    await shot("1-code")
    await page.click("#enter-code")
    await page.wait_for_selector("#usage-chart")
    assert page.url == gw.url + "/console/usage"

    # Create a key; it is shown once, and the copy button copies it.
    await page.click("text=Keys")
    await page.fill("#key-name", "laptop")
    await page.click("#create-key")
    key = (await page.text_content("#new-key") or "").strip()
    assert key.startswith("lk-") and len(key) == 46
    await page.click("#copy-key")
    assert await page.evaluate("navigator.clipboard.readText()") == key
    await shot("2-key-created")

    # Use it with the SDK; the meter counts the usage and writes it behind.
    client = openai.AsyncOpenAI(base_url=gw.v1, api_key=key, max_retries=0)
    for _ in range(3):
        reply = await client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
        assert reply.usage is not None
    await client.close()
    await page.goto(gw.url + "/console/usage")
    for _ in range(40):
        totals = await page.text_content("#totals") or ""
        if totals.startswith("3 requests"):
            break
        await page.wait_for_timeout(250)
        await page.reload()
    assert totals.startswith(f"3 requests · {3 * reply.usage.prompt_tokens} input tokens · "
                             f"{3 * reply.usage.completion_tokens} output tokens"), totals
    assert await page.locator("#usage-chart rect[fill]").count() >= 1
    await shot("3-usage")
    if os.environ.get("LUNOS_UPDATE_SCREENSHOTS"):
        README_SHOT.parent.mkdir(exist_ok=True)
        shutil.copy(ARTIFACTS / "3-usage.png", README_SHOT)

    # Download the export.
    await page.click("text=Privacy")
    async with page.expect_download() as info:
        await page.click("#export")
    download = await info.value
    exported = json.loads(await asyncio.to_thread(Path(await download.path()).read_text))
    assert exported["account"]["id"] == account and len(exported["keys"]) == 1
    await shot("4-privacy")

    # Delete the account with the typed confirmation.
    await page.click("#delete-account")
    await page.fill("#confirm", "delete my account")
    await shot("5-confirm-delete")
    await page.click("#confirm-delete")
    await page.wait_for_selector("#deleted")
    await shot("6-deleted")
    assert await gw.gateway.store.account(account) is None
    await page.goto(gw.url + "/console/keys")
    assert page.url == gw.url + "/console/sign-in"
