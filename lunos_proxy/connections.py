"""The listeners: slow, idle and too many connections.

aiohttp closes a keep-alive connection left idle (`keepalive_timeout`), but
it gives a client all the time it wants to finish its headers or its body,
and lets one address open any number of connections. The listener adds:

- header time: a request's line and headers must be complete
  `header_timeout_seconds` after the connection opened (its first request)
  or after their first byte arrived (later ones);
- body time: a body gets `body_timeout_seconds`, plus one second for every
  `body_min_rate` bytes that arrived (so a client keeping that rate is never
  cut off) — not counting time in which the server itself held the body
  back (flow control while a handler is not reading yet);
- keep-alive: aiohttp's own idle timer, set to `idle_timeout_seconds`;
- caps on open connections per process and per client address (an IPv6
  client by its /64): a connection over either is closed as it opens.

Both listeners have these rules (`public_runner`, `admin_runner`), from
the one `server.connections` section, each with its own counts: an admin
listener left open to a network is no easier to tie up than the public one.

A connection out of time is closed without an answer.

A request answered without its body having been read (a refusal that
needs no body: no key or a wrong one, a compressed body, a declared
length over the limit, an unknown path) closes its connection after the
answer, which says `Connection: close` (`http_errors.json_http_exceptions`):
aiohttp would otherwise "linger", parsing and dropping up to 10 s of the
rest of the body so that the connection could serve another request; with
`lingering_time=0` the rest is never parsed, so a refused 2 MB body costs
what a refused 2 KB one does. Clients see the answer at once (the SDKs
read it even when the close interrupts their upload). Request bodies are
never decompressed by aiohttp here (`auto_decompress=False`): parse.py
decodes them after auth, when the config allows it.

Cost on the hot path: `data_received` compares a counter and sets a field
or two; no timer or task per request. One timer per process ticks only
while some connection is in a timed phase (opened and waiting for its
first request, mid-headers, mid-body); each tick looks at those only.

This reads a few private fields of aiohttp's RequestHandler (its parsed
message queue and counter, its flow-control flags): the version is pinned
in requirements.lock, and tests/e2e/test_slow_clients.py drives each rule
over real sockets.
"""

from __future__ import annotations

import asyncio
import resource
from typing import Any

from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from .addresses import subject
from .config import ConnectionsConfig, ServerConfig
from .http_errors import JsonErrorsHandler, json_http_exceptions

__all__ = [
    "ConnectionGuard",
    "GuardedHandler",
    "address_key",
    "admin_runner",
    "open_files_warning",
    "public_runner",
]

# Descriptors beyond the client connections: upstream pools, the store,
# the admin listener, files.
SPARE_FILES = 256


def public_runner(app: web.Application, server: ServerConfig, **kwargs: Any) -> web.AppRunner:
    """The runner for the public app, with the `server.connections` rules."""
    return _runner(app, server, **kwargs)


def admin_runner(app: web.Application, server: ServerConfig, **kwargs: Any) -> web.AppRunner:
    """The runner for the admin app: the same rules, counted apart. (Its
    bodies are not inflated either: it reads them after the token check,
    and aiohttp would inflate them as they arrive.)"""
    return _runner(app, server, **kwargs)


def _runner(app: web.Application, server: ServerConfig, **kwargs: Any) -> web.AppRunner:
    c = server.connections
    return _GuardedRunner(
        app,
        c,
        access_log=None,
        handler_cancellation=True,
        auto_decompress=False,
        keepalive_timeout=c.idle_timeout_seconds,
        # A body left unread (a refusal answered before it was needed) is
        # never read afterwards: the connection closes after the answer.
        lingering_time=0,
        **kwargs,
    )


