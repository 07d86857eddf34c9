"""Console routes that take an id check its form before the store sees it."""

from __future__ import annotations

from typing import Any

from tests.admin.test_path_ids import HOSTILE
from tests.conftest import GatewayFactory
from tests.console.support import Browser, console_config, signed_in
from tests.fakes import FakeProvider


async def test_console_key_actions_with_a_malformed_id_are_not_found(
    provider: FakeProvider, make_gateway: GatewayFactory, browsers: Any
) -> None:
    gw = await make_gateway(console_config(provider.base_url))
    account, _, browser = await signed_in(gw, browsers)
    assert isinstance(browser, Browser)
    for sent in HOSTILE.values():
        status, text = await browser.post(f"/console/keys/{sent}/revoke")
        assert status == 404 and "No such key." in text
        assert "PATHCANARY" not in text and "passwd" not in text
    entries = await gw.gateway.store.audit(account)
    assert [e.action for e in entries if e.actor == "console"] == ["console.sign_in.key"]
