"""Sign-in links point only at configured addresses, never at the request's Host."""

from __future__ import annotations

from typing import Any

from tests.conftest import GatewayFactory
from tests.console.support import Browser, Mailbox, console_config, new_account
from tests.fakes import FakeProvider
from tests.logcapture import Captured

HOSTILE = {"Host": "evil.example", "X-Forwarded-Host": "evil.example",
           "X-Forwarded-Proto": "https", "Forwarded": "host=evil.example;proto=https"}


async def test_without_public_url_the_link_names_the_configured_listener_not_the_host_header(
    captured_logs: Captured, provider: FakeProvider, make_gateway: GatewayFactory, browsers: Any
) -> None:
    gw = await make_gateway(console_config(provider.base_url))
    account = await new_account(gw)
    browser: Browser = browsers(gw)
    status, _ = await browser.post("/console/sign-in/email", {"email": "ada@example.com"},
                                   headers=HOSTILE)
    assert status == 200
    [line] = [x for x in captured_logs.lines() if x.get("event") == "console_sign_in_link"]
    assert line["account_id"] == account
    port = gw.gateway.config.server.port
    assert line["link"].startswith(f"http://127.0.0.1:{port}/console/sign-in/link?t=")
    assert "evil" not in captured_logs.text


async def test_with_public_url_a_hostile_host_header_changes_nothing(
    provider: FakeProvider, make_gateway: GatewayFactory, browsers: Any, mailbox: Mailbox
) -> None:
    gw = await make_gateway(console_config(provider.base_url, console={
        "delivery": "webhook", "webhook_url": mailbox.url, "webhook_secret": "s" * 24,
        "public_url": "https://console.example.test/"}))
    await new_account(gw)
    browser: Browser = browsers(gw)
    await browser.post("/console/sign-in/email", {"email": "ada@example.com"}, headers=HOSTILE)
    [message] = await mailbox.received()
    assert message["link"].startswith("https://console.example.test/console/sign-in/link?t=")
    assert "evil" not in message["text"]