def open_files_warning(settings: ConnectionsConfig) -> str | None:
    """Why `max_open` cannot be reached, if the open-files limit is lower:
    past it, accepting fails and upstream connections fail with it."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= settings.max_open + SPARE_FILES:
        return None
    return (
        f"the open-files limit ({soft}) is below server.connections.max_open "
        f"({settings.max_open}) + {SPARE_FILES}: raise it (ulimit -n) or lower max_open"
    )


def address_key(peername: Any) -> str:
    """What the per-address cap counts: as the address limits count (an IPv6
    client by its /64)."""
    if not isinstance(peername, tuple) or not peername:
        return ""  # a Unix socket: one local client
    return subject(str(peername[0]))


class ConnectionGuard:
    """Counts a listener's open connections and closes those out of time."""

    def __init__(self, settings: ConnectionsConfig, loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self.loop = loop
        self.open = 0
        self.per_address: dict[str, int] = {}
        self.watched: set[GuardedHandler] = set()
        self._timer: asyncio.TimerHandle | None = None
        # A connection is closed at most one tick after its time ran out.
        shortest = min(settings.header_timeout_seconds, settings.body_timeout_seconds)
        self.tick = min(1.0, max(0.02, shortest / 5))

    def admit(self, address: str) -> bool:
        s = self.settings
        if self.open >= s.max_open:
            return False
        held = self.per_address.get(address, 0)
        if s.max_per_address and held >= s.max_per_address:
            return False
        self.open += 1
        self.per_address[address] = held + 1
        return True

    def release(self, handler: GuardedHandler) -> None:
        self.open -= 1
        address = handler.address
        held = self.per_address.get(address, 0) - 1
        if held > 0:
            self.per_address[address] = held
        else:
            self.per_address.pop(address, None)
        self.watched.discard(handler)

    def watch(self, handler: GuardedHandler) -> None:
        self.watched.add(handler)
        if self._timer is None:
            self._timer = self.loop.call_later(self.tick, self._sweep)

    def _sweep(self) -> None:
        self._timer = None
        now = self.loop.time()
        done: list[GuardedHandler] = []
        for handler in self.watched:
            overdue = handler.overdue(now, self.settings)
            if overdue is None:
                done.append(handler)
            elif overdue:
                done.append(handler)
                handler.force_close()
        for handler in done:
            self.watched.discard(handler)
        if self.watched:
            self._timer = self.loop.call_later(self.tick, self._sweep)


class GuardedHandler(JsonErrorsHandler):
    """aiohttp's connection protocol, with the clocks the guard reads (and
    its own error answers in JSON, from `http_errors`)."""

    __slots__ = (
        "_admitted",
        "_body",
        "_body_base",
        "_body_since",
        "_guard",
        "_head_since",
        "_received",
        "address",
    )

    def __init__(self, manager: web.Server, *, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._admitted = False
        self.address = ""
        self._received = 0  # bytes from the client, all requests
        self._head_since = 0.0  # a request's headers are awaited since (0: not)
        self._body: StreamReader | None = None  # the body still arriving
        self._body_since = 0.0
        self._body_base = 0  # `_received` when the body's clock (re)started

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        address = address_key(transport.get_extra_info("peername"))
        if not self._guard.admit(address):
            transport.close()
            return
        self._admitted = True
        self.address = address
        super().connection_made(transport)
        self._head_since = self._loop.time()
        self._guard.watch(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self._admitted:
            return  # refused in connection_made: aiohttp never saw it
        self._admitted = False
        self._guard.release(self)
        if self._body is not None:
            _drop_buffered(self._body)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        count = self._request_count
        super().data_received(data)
        self._received += len(data)
        if self._request_count != count:
            # Headers complete: the newest message's body may still be coming.
            self._head_since = 0.0
            payload = self._messages[-1][1] if self._messages else None
            if payload is not None and not payload.is_eof():
                self._body = payload
                self._body_since = self._loop.time()
                self._body_base = self._received
                self._guard.watch(self)
            else:
                self._body = None
        elif self._body is not None:
            if self._body.is_eof():
                self._body = None
        elif data and not self._head_since and not self._upgraded:
            self._head_since = self._loop.time()  # the first bytes of a request
            self._guard.watch(self)

    def overdue(self, now: float, s: ConnectionsConfig) -> bool | None:
        """True: out of time; False: in time; None: no clock running."""
        body = self._body
        if body is not None:
            if body.is_eof():
                self._body = None
            elif self._reading_paused or self._buffer_paused:
                # The server holds the body back: none of that time is the client's.
                self._body_since, self._body_base = now, self._received
                return False
            else:
                allowed = s.body_timeout_seconds
                if s.body_min_rate:
                    allowed += (self._received - self._body_base) / s.body_min_rate
                return now - self._body_since > allowed
        if self._head_since:
            if self._request_in_progress or self._messages:
                # Still answering the previous request: the next one may wait.
                self._head_since = now
                return False
            return now - self._head_since > s.header_timeout_seconds
        return None


class _GuardedServer(web.Server):
    def __init__(self, handler: Any, *, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.guard = guard

    def __call__(self) -> RequestHandler:
        return GuardedHandler(self, guard=self.guard, loop=self._loop, **self._kwargs)


class _GuardedRunner(web.AppRunner):
    __slots__ = ("_settings",)

    def __init__(self, app: web.Application, settings: ConnectionsConfig, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._settings = settings

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # the app started, its handler args merged
        loop = asyncio.get_running_loop()
        return _GuardedServer(
            json_http_exceptions(plain.request_handler),
            guard=ConnectionGuard(self._settings, loop),
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=loop,
            **plain._kwargs,
        )


def _drop_buffered(body: StreamReader) -> None:
    """Free what arrived of a body no one will read (what the reads before
    aiohttp's flow control paused brought: a few hundred KB) when its
    connection closes. The request that holds it is left to the cycle
    collector, which the tuned thresholds (cli.py) run seldom: under a flood
    of refused uploads those buffers piled up (a gigabyte of RSS within
    seconds of the hostile bench)."""
    body._buffer.clear()
    body._size = 0
