"""A stand-in for the auth plugin: the principal comes from test headers.

    x-test-account: acct-eu              (no header: no principal at all)
    x-test-regions: eu,uk                (comma lists; absent: unrestricted)
    x-test-providers: openai-eu
    x-test-models: gpt-*
"""

from __future__ import annotations

from aiohttp import web

from lunos_proxy.exchange import Principal, exchange_of
from lunos_proxy.plugin import Handler, Plugin


def _list(request: web.Request, name: str) -> list[str] | None:
    value = request.headers.get(name)
    return None if value is None else [v for v in value.split(",") if v]


class PrincipalFromHeaders(Plugin):
    name = "test_principal"

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        account = request.headers.get("x-test-account")
        if account is not None:
            exchange_of(request).principal = Principal(
                account_id=account,
                key_id="key-" + account,
                allowed_models=_list(request, "x-test-models"),
                allowed_regions=_list(request, "x-test-regions"),
                allowed_providers=_list(request, "x-test-providers"),
            )
        return await handler(request)
