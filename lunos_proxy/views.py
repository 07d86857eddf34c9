"""What the abuse plugin offers the plugins before it (auth) in `services.shared`.

Auth runs before abuse in the pipeline, yet it is the one that sees an
address fail to authenticate. The abuse plugin therefore registers an
`AddressGuard` under `services.shared[ADDRESS_GUARD]`; auth looks it up and
calls it, and works unchanged when abuse is not in the pipeline. Plugins
are built in pipeline order, so look it up in `start()` or per request,
not in `__init__`:

    guard = self.services.shared.get(ADDRESS_GUARD)
    if guard is not None:
        await guard.check_address(request)      # before looking the key up
    ...
    if key is bad:
        if guard is not None:
            await guard.auth_failed(request)    # may raise: the address is now banned
        raise Unauthorized(...)
"""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

__all__ = ["ADDRESS_GUARD", "AddressGuard"]

ADDRESS_GUARD = "abuse"


class AddressGuard(Protocol):
    async def check_address(self, request: web.Request) -> None:
        """Raise a `GatewayError` (403 denied, 429 banned) if the request's
        client address may not be served. Cheap: no store round trip."""

    async def auth_failed(self, request: web.Request) -> None:
        """Count an authentication failure for the request's client address.

        Past the configured threshold the address is banned on every
        instance, for longer each time it offends again; the call then
        raises the ban's `GatewayError` (429 with Retry-After)."""
