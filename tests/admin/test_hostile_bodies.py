"""Admin bodies that do not fit their call are refused with a 400 naming
where (a field of ours) and what is wrong, never quoting what was sent: not
an unknown field's name, not a value outside a fixed set."""

from __future__ import annotations

from typing import Any

import pytest

from tests.auth_support import admin, auth_config
from tests.conftest import GatewayFactory
from tests.fakes import FakeProvider
from tests.logcapture import Captured

CANARY = "qz7canary-body"

CASES = [
    ("POST", "/admin/accounts", {CANARY: 1},
     "invalid body: Object contains an unknown field"),
    ("PATCH", "/admin/accounts/demo", {"name": "x", CANARY: None},
     "invalid body: Object contains an unknown field"),
    ("POST", "/admin/tokens", {"name": "t", "scope": CANARY},
     "invalid body: Invalid enum value - at $.scope"),
    ("POST", "/admin/accounts", {"name": 5},
     "invalid body: Expected str, got int - at $.name"),
]


@pytest.mark.parametrize("method, path, body, message", CASES,
                         ids=["unknown-field", "unknown-field-patch", "enum", "type"])
async def test_a_body_that_does_not_fit_is_refused_without_quoting_it(
    provider: FakeProvider, make_gateway: GatewayFactory,
    method: str, path: str, body: dict[str, Any], message: str,
) -> None:
    gw = await make_gateway(auth_config(provider.base_url))
    if method == "PATCH":
        assert (await admin(gw, "POST", "/admin/accounts", {"name": "Demo"}))[0] == 201
    status, answer = await admin(gw, method, path, body)
    assert (status, answer) == (400, {"error": {"message": message, "status": 400}})


@pytest.mark.parametrize("amount", ["NaN", "Infinity", "-Infinity", "sNaN", "1e400", 1e300, "1000000001"])
async def test_a_credit_that_is_no_finite_bounded_amount_is_a_400(
    provider: FakeProvider, make_gateway: GatewayFactory, amount: Any
) -> None:
    gw = await make_gateway(auth_config(provider.base_url))
    status, answer = await admin(gw, "POST", "/admin/usage/demo/credits", {"amount": amount})
    assert (status, answer) == (400, {"error": {
        "message": "'amount' must be positive, at most 1000000000, with at most 6 decimals",
        "status": 400}})
    status, answer = await admin(gw, "GET", "/admin/usage/demo/balance")
    assert (status, answer["credit_micros"]) == (200, 0)


async def test_an_unexpected_failure_in_an_admin_handler_is_a_json_500_logged_without_its_message(
    provider: FakeProvider, make_gateway: GatewayFactory, captured_logs: Captured,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The admin listener's error boundary: any exception is a 500 in the
    admin shape, audited, and logged with its type and stack, not its message."""
    gw = await make_gateway(auth_config(provider.base_url))

    async def broken(*_: Any) -> Any:
        raise ValueError(CANARY)

    monkeypatch.setattr(gw.gateway.store, "spend", broken)  # a fault no request can cause
    status, answer = await admin(gw, "GET", "/admin/usage/demo/balance")
    assert (status, answer) == (500, {"error": {"message": "internal error; see the log",
                                                "status": 500}})
    assert CANARY not in captured_logs.text
    assert "internal_error" in captured_logs.text and "ValueError" in captured_logs.text
    status, audit = await admin(gw, "GET", "/admin/audit")
    assert audit["entries"][-1]["status"] == 500 or audit["entries"][0]["status"] == 500
