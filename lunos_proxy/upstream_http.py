"""The HTTP/1.1 client for the calls to providers: a keep-alive pool per origin.

    client = UpstreamClient(limit=100, ssl_context=verified_context())
    resp = await client.request("POST", url, headers, body, connect=10.0, first_byte=300.0)
    try:
        resp.set_read_timeout(120.0)  # the headers are in: now the idle limit
        data = await resp.read()      # or: while chunk := await resp.readany(): ...
    finally:
        resp.release()                # back to the pool if the answer was read whole

It does what the forwarder needs and nothing else (no redirects, cookies,
proxies or retries of a request that may have reached the provider), which
is most of what a general client spends per call. A body is delivered as it
arrives (Content-Length, chunked, or up to the connection's end) and gzip
or deflate is decoded, as aiohttp's client does for an `Accept-Encoding` it
sends by default: as it is read, at most 64 KiB per read, so that a small
body unpacking to gigabytes costs only what is read of it. A whole-body
`read()` takes at most the client's `max_body` bytes (64 MiB by default,
measured decoded); a stream read piece by piece with `readany()` has no
bound in total. A connection goes back to the pool only when its answer
was read whole and nothing followed it: bytes after the answer's end, or
arriving while it idles, close it, as does an answer that ended while the
socket was not being read (what may wait in it is unseen). Errors:

    UpstreamHTTPError       the connection failed or the answer is broken (cut short, bad framing)
    ├── ConnectTimeout      also a TimeoutError: no connection within `connect` seconds
    └── BodyTooLarge        a whole-body read past `max_body`; the connection is closed
    TimeoutError            no byte within the read timeout (first byte, then idle)

One module past 400 lines: the parser, the pool and the response share
one connection's state (its framing, timer and keep-alive verdict); apart,
each would reach into the others' insides.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import zlib
from collections import deque
from collections.abc import Mapping
from typing import cast

import yarl

from .upstream_dns import DNS_TTL_SECONDS, Address, AddressCache

__all__ = [
    "MAX_BODY",
    "UNVERIFIED",
    "VERIFIED",
    "BodyTooLarge",
    "ConnectTimeout",
    "Response",
    "UpstreamClient",
    "UpstreamHTTPError",
    "unverified_context",
    "verified_context",
]

# A response head (status line and headers) larger than this is refused:
# a provider sending headers without end must not fill the memory.
MAX_HEAD = 64 * 1024
MAX_HEADERS = 128
# The default bound of a whole-body read (decoded bytes): far above what a
# model answers, far below what would hurt the process.
MAX_BODY = 64 * 1024 * 1024
# Interim (1xx) heads taken before the answer's own.
MAX_INTERIM = 16
# Buffered body bytes (as they came: compressed ones are counted before
# decoding) past which the socket stops being read until the reader catches up.
_HIGH_WATER = 256 * 1024
# A compressed body is decoded as it is read, at most this much per read:
# a small body that unpacks to gigabytes costs what is read of it.
_DECODE_PIECE = 64 * 1024
# A gzip body may be several members one after the other (RFC 1952), each
# decoded in turn up to this many; other bytes after the end are an error.
_MAX_GZIP_MEMBERS = 1024
# An idle connection older than this is closed rather than reused (aiohttp's
# default), before the provider's own keep-alive limit closes it under a request.
KEEPALIVE_SECONDS = 15.0
_DEFAULT_ACCEPT_ENCODING = "gzip, deflate"
# The body's framing and the connection's fate are the client's to say.
_FRAMING = frozenset({"content-length", "transfer-encoding", "connection"})

_HEAD, _LENGTH, _CHUNKED, _UNTIL_EOF, _DONE = range(5)
_HEX_DIGITS = b"0123456789abcdefABCDEF"
# A header name's characters (RFC 9110 token), and the control characters
# with CR (a head has none but the tab, and the CR LF or LF ending a line).
_TOKEN = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_CONTROL_OR_CR = bytes([*range(9), *range(11, 32), 127])


class UpstreamHTTPError(Exception):
    """The provider could not be reached, or its answer broke off or is malformed."""


class ConnectTimeout(UpstreamHTTPError, TimeoutError):
    """No connection (TCP and TLS) within the connect timeout."""


class BodyTooLarge(UpstreamHTTPError):
    """A whole-body read past the client's `max_body`: announced larger, or
    grown past it (a broken or hostile provider must not fill the memory)."""


def verified_context() -> ssl.SSLContext:
    """The system's CAs, host names checked (what aiohttp's `ssl=True` uses)."""
    context = ssl.create_default_context()
    context.set_alpn_protocols(("http/1.1",))
    return context


def unverified_context() -> ssl.SSLContext:
    """TLS without certificate checks (a provider's `verify_tls: false`)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.options |= ssl.OP_NO_COMPRESSION
    context.set_alpn_protocols(("http/1.1",))
    return context


# Made once at import, as aiohttp makes its own: loading the system's CAs
# takes tens of milliseconds, too long for the event loop, where a reload
# starts new clients.
VERIFIED = verified_context()
UNVERIFIED = unverified_context()


class _Origin:
    """Where a URL's request goes: its pool key, address and request target."""

    __slots__ = ("host", "host_header", "key", "numeric", "port", "target", "tls")

    def __init__(self, url: str) -> None:
        parsed = yarl.URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.raw_host:
            raise ValueError("an upstream URL is http:// or https:// with a host")
        self.tls = parsed.scheme == "https"
        self.host = parsed.raw_host
        try:
            ipaddress.ip_address(self.host)
            self.numeric = True  # an address: nothing to resolve
        except ValueError:
            self.numeric = False
        self.port = parsed.port or (443 if self.tls else 80)
        self.key = (self.tls, self.host, self.port)
        self.host_header = parsed.host_port_subcomponent or self.host
        self.target = parsed.raw_path_qs


class _Connection(asyncio.Protocol):
    """One socket to a provider, parsing one response at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, pool: _Pool) -> None:
        self.loop = loop
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self.state = _DONE
        self.head = bytearray()  # an unfinished head
        self.interim = 0
        self.status = 0
        self.headers: dict[str, str] = {}
        self.header_items: list[tuple[str, str]] = []
        self.head_waiter: asyncio.Future[None] | None = None
        self.keep_alive = False
        self.remaining = 0  # body bytes still due (Content-Length) or in this chunk
        self.length = -1  # the announced Content-Length, if any
        self.chunk_buf = b""  # unparsed chunked framing
        self.chunk_state = 0  # 0 size line, 1 data, 2 CRLF after data, 3 trailers
        self.decoder: zlib._Decompress | None = None
        self.deflate_unsure = False  # "deflate" may come without its zlib header
        self.decoded = False  # whether the decoder was given any byte
        self.undecoded = b""  # compressed bytes the last read left for the next
        self.decoder_full = False  # the last read filled its piece: more may be inside
        self.gzip_members = 0  # gzip members begun (0: deflate, a single stream)
        self.body: list[bytes] = []  # as it came, compressed or not
        self.buffered = 0
        self.eof = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.timeout = 0.0
        self.last_read = 0.0
        self.paused = False
        self.method_head = False
        self.chunked = False

    # -- asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.state == _UNTIL_EOF:
            self._finish_body()
        elif self.state != _DONE and self.error is None:
            self._fail(UpstreamHTTPError("The provider closed the connection mid-answer."))
        self._cancel_timer()

    def data_received(self, data: bytes) -> None:
        state = self.state
        if state == _HEAD:
            # One deadline for the whole head (start + first byte), however it trickles.
            self._feed_head(data)
            return
        self.last_read = self.loop.time()
        if state == _LENGTH:
            self._feed_length(data)
        elif state == _CHUNKED:
            self._feed_chunked(data)
        elif state == _UNTIL_EOF:
            self._emit(data)
        else:
            # Bytes nobody asked for: the connection cannot be trusted again.
            self.keep_alive = False
            self.close()

    def eof_received(self) -> bool | None:
        return None  # the transport closes; connection_lost ends the body or fails it

    # -- parsing ----------------------------------------------------------------

    def _feed_head(self, data: bytes) -> None:
        buf: bytes | bytearray = data
        start = 0
        if self.head:  # searched again from the last bytes that may begin the end
            start = len(self.head) - 3
            self.head += data
            buf = self.head
        while True:
            # The head ends at its first empty line; a line may end in a
            # bare LF (as aiohttp reads it) rather than CR LF.
            end = buf.find(b"\n\r\n", start)
            skip = 3
            bare = buf.find(b"\n\n", start, end if end >= 0 else len(buf))
            if bare >= 0:
                end, skip = bare, 2
            if end < 0 and len(buf) <= MAX_HEAD:
                if buf is not self.head:
                    self.head = bytearray(buf)
                return
            if end < 0 or end > MAX_HEAD:
                self._broken("The provider's response headers are too large.")
                return
            rest = bytes(buf[end + skip :])
            stop = end - 1 if end and buf[end - 1] == 13 else end  # without the last line's CR
            try:
                informational = self._parse_head(bytes(buf[:stop]))
            except (ValueError, UnicodeDecodeError):
                self._broken("The provider sent a malformed response head.")
                return
            if not informational:
                break
            # 1xx: the real answer follows, after at most MAX_INTERIM of them.
            self.interim += 1
            if self.interim > MAX_INTERIM:
                self._broken("The provider sent too many interim responses.")
                return
            self.headers, self.header_items = {}, []
            self.head = bytearray()
            if not rest:
                return
            buf, start = rest, 0
        if self.head:
            self.head = bytearray()
        self.last_read = self.loop.time()  # the head is in: the idle limit counts from here
        waiter = self.head_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        state = self.state
        if state == _DONE:
            self._finish_body()
            if rest:
                self.keep_alive = False
        elif not rest:
            pass
        elif state == _LENGTH:
            self._feed_length(rest)
        elif state == _CHUNKED:
            self._feed_chunked(rest)
        else:
            self._emit(rest)

    def _parse_head(self, head: bytes) -> bool:
        lines = head.split(b"\r\n")
        crlf = len(lines) - 1
        if head.count(b"\n") != crlf:  # some lines end in a bare LF
            crlf = head.count(b"\r\n")
            lines = [line.removesuffix(b"\r") for line in head.split(b"\n")]
        if len(lines) > MAX_HEADERS + 1:
            raise ValueError("too many headers")
        # No NUL, bare CR or other control character (but the tab): the
        # only ones taken out are the CRs of CR LF.
        if len(head.translate(None, _CONTROL_OR_CR)) != len(head) - crlf:
            raise ValueError("control character")
        version, _, rest = lines[0].partition(b" ")
        # Three digits, then the reason after a space, or nothing.
        if (
            version not in (b"HTTP/1.1", b"HTTP/1.0")
            or not rest[:3].isdigit()
            or len(rest) < 3
            or rest[3:4] not in (b"", b" ")
            or rest[0] == 48  # "0xx"
        ):
            raise ValueError("status line")
        status = int(rest[:3])
        headers: dict[str, str] = {}
        items: list[tuple[str, str]] = []
        for line in lines[1:]:
            raw_name, sep, raw_value = line.partition(b":")
            if not sep or not raw_name or raw_name.strip(_TOKEN):
                raise ValueError("header line")
            name = raw_name.decode("ascii").lower()
            value = raw_value.strip(b" \t").decode("utf-8", "surrogateescape")
            items.append((name, value))
            if name not in headers:
                headers[name] = value
        if status < 200:
            if status == 101:  # a protocol switch was never asked for
                raise ValueError("status 101")
            return True
        self.status, self.headers, self.header_items = status, headers, items
        connection = headers.get("connection", "").lower()
        if version == b"HTTP/1.1":
            self.keep_alive = "close" not in connection
        else:
            self.keep_alive = "keep-alive" in connection
        encoding = headers.get("content-encoding", "").strip().lower()
        if encoding in ("gzip", "x-gzip"):
            self.decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
            self.gzip_members = 1
        elif encoding == "deflate":
            self.decoder = zlib.decompressobj(zlib.MAX_WBITS)
            self.deflate_unsure = True
        if "transfer-encoding" in headers:
            # With a length as well, or in HTTP/1.0, the framing is ambiguous
            # (one reader's body is another's next answer): refused.
            if "content-length" in headers or version == b"HTTP/1.0":
                raise ValueError("transfer-encoding")
            codings = ",".join(v for n, v in items if n == "transfer-encoding").lower().split(",")
            self.chunked = codings[-1].strip() == "chunked"
            if not self.chunked:  # the body ends with the connection (RFC 9112 6.3)
                self.keep_alive = False
        if status in (204, 304) or self.method_head:
            self.state = _DONE
        elif self.chunked:
            self.state = _CHUNKED
        elif "transfer-encoding" in headers:
            self.state = _UNTIL_EOF
        elif "content-length" in headers:
            lengths = {v for n, v in items if n == "content-length"}
            if len(lengths) != 1:
                raise ValueError("content-length")
            text = lengths.pop()
            if not text.isascii() or not text.isdigit():
                raise ValueError("content-length")
            self.remaining = self.length = int(text)
            self.state = _LENGTH if self.remaining else _DONE
        else:
            self.state = _UNTIL_EOF
            self.keep_alive = False
        return False

    def _feed_length(self, data: bytes) -> None:
        remaining = self.remaining
        if len(data) < remaining:
            self.remaining = remaining - len(data)
            self._emit(data)
            return
        if len(data) > remaining:
            self.keep_alive = False  # more than announced: never reused
            data = data[:remaining]
        self.remaining = 0
        self._emit(data)
        self._finish_body()

    def _feed_chunked(self, data: bytes) -> None:
        buf = self.chunk_buf + data if self.chunk_buf else data
        self.chunk_buf = b""
        pos = 0
        while pos < len(buf) and self.state == _CHUNKED:
            step = self.chunk_state
            if step == 1:
                take = min(self.remaining, len(buf) - pos)
                self._emit(buf[pos : pos + take])
                pos += take
                self.remaining -= take
                if not self.remaining:
                    self.chunk_state = 2
                continue
            end = buf.find(b"\r\n", pos)
            if end < 0:
                if len(buf) - pos > 4096:
                    self._broken("The provider sent a malformed chunk.")
                    return
                self.chunk_buf = buf[pos:]
                return
            line = buf[pos:end]
            pos = end + 2
            if step == 0:
                size = line.split(b";", 1)[0].strip(b" \t")
                # Hex digits only (int() would also take "0x", "_", "+").
                if not size or size.strip(_HEX_DIGITS):
                    self._broken("The provider sent a malformed chunk.")
                    return
                self.remaining = int(size, 16)
                self.chunk_state = 1 if self.remaining else 3
            elif step == 2:
                if line:
                    self._broken("The provider sent a malformed chunk.")
                    return
                self.chunk_state = 0
            elif not line:  # the empty line after the trailers
                if pos < len(buf):
                    self.keep_alive = False
                self._finish_body()

    def _emit(self, data: bytes) -> None:
        if data:
            self.body.append(data)
            self.buffered += len(data)
            if self.buffered > _HIGH_WATER and not self.paused and self.transport is not None:
                self.paused = True
                self.transport.pause_reading()
            self._wake()

    def _finish_body(self) -> None:
        if self.paused:
            # The socket is not being read: bytes after the answer (a broken
            # provider's) may wait in it, to be read as the next request's
            # answer. Whatever arrives while the answer is read or the
            # connection idles closes it (data_received), but these would
            # come only once it is reused.
            self.keep_alive = False
        self.state = _DONE
        self.eof = True
        self._cancel_timer()
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        self.error = exc
        self.keep_alive = False
        self.state = _DONE
        waiter = self.head_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self._wake()

    def _broken(
        self, message: str, kind: type[UpstreamHTTPError] = UpstreamHTTPError
    ) -> UpstreamHTTPError:
        """The answer is malformed (or refused): the reader gets this error, and
        the connection, whose framing can no longer be trusted, is closed."""
        exc = kind(message)
        self._fail(exc)
        self.close()
        return exc

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- timers -----------------------------------------------------------------

    def _arm_timer(self) -> None:
        deadline = self.last_read + self.timeout
        timer = self.timer
        if timer is not None:
            if timer.when() <= deadline:
                return
            timer.cancel()
        self.timer = self.loop.call_at(deadline, self._on_timer)

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _on_timer(self) -> None:
        self.timer = None
        waiting = [w for w in (self.head_waiter, self.waiter) if w is not None and not w.done()]
        if not waiting:
            return
        if self.loop.time() >= self.last_read + self.timeout:
            for w in waiting:
                w.set_exception(TimeoutError())
        else:
            self._arm_timer()

    # -- the reader's side --------------------------------------------------------

    async def wait_head(self) -> None:
        if self.status or self.error is not None:
            if self.error is not None:
                raise self.error
            return
        self.head_waiter = self.loop.create_future()
        self._arm_timer()
        try:
            await self.head_waiter
        finally:
            self.head_waiter = None

    async def _more(self) -> None:
        """Wait for the next bytes (or the end, or an error) under the read timeout."""
        self.waiter = self.loop.create_future()
        self._arm_timer()
        try:
            await self.waiter
        finally:
            self.waiter = None

    async def readany(self) -> bytes:
        if self.decoder is not None:
            return await self._read_decoded()
        while not self.body:
            if self.error is not None:
                raise self.error
            if self.eof:
                return b""
            await self._more()
        data = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        self.body.clear()
        self.buffered = 0
        if self.paused:
            self._resume()
        return data

    def _resume(self) -> None:
        if self.transport is not None:
            # Paused for a slow reader: the silence was ours, not the provider's.
            self.paused = False
            self.last_read = self.loop.time()
            self.transport.resume_reading()

    async def _read_decoded(self) -> bytes:
        """The next piece (at most _DECODE_PIECE bytes) of a compressed body, decoded."""
        decoder = self.decoder
        assert decoder is not None
        while True:
            if self.body or self.undecoded or self.decoder_full:
                body = self.body
                data = self.undecoded
                if body:
                    data = data + b"".join(body) if data or len(body) > 1 else body[0]
                    body.clear()
                if self.deflate_unsure and data:
                    self.deflate_unsure = False
                    if data[0] & 0x0F != 8:  # no zlib header: raw deflate, as aiohttp reads it
                        decoder = self.decoder = zlib.decompressobj(-zlib.MAX_WBITS)
                self.decoded = self.decoded or bool(data)
                try:
                    out = decoder.decompress(data, _DECODE_PIECE)
                except zlib.error:
                    raise self._broken("The provider's compressed answer is corrupt.") from None
                self.undecoded = decoder.unconsumed_tail
                self.decoder_full = len(out) == _DECODE_PIECE
                if decoder.eof and decoder.unused_data:
                    after = decoder.unused_data
                    if (
                        not self.gzip_members
                        or not b"\x1f\x8b".startswith(after[:2])
                        or self.gzip_members >= _MAX_GZIP_MEMBERS
                    ):
                        raise self._broken("The provider's compressed answer is corrupt.")
                    self.gzip_members += 1
                    decoder = self.decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
                    self.undecoded = after
                self.buffered = len(self.undecoded)
                if self.paused and self.buffered <= _HIGH_WATER:
                    self._resume()
                if out:
                    return out
                continue
            if self.error is not None:
                raise self.error
            if self.eof:
                if self.decoded and not decoder.eof:  # an empty body has nothing to decode
                    exc = UpstreamHTTPError("The provider's compressed answer is cut short.")
                    self._fail(exc)
                    raise exc
                return b""
            await self._more()

    def close(self) -> None:
        self.closed = True
        self._cancel_timer()
        if self.transport is not None:
            self.transport.close()


class Response:
    """One answer: status and headers at once, the body read as it comes."""

    __slots__ = ("_client", "_conn", "_released", "header_items", "headers", "status")

    def __init__(self, conn: _Connection, client: UpstreamClient) -> None:
        self.status = conn.status
        # Lower-case names; for a repeated name the first value (all are in header_items).
        self.headers: Mapping[str, str] = conn.headers
        self.header_items = conn.header_items
        self._conn = conn
        self._client = client
        self._released = False

    def set_read_timeout(self, seconds: float) -> None:
        """The longest silence from now on (the first-byte limit until then)."""
        self._conn.timeout = seconds

    async def readany(self) -> bytes:
        """The bytes that arrived since the last read (waiting for some); b"" at the end."""
        if self._released:  # the connection may carry another answer by now
            raise UpstreamHTTPError("The response was released.")
        return await self._conn.readany()

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body, or its first `limit` bytes.

        Unless `limit` is within it, the client's `max_body` bounds the read:
        a body past it raises BodyTooLarge and the connection is closed, at
        once when its Content-Length says so (nothing of it is read), else
        as soon as the bytes read pass the bound (a compressed body is
        measured decoded).
        """
        if self._released:
            raise UpstreamHTTPError("The response was released.")
        conn = self._conn
        cap = self._client.max_body
        bounded = limit is None or limit > cap
        if bounded and conn.length > cap and conn.decoder is None:
            raise conn._broken(f"The answer is larger than {cap} bytes.", BodyTooLarge)
        parts: list[bytes] = []
        size = 0
        while limit is None or size < limit:
            chunk = await conn.readany()
            if not chunk:
                break
            size += len(chunk)
            if bounded and size > cap:
                raise conn._broken(f"The answer is larger than {cap} bytes.", BodyTooLarge)
            parts.append(chunk)
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        return data if limit is None else data[:limit]

    def release(self) -> None:
        """Back to the pool if the answer was read whole, else the connection is closed.
        The response cannot be read after."""
        if self._released:
            return
        self._released = True
        self._client._release(self._conn)


class _Pool:
    __slots__ = ("count", "idle", "waiters")

    def __init__(self) -> None:
        self.idle: list[_Connection] = []
        self.count = 0  # connections open or opening
        self.waiters: deque[asyncio.Future[None]] = deque()


class UpstreamClient:
    """Keep-alive connections to providers, at most `limit` per origin.

    `max_body` bounds what one `Response.read()` takes (see there). A host
    name is resolved once per `dns_ttl` seconds for all its new connections
    (`upstream_dns`); each connection tries the addresses in turn, and when
    none can be reached the name is resolved afresh for the next. TLS checks
    the certificate against the name.
    """

    def __init__(
        self,
        limit: int,
        ssl_context: ssl.SSLContext | None = None,
        *,
        max_body: int = MAX_BODY,
        dns_ttl: float = DNS_TTL_SECONDS,
    ) -> None:
        self.limit = limit
        self.max_body = max_body
        self.ssl_context = ssl_context if ssl_context is not None else VERIFIED
        self.closed = False
        self._pools: dict[tuple[bool, str, int], _Pool] = {}
        self._origins: dict[str, _Origin] = {}
        self._names = AddressCache(dns_ttl)

    def _origin(self, url: str) -> _Origin:
        origin = self._origins.get(url)
        if origin is None:
            origin = _Origin(url)
            if len(self._origins) >= 4096:  # URLs come from the config; bounded anyway
                self._origins.clear()
            self._origins[url] = origin
        return origin

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        connect: float,
        first_byte: float,
    ) -> Response:
        """Send one request and wait for the response head.

        `headers` have lower-case names; Content-Length is added (and any
        framing header given is dropped), and Host, Accept, Accept-Encoding
        and Content-Type (application/octet-stream) when absent, as
        aiohttp's client adds them. A request is sent once:
        only a pooled connection found closed, or one whose send failed at
        once, is replaced by a new one before anything reached the provider.
        """
        if self.closed:
            raise UpstreamHTTPError("The client is closed.")
        origin = self._origin(url)
        lines = [f"{method} {origin.target} HTTP/1.1\r\n"]
        if "host" not in headers:
            lines.append(f"host: {origin.host_header}\r\n")
        for name, value in headers.items():
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                raise ValueError("Newline or carriage return character detected in a header")
            if name not in _FRAMING:
                lines.append(f"{name}: {value}\r\n")
        if "accept" not in headers:
            lines.append("accept: */*\r\n")
        if "accept-encoding" not in headers:
            lines.append(f"accept-encoding: {_DEFAULT_ACCEPT_ENCODING}\r\n")
        if "content-type" not in headers:
            lines.append("content-type: application/octet-stream\r\n")
        lines.append(f"content-length: {len(body)}\r\n\r\n")
        payload = "".join(lines).encode("utf-8", "surrogateescape") + body

        pool = self._pools.get(origin.key)
        if pool is None:
            pool = self._pools[origin.key] = _Pool()
        while True:
            conn, reused = await self._acquire(pool, origin, connect)
            conn._reset()
            conn.state = _HEAD
            conn.method_head = method == "HEAD"
            conn.timeout = first_byte
            conn.last_read = conn.loop.time()
            assert conn.transport is not None
            conn.transport.write(payload)
            if reused and (conn.closed or conn.transport.is_closing()):
                # The send failed at once: nothing reached the provider.
                self._discard(pool, conn)
                continue
            break
        try:
            await conn.wait_head()
        except BaseException:
            self._discard(pool, conn)
            raise
        return Response(conn, self)

    async def _acquire(
        self, pool: _Pool, origin: _Origin, connect: float
    ) -> tuple[_Connection, bool]:
        while True:
            idle = pool.idle
            while idle:
                conn = idle.pop()
                assert conn.transport is not None
                if (
                    conn.closed
                    or conn.transport.is_closing()
                    or conn.loop.time() - conn.idle_since > KEEPALIVE_SECONDS
                ):
                    self._discard(pool, conn)
                else:
                    return conn, True
            if pool.count < self.limit:
                pool.count += 1
                try:
                    return await self._connect(pool, origin, connect), False
                except BaseException:
                    pool.count -= 1
                    self._wake(pool)
                    raise
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            pool.waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter in pool.waiters:
                    pool.waiters.remove(waiter)
                elif not waiter.cancelled():
                    self._wake(pool)  # woken then cancelled: pass the turn on
                raise

    async def _connect(self, pool: _Pool, origin: _Origin, seconds: float) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(seconds):
                if origin.numeric:
                    return await self._open(loop, pool, origin, (0, origin.host, origin.port))
                names = self._names
                addresses = await names.addresses(origin.host, origin.port)
                failure: OSError | None = None
                for address in addresses:
                    try:
                        conn = await self._open(loop, pool, origin, address)
                    except ssl.SSLError:
                        raise  # the provider's TLS, not its address
                    except OSError as e:
                        failure = e
                        continue
                    if address is not addresses[0]:
                        names.prefer(origin.host, origin.port, addresses, address)
                    return conn
                names.forget(origin.host, origin.port)
                assert failure is not None
                raise failure
        except TimeoutError:
            self._names.forget(origin.host, origin.port)
            raise ConnectTimeout(f"No connection within {seconds:g} s.") from None
        except OSError as e:  # refused, unreachable, DNS, TLS (ssl.SSLError is an OSError)
            raise UpstreamHTTPError(f"The connection failed ({type(e).__name__}).") from e

    async def _open(
        self,
        loop: asyncio.AbstractEventLoop,
        pool: _Pool,
        origin: _Origin,
        address: Address,
    ) -> _Connection:
        family, host, port = address
        _, conn = await loop.create_connection(
            lambda: _Connection(loop, pool),
            host,  # an address: create_connection resolves nothing
            port,
            family=family,
            ssl=self.ssl_context if origin.tls else None,
            server_hostname=origin.host if origin.tls else None,
        )
        return conn

    def _wake(self, pool: _Pool) -> None:
        while pool.waiters:
            waiter = pool.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _discard(self, pool: _Pool, conn: _Connection) -> None:
        conn.close()
        pool.count -= 1
        self._wake(pool)

    def _release(self, conn: _Connection) -> None:
        pool = conn.pool
        transport = conn.transport
        if (
            conn.eof
            and conn.keep_alive
            and conn.error is None
            and not conn.closed
            and not self.closed
            and transport is not None
            and not transport.is_closing()
            # A request still being sent (the provider answered early) would
            # end in the next request's bytes: the connection is not reused.
            and not transport.get_write_buffer_size()
        ):
            conn._cancel_timer()
            if conn.paused:
                conn.paused = False
                transport.resume_reading()
            conn.idle_since = conn.loop.time()
            pool.idle.append(conn)
            self._wake(pool)
        else:
            self._discard(pool, conn)

    async def close(self) -> None:
        self.closed = True
        for pool in self._pools.values():
            for conn in pool.idle:
                conn.close()
            pool.count -= len(pool.idle)
            pool.idle.clear()
