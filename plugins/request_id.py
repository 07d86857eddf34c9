"""Give every request an id and return it in `x-request-id`.

A client's own id is kept when it is safe to echo (printable, short);
otherwise, or when absent, a random one is made.
"""

from __future__ import annotations

import os
import re

import msgspec
from aiohttp import web

from lunos_proxy.config import HEADER_NAME
from lunos_proxy.exchange import exchange_of
from lunos_proxy.plugin import Handler, Plugin

_SAFE = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


class RandomHex:
    """Random bytes from the OS as hex, fetched `pool` bytes at a time.

    One getrandom() system call for every few hundred ids instead of one
    each (a system call costs one to two microseconds on a VM). A forked
    child drops the bytes it inherited, so no two processes hand out the
    same id.
    """

    __slots__ = ("_at", "_bytes", "_pool")

    def __init__(self, pool: int = 4096) -> None:
        self._pool, self._bytes, self._at = pool, b"", 0
        os.register_at_fork(after_in_child=self.drop)

    def drop(self) -> None:
        self._bytes, self._at = b"", 0

    def hex(self, n: int) -> str:
        """`n` random bytes, each used once, as 2n hex digits."""
        at, end = self._at, self._at + n
        if end > len(self._bytes):
            self._bytes, at, end = os.urandom(max(self._pool, n)), 0, n
        self._at = end
        return self._bytes[at:end].hex()


_random = RandomHex()


class RequestId(Plugin):
    name = "request_id"

    class Settings(msgspec.Struct, forbid_unknown_fields=True):
        header: str = "x-request-id"
        # Keep an id the client sent (when it looks safe), or always make one.
        trust_incoming: bool = True

        def __post_init__(self) -> None:
            # Written into every answer: a space or a line break here would
            # break every response (or split it), so the name is refused at load.
            if len(self.header) > 64 or not HEADER_NAME.fullmatch(self.header):
                raise ValueError(
                    "header must be an HTTP header name such as x-request-id (no spaces, "
                    f"colons or line breaks), not {self.header!r}"
                )

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        header = self.settings.header
        exchange = exchange_of(request)
        incoming = request.headers.get(header) if self.settings.trust_incoming else None
        if incoming is not None and _SAFE.fullmatch(incoming):
            exchange.request_id = incoming
        else:
            exchange.request_id = "req_" + _random.hex(12)
        exchange.response_headers[header] = exchange.request_id
        response = await handler(request)
        if not response.prepared:
            response.headers[header] = exchange.request_id
        return response
