"""Admin bodies that do not fit their call are refused with a 400 naming
where (a field of ours) and what is wrong, never quoting what was sent: not
an unknown field's name, not a value outside a fixed set."""

from __future__ import annotations

from typing import Any

import pytest

from tests.auth_support import admin, auth_config
from tests.conftest import GatewayFactory
from tests.fakes import FakeProvider

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
