"""Test-only plugins around `abuse`: a principal from the bearer token, and
the usage a meter would report.

    Authorization: Bearer <account>.<key>[.<plan>]   → that Principal
    Authorization: Bearer bad                       → auth_failed(), then 401
    anything else                                   → no principal

Registered through a real entry point by the `abuse_fakes` fixture.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from aiohttp import web

from lunos_proxy.errors import Unauthorized
from lunos_proxy.exchange import Principal, exchange_of
from lunos_proxy.plugin import Handler, Plugin
from lunos_proxy.views import ADDRESS_GUARD, AddressGuard
from tests.fakes import COMPLETION_TOKENS, PROMPT_TOKENS


class FakePrincipal(Plugin):
    name = "fake_principal"

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        guard: AddressGuard | None = self.services.views.get(ADDRESS_GUARD)
        if guard is not None:
            await guard.check_address(request)
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if token == "bad":
            if guard is not None:
                await guard.auth_failed(request)
            raise Unauthorized("Incorrect API key provided.")
        parts = token.split(".")
        if len(parts) in (2, 3):
            exchange_of(request).principal = Principal(
                account_id=parts[0], key_id=parts[1], plan=parts[2] if len(parts) == 3 else None
            )
        return await handler(request)


class FakeMeter(Plugin):
    """Sets the usage the fake provider reports, as the meter would."""

    name = "fake_meter"

    class Settings(msgspec.Struct, forbid_unknown_fields=True):
        input_tokens: int = PROMPT_TOKENS
        output_tokens: int = COMPLETION_TOKENS

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        exchange = exchange_of(request)
        if exchange.status < 400:
            exchange.usage.input_tokens = self.settings.input_tokens
            exchange.usage.output_tokens = self.settings.output_tokens
            exchange.usage.source = "reported"
        return response


@pytest.fixture
def abuse_fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    dist = tmp_path / "lunos_abuse_fakes-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lunos-abuse-fakes\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        textwrap.dedent("""\
            [lunos_proxy.plugins]
            fake_principal = tests.plugins.abuse.fakes:FakePrincipal
            fake_meter = tests.plugins.abuse.fakes:FakeMeter
        """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("lunos_abuse_fakes", None)
