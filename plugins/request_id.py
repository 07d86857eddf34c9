"""Give every request an id and return it in `x-request-id`.

A client's own id is kept when it is safe to echo (printable, short);
otherwise, or when absent, a random one is made.
"""

from __future__ import annotations

import os
import re

import msgspec
from aiohttp import web

from lunos_proxy.exchange import exchange_of
from lunos_proxy.plugin import Handler, Plugin

_SAFE = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


class RequestId(Plugin):
    name = "request_id"

    class Settings(msgspec.Struct, forbid_unknown_fields=True):
        header: str = "x-request-id"
        # Keep an id the client sent (when it looks safe), or always make one.
        trust_incoming: bool = True

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        header = self.settings.header
        exchange = exchange_of(request)
        incoming = request.headers.get(header) if self.settings.trust_incoming else None
        if incoming is not None and _SAFE.fullmatch(incoming):
            exchange.request_id = incoming
        else:
            exchange.request_id = "req_" + os.urandom(12).hex()
        exchange.response_headers[header] = exchange.request_id
        response = await handler(request)
        if not response.prepared:
            response.headers[header] = exchange.request_id
        return response
