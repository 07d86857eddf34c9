"""A pipelined Redis connection for the calls every limited request makes.

redis-py spends about a hundred microseconds of CPU on one command (its
retry wrapper, a pool checkout, a health check, packing in Python, a
stream reader). The limit calls (`hit`, `settle`, `renew`) are tiny Lua
scripts on one hash tag, so the store sends them over a `Lane` instead:
one connection per server, commands encoded by the caller (resp.py) and
written without waiting for earlier replies, replies parsed by hiredis
and matched to their callers in order. Commands issued in one turn of the
event loop leave in one write.

    lane = Lane(address, LaneAuth(password="..."), tls=None, connect_timeout=1, timeout=1)
    reply = await lane.call(resp.command("EVALSHA", sha, 1, "lunos:{acct:a}:limits", ...))

Failures: a call that cannot connect raises `ConnectionError`; when the
oldest reply is `timeout` seconds late, the connection is dropped and
every call in flight on it raises `TimeoutError` (their commands may have
run, so nothing is retried: a retried `hit` would charge twice); a
connection the server closes fails its calls with `ConnectionError`. The
next call connects again, asking `address` where to (Sentinel: the
current master). Error replies are returned, not raised, as
`hiredis.ReplyError`, for the store to interpret (NOSCRIPT, MOVED, ...).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, cast

import hiredis

from . import resp

__all__ = ["Address", "Lane", "LaneAuth", "ReplyError", "fixed"]

ReplyError = hiredis.ReplyError

Address = Callable[[], Awaitable[tuple[str, int]]]


@dataclasses.dataclass(frozen=True)
class LaneAuth:
    username: str | None = None
    password: str | None = None
    db: int = 0


class _Connection(asyncio.Protocol):
    """One socket; `pending` holds (future, deadline) per command sent, in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.loop, self.timeout = loop, timeout
        self.reader = hiredis.Reader()
        self.pending: deque[tuple[asyncio.Future[Any], float]] = deque()
        self.transport: asyncio.Transport | None = None
        self.out: list[bytes] = []
        self.closed = False
        self._watch: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ----------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        reader, pending = self.reader, self.pending
        try:
            reader.feed(data)
            while (reply := reader.gets()) is not False:
                future, _ = pending.popleft()
                if not future.done():  # a caller that gave up has a cancelled future
                    future.set_result(reply)
        except (hiredis.ProtocolError, IndexError) as e:
            # Bytes that are not RESP, or a reply nobody asked for: nothing
            # after this point can be matched to its caller.
            self.abort(ConnectionError(f"redis: unreadable reply ({type(e).__name__})"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.abort(ConnectionError("redis: connection closed"))

    # -- use -----------------------------------------------------------------
    def send(self, command: bytes) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = self.loop.create_future()
        if self.closed:
            future.set_exception(ConnectionError("redis: connection closed"))
            return future
        if not self.out:
            self.loop.call_soon(self.flush)
        self.out.append(command)
        self.pending.append((future, self.loop.time() + self.timeout))
        if self._watch is None:
            self._watch = self.loop.call_at(self.pending[0][1], self._check)
        return future

    def flush(self) -> None:
        if self.out and self.transport is not None and not self.closed:
            self.transport.write(b"".join(self.out) if len(self.out) > 1 else self.out[0])
        self.out.clear()

    def _check(self) -> None:
        self._watch = None
        if not self.pending or self.closed:
            return
        deadline = self.pending[0][1]
        if self.loop.time() >= deadline:
            self.abort(TimeoutError(f"redis: no reply within {self.timeout} s"))
        else:
            self._watch = self.loop.call_at(deadline, self._check)

    def abort(self, error: Exception) -> None:
        """Drop the socket and fail every call waiting on it with `error`."""
        self.closed = True
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if self.transport is not None:
            self.transport.abort()
        while self.pending:
            future, _ = self.pending.popleft()
            if not future.done():
                future.set_exception(error)
        self.out.clear()


class Lane:
    """Pipelined calls to one Redis server (see the module docstring)."""

    def __init__(
        self,
        address: Address,
        auth: LaneAuth,
        *,
        tls: ssl.SSLContext | None,
        connect_timeout: float,
        timeout: float,
    ) -> None:
        self._address, self._auth, self._tls = address, auth, tls
        self._connect_timeout, self._timeout = connect_timeout, timeout
        self._conn: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None
        self._closed = False

    async def call(self, command: bytes) -> Any:
        """`command`'s reply; `command` is encoded (resp.py)."""
        conn = self._conn
        if conn is None or conn.closed:
            conn = await self._connected()
        return await conn.send(command)

    async def call_asking(self, command: bytes) -> Any:
        """`call` right after ASKING on the same connection, nothing sent
        between them (a Cluster's ASK redirect: ASKING holds for one command)."""
        conn = self._conn
        if conn is None or conn.closed:
            conn = await self._connected()
        asking = conn.send(b"*1\r\n$6\r\nASKING\r\n")
        _, reply = await asyncio.gather(asking, conn.send(command))
        return reply  # ASKING cannot fail; if it did, the command got MOVED

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.closed

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop of a connected lane (see `connected`)."""
        assert self._conn is not None
        return self._conn.loop

    def send(self, command: bytes) -> asyncio.Future[Any]:
        """`call` on a connected lane (see `connected`), without a coroutine:
        the reply's future, for a caller that does not wait for it."""
        assert self._conn is not None
        return self._conn.send(command)

    def reset(self) -> None:
        """Drop the connection (the server turned replica, say); the next call reconnects."""
        if self._conn is not None:
            self._conn.abort(ConnectionError("redis: connection reset"))
            self._conn = None

    async def close(self) -> None:
        """Wait (up to `timeout`) for the calls in flight, then drop the connection.
        A call made from then on (a retry of a reply that came in meanwhile,
        say) raises `ConnectionError` instead of opening a connection that
        nothing would close."""
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is None or conn.closed:
            return
        conn.flush()
        waiting = [future for future, _ in conn.pending]
        if waiting:
            await asyncio.wait(waiting, timeout=self._timeout)
        conn.abort(ConnectionError("redis: connection closed by the store"))

    async def _connected(self) -> _Connection:
        if self._closed:
            raise ConnectionError("redis: lane closed")
        # Concurrent callers share one attempt.
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
            self._connecting.add_done_callback(self._connect_done)
        conn = await asyncio.shield(self._connecting)
        if self._closed:  # closed while connecting (see _connect_done)
            raise ConnectionError("redis: lane closed")
        return conn

    def _connect_done(self, attempt: asyncio.Future[_Connection]) -> None:
        self._connecting = None
        if not attempt.cancelled() and attempt.exception() is None:
            if self._closed:  # closed while connecting: its callers fail
                attempt.result().abort(ConnectionError("redis: lane closed"))
            else:
                self._conn = attempt.result()

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                host, port = await self._address()
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop, self._timeout),
                    host,
                    port,
                    ssl=self._tls,
                    server_hostname=host if self._tls is not None else None,
                )
                try:
                    await self._handshake(conn)
                except BaseException:
                    conn.abort(ConnectionError("redis: handshake failed"))
                    raise
        except TimeoutError as e:
            raise ConnectionError(f"redis: no connection within {self._connect_timeout} s") from e
        return conn

    async def _handshake(self, conn: _Connection) -> None:
        auth = self._auth
        replies = []
        if auth.password is not None:
            user = () if auth.username is None else (auth.username,)
            replies.append(conn.send(resp.command("AUTH", *user, auth.password)))
        if auth.db:
            replies.append(conn.send(resp.command("SELECT", auth.db)))
        for reply in replies:
            if isinstance(await reply, ReplyError):
                # The reply can name the user; never the password.
                raise ConnectionError(f"redis: {str(await reply).split(' ', 1)[0]} at connect")



def fixed(host: str, port: int) -> Address:
    """An `Address` that is always `host:port` (one server, a Cluster node)."""

    async def address() -> tuple[str, int]:
        return host, port

    return address
