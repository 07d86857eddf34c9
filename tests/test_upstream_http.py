"""The upstream client against real loopback servers: aiohttp's for the
well-behaved cases, raw asyncio servers for what a broken or hostile
provider does (stalls, endless headers, bad framing, closing mid-answer or
while a connection idles in the pool), and a TLS server with its own CA."""

from __future__ import annotations

import asyncio
import datetime
import gzip
import ipaddress
import socket
import ssl
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lunos_proxy.upstream_http import (
    BodyTooLarge,
    ConnectTimeout,
    UpstreamClient,
    UpstreamHTTPError,
    unverified_context,
    verified_context,
)
from tests.fakes import start_site

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
JSON = {"content-type": "application/json"}


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head, await reader.readexactly(length)


class Raw:
    """A raw TCP server: counts connections and requests, runs `handler` per connection."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests = 0
        self.server: asyncio.Server | None = None
        self.url = ""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> Raw:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=ssl_context)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}/v1/chat/completions"
        return self


@pytest.fixture
async def raw() -> AsyncIterator[Callable[[Handler], Awaitable[Raw]]]:
    servers: list[Raw] = []

    async def make(handler: Handler) -> Raw:
        server = await Raw(handler).start()
        servers.append(server)
        return server

    yield make
    for s in servers:
        assert s.server is not None
        s.server.close()


@pytest.fixture
async def client() -> AsyncIterator[UpstreamClient]:
    c = UpstreamClient(limit=4, ssl_context=unverified_context())
    yield c
    await c.close()


async def post(client: UpstreamClient, url: str, body: bytes = b"{}", first_byte: float = 5.0) -> bytes:
    resp = await client.request("POST", url, JSON, body, connect=5.0, first_byte=first_byte)
    try:
        return await resp.read()
    finally:
        resp.release()


# -- keep-alive and the pool ----------------------------------------------------


@pytest.fixture
async def app_url() -> AsyncIterator[tuple[str, list[tuple[str, dict[str, str], bytes]]]]:
    seen: list[tuple[str, dict[str, str], bytes]] = []

    async def answer(request: web.Request) -> web.Response:
        assert request.transport is not None
        peer = request.transport.get_extra_info("peername")
        seen.append((f"{peer[1]}", dict(request.headers), await request.read()))
        n = len(seen)
        if request.query.get("wait"):
            await asyncio.sleep(float(request.query["wait"]))
        return web.json_response({"n": n})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    port = await start_site(runner)
    yield f"http://127.0.0.1:{port}/v1/chat/completions", seen
    await runner.cleanup()


async def test_a_connection_is_kept_alive_and_reused_for_the_next_request(
    client: UpstreamClient, app_url: tuple[str, list[tuple[str, dict[str, str], bytes]]]
) -> None:
    url, seen = app_url
    assert await post(client, url, b'{"a": 1}') == b'{"n": 1}'
    assert await post(client, url, b'{"a": 2}') == b'{"n": 2}'
    assert seen[0][0] == seen[1][0]  # one client port: one connection
    assert seen[1][2] == b'{"a": 2}'
    headers = {k.lower(): v for k, v in seen[0][1].items()}
    assert headers["host"] == url.split("/")[2]
    assert (headers["accept"], headers["accept-encoding"]) == ("*/*", "gzip, deflate")
    assert (headers["content-type"], headers["content-length"]) == ("application/json", "8")
    resp = await client.request("POST", url + "?x=1", {}, b"", connect=5, first_byte=5)
    assert (resp.status, await resp.read()) == (200, b'{"n": 3}')
    resp.release()
    assert seen[2][1]["Content-Type"] == "application/octet-stream"  # as aiohttp's client
    assert seen[2][1]["Content-Length"] == "0" and seen[2][0] == seen[0][0]


async def test_a_released_response_cannot_read_the_connections_next_answer(
    client: UpstreamClient, app_url: tuple[str, list[tuple[str, dict[str, str], bytes]]]
) -> None:
    url, seen = app_url
    first = await client.request("POST", url, JSON, b"{}", connect=5, first_byte=5)
    assert await first.read() == b'{"n": 1}'
    first.release()
    second = await client.request("POST", url, JSON, b"{}", connect=5, first_byte=5)
    for stale_read in (first.readany, first.read):
        with pytest.raises(UpstreamHTTPError, match="released"):
            await stale_read()
    assert await second.read() == b'{"n": 2}'
    second.release()
    assert seen[0][0] == seen[1][0]  # one connection: the stale response's was reused


async def test_concurrent_requests_never_open_more_connections_than_the_limit(
    app_url: tuple[str, list[tuple[str, dict[str, str], bytes]]],
) -> None:
    url, seen = app_url
    c = UpstreamClient(limit=2)
    try:
        answers = await asyncio.gather(*(post(c, url + "?wait=0.05") for _ in range(6)))
    finally:
        await c.close()
    assert sorted(answers) == sorted(f'{{"n": {i}}}'.encode() for i in range(1, 7))
    assert len({port for port, _, _ in seen}) == 2


async def test_a_request_cancelled_while_waiting_gives_its_connection_back(
    app_url: tuple[str, list[tuple[str, dict[str, str], bytes]]],
) -> None:
    url, seen = app_url
    c = UpstreamClient(limit=1)
    try:
        slow = asyncio.create_task(post(c, url + "?wait=5"))
        queued = asyncio.create_task(post(c, url))
        await asyncio.sleep(0.2)
        slow.cancel()
        queued.cancel()
        assert await asyncio.wait_for(post(c, url), 2) == b'{"n": 2}'
        assert len(seen) == 2  # the queued request was never sent
    finally:
        await c.close()


async def test_a_connection_the_provider_closed_while_idle_is_replaced(
    client: UpstreamClient, raw: Callable[[Handler], Awaitable[Raw]]
) -> None:
    async def answer_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()  # and close: a provider's keep-alive limit

    server = await raw(answer_then_close)
    assert await post(client, server.url) == b"ok"
    await asyncio.sleep(0.1)
    assert await post(client, server.url) == b"ok"
    assert server.connections == 2


async def test_a_request_the_provider_may_have_read_is_never_sent_again(
    client: UpstreamClient, raw: Callable[[Handler], Awaitable[Raw]]
) -> None:
    async def answer_once_then_drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        server.requests += 1
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await read_request(reader)
        server.requests += 1  # read, then the connection drops without an answer

    server = await raw(answer_once_then_drop)
    assert await post(client, server.url) == b"ok"
    with pytest.raises(UpstreamHTTPError):
        await post(client, server.url)
    await asyncio.sleep(0.1)
    assert (server.requests, server.connections) == (2, 1)


async def test_a_connection_still_sending_its_request_is_not_reused(
    client: UpstreamClient, raw: Callable[[Handler], Awaitable[Raw]]
) -> None:
    async def early(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if b"content-length: 2\r\n" in head:
            await reader.readexactly(2)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            await asyncio.sleep(1)
            return
        # Answers before reading the body, and never reads on.
        writer.write(b"HTTP/1.1 413 Too Large\r\nContent-Length: 2\r\n\r\n{}")
        await asyncio.sleep(5)

    server = await raw(early)
    big = b'{"pad": "' + b"x" * (16 << 20) + b'"}'
    resp = await client.request("POST", server.url, JSON, big, connect=5, first_byte=5)
    assert (resp.status, await resp.read()) == (413, b"{}")
    resp.release()
    assert await post(client, server.url, b"{}", first_byte=2) == b"ok"
    assert server.connections == 2


JUNK = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\njunk"


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst" + JUNK,
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n0\r\n\r\n" + JUNK,
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n0\r\nX-T: 1\r\n\r\n" + JUNK,
    b"HTTP/1.1 204 No Content\r\n\r\n" + JUNK,
], ids=["longer than its length", "after the last chunk", "after the trailers", "after a 204"])
@pytest.mark.parametrize("late", [False, True], ids=["same packet", "while idle"])
async def test_bytes_after_a_complete_answer_are_never_read_as_the_next_answer(
    client: UpstreamClient, raw: Callable[[Handler], Awaitable[Raw]], answer: bytes, late: bool
) -> None:
    cut = answer.index(JUNK)

    async def extra(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        if server.connections > 1:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond")
            await read_request(reader)
            return
        writer.write(answer[:cut] if late else answer)
        await writer.drain()
        if late:
            await asyncio.sleep(0.05)
            writer.write(JUNK)
        await read_request(reader)  # would be answered by the junk

    server = await raw(extra)
    assert await post(client, server.url) in (b"first", b"")
    await asyncio.sleep(0.15)
    assert await post(client, server.url) == b"second"
    assert server.connections == 2


async def test_a_body_that_ends_while_reading_is_paused_leaves_its_connection_unused(
    client: UpstreamClient, raw: Callable[[Handler], Awaitable[Raw]]
) -> None:
    # Past the buffer's high-water mark the socket is no longer read: bytes
    # after the answer would wait in it, unseen, for the next request.
    body = b"x" * (256 * 1024 + 1)

    async def junk_behind_a_large_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        if server.connections > 1:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond")
            await read_request(reader)
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
        await asyncio.sleep(0.1)  # the client has it all, and has stopped reading
        writer.write(JUNK)
        await read_request(reader)

    server = await raw(junk_behind_a_large_body)
    resp = await client.request("POST", server.url, JSON, b"{}", connect=5, first_byte=5)
    await asyncio.sleep(0.3)
    assert resp._conn.paused and resp._conn.eof
    assert await resp.read() == body
    resp.release()
    assert await post(client, server.url) == b"second"
    assert server.connections == 2


# -- bodies -------------------------------------------------------------------


async def test_a_chunked_body_is_read_chunk_by_chunk_as_it_arrives(
    client: UpstreamClient, raw: Callable[[Handler], Awaitable[Raw]]
) -> None:
    go_on = asyncio.Event()

    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n7;ext=1\r\ndata: 1\r\n")
        await go_on.wait()
        writer.write(b"A\r\n\n\ndata: 22\r\n0\r\nx-trailer: t\r\n\r\n")
        await read_request(reader)  # kept alive: a second request comes on it
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    server = await raw(chunked)
    resp = await client.request("POST", server.url, JSON, b"{}", connect=5, first_byte=5)
    assert resp.status == 200 and resp.headers["content-type"] == "text/event-stream"
    assert await asyncio.wait_for(resp.readany(), 2) == b"data: 1"
    go_on.set()
    rest = b""
    while chunk := await resp.readany():
        rest += chunk
    resp.release()
    assert rest == b"\n\ndata: 22"
    assert await post(client, server.url) == b"ok"
    assert server.connections == 1


async def test_a_body_without_length_ends_with_the_connection(
    client: UpstreamClient, raw: Callable[[Handler], Awaitable[Raw]]
) -> None:
    async def until_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\npart one, ")
        await asyncio.sleep(0.05)
        writer.write(b"part two")

    server = await raw(until_eof)
    assert await post(client, server.url) == b"part one, part two"
    assert await post(client, server.url) == b"part one, part two"
    assert server.connections == 2


async def test_gzip_is_decoded_and_other_bytes_pass_untouched(
    client: UpstreamClient, raw: Callable[[Handler], Awaitable[Raw]]
) -> None:
    packed = gzip.compress(b'{"answer": "unpacked"}')

    async def gzipped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
                     % len(packed) + packed)
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n\x1f\x8b\x00\xff")
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 0\r\n\r\n")

    server = await raw(gzipped)
    assert await post(client, server.url) == b'{"answer": "unpacked"}'
    assert await post(client, server.url) == b"\x1f\x8b\x00\xff"
    assert await post(client, server.url) == b""  # nothing to decode
    assert server.connections == 1


async def test_a_compressed_body_is_decoded_in_bounded_pieces_as_it_is_read(
    client: UpstreamClient, raw: Callable[[Handler], Awaitable[Raw]]
) -> None:
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    bomb = b"".join(packer.compress(zeros) for _ in range(256)) + packer.flush()  # 256 MiB
    text = b"".join(b'{"n": %d}\n' % i for i in range(300_000))  # ~3 MB, decoded in many pieces
    varied = gzip.compress(text)

    async def bombs(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            _, asked = await read_request(reader)
            body = varied if asked == b"varied" else bomb
            writer.write(b"HTTP/1.1 500 X\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
                         % len(body) + body)
            await writer.drain()

    server = await raw(bombs)
    resp = await client.request("POST", server.url, JSON, b"{}", connect=5, first_byte=5)
    first = await resp.readany()
    assert first == bytes(len(first)) and 0 < len(first) <= 64 * 1024
    resp.release()
    # The error path's read of the first 64 KiB decodes no more than that.
    resp = await client.request("POST", server.url, JSON, b"{}", connect=5, first_byte=5)
    assert await resp.read(64 * 1024) == bytes(64 * 1024)
    assert len(resp._conn.undecoded) > 0  # the rest is left compressed
    resp.release()
    assert await post(client, server.url, b"varied") == text


async def test_each_member_of_a_gzip_body_is_decoded_and_bytes_after_the_end_are_an_error(
    client: UpstreamClient, raw: Callable[[Handler], Awaitable[Raw]]
) -> None:
    first, second = gzip.compress(b'{"a": 1, '), gzip.compress(b'"b": 2}')
    answers = {
        b"one write": [first + second + gzip.compress(b"")],
        b"split": [first, second[:1], second[1:]],  # the next member starts in a later packet
        b"junk": [first + b"junk"],
        b"deflate": [zlib.compress(b"{}") + b"\x1f\x8b"],  # one zlib stream, never members
    }

    async def members(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            _, asked = await read_request(reader)
            parts = answers[asked]
            coding = b"deflate" if asked == b"deflate" else b"gzip"
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: %s\r\nContent-Length: %d\r\n\r\n"
                         % (coding, sum(map(len, parts))))
            for part in parts:
                writer.write(part)
                await writer.drain()
                await asyncio.sleep(0.02)

    server = await raw(members)
    assert await post(client, server.url, b"one write") == b'{"a": 1, "b": 2}'
    assert await post(client, server.url, b"split") == b'{"a": 1, "b": 2}'
    for asked in (b"junk", b"deflate"):
        with pytest.raises(UpstreamHTTPError, match="corrupt"):
            await post(client, server.url, asked)


# -- the bound of a whole-body read ---------------------------------------------


async def test_a_body_announced_past_max_body_is_refused_unread_and_its_connection_closed(
    raw: Callable[[Handler], Awaitable[Raw]],
) -> None:
    closed = asyncio.Event()

    async def announced(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            _, asked = await read_request(reader)
            if asked == b"small":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                continue
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000000\r\n\r\n")  # no body yet
            await reader.read()
            closed.set()
            return

    server = await raw(announced)
    c = UpstreamClient(limit=1, max_body=1000)
    try:
        resp = await c.request("POST", server.url, JSON, b"big", connect=5, first_byte=5)
        with pytest.raises(BodyTooLarge, match="larger than 1000 bytes"):
            await asyncio.wait_for(resp.read(), 2)
        resp.release()
        await asyncio.wait_for(closed.wait(), 2)
        # A read within the bound takes what it asks for without the error.
        assert await post(c, server.url, b"small") == b"ok"
        assert server.connections == 2
    finally:
        await c.close()


async def test_an_endless_chunked_body_is_refused_once_past_max_body_but_streams_are_unbounded(
    raw: Callable[[Handler], Awaitable[Raw]],
) -> None:
    sent: list[int] = []

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        sent.append(0)
        while True:
            writer.write(b"400\r\n" + b"x" * 1024 + b"\r\n")
            await writer.drain()
            sent[-1] += 1024

    server = await raw(endless)
    c = UpstreamClient(limit=2, max_body=100_000)
    try:
        resp = await c.request("POST", server.url, JSON, b"{}", connect=5, first_byte=5)
        with pytest.raises(BodyTooLarge):
            await asyncio.wait_for(resp.read(), 5)
        assert resp._conn.closed
        resp.release()
        assert [len(p.idle) for p in c._pools.values()] == [0]  # not pooled
        # Piece by piece, the same body is read far past the bound.
        resp = await c.request("POST", server.url, JSON, b"{}", connect=5, first_byte=5)
        got = 0
        while got <= 1_000_000:
            got += len(await asyncio.wait_for(resp.readany(), 5))
        resp.release()
        # A read of the first bytes, within the bound, is no error either.
        resp = await c.request("POST", server.url, JSON, b"{}", connect=5, first_byte=5)
        assert await resp.read(5000) == b"x" * 5000
        resp.release()
    finally:
        await c.close()
    await asyncio.sleep(0.1)
    assert server.connections == 3  # none of them kept
    assert 100_000 < sent[0] < 100_000 + 16 * 1024 * 1024  # what the sockets buffer, not more


async def test_max_body_counts_the_decoded_bytes_of_a_compressed_body(
    raw: Callable[[Handler], Awaitable[Raw]],
) -> None:
    packed = gzip.compress(bytes(200_000))  # a few hundred bytes announced

    async def gzipped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
                         % len(packed) + packed)

    server = await raw(gzipped)
    c = UpstreamClient(limit=1, max_body=100_000)
    try:
        with pytest.raises(BodyTooLarge):
            await post(c, server.url)
        c.max_body = 200_000  # exactly the bound: whole
        assert await post(c, server.url) == bytes(200_000)
    finally:
        await c.close()
    assert server.connections == 2


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0_5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 5\r\n\r\nnotgz",
    b"HTTP/1.1 2xx OK\r\nContent-Length: 2\r\n\r\nok",
    b"\x00\x01garbage\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nContent-Length: \u0662\r\n\r\nhi".encode(),
    b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nhi",
    b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nhi",
    b"HTTP/1.1 099 OK\r\nContent-Length: 2\r\n\r\nhi",
    b"HTTP/1.1 200OK\r\nContent-Length: 2\r\n\r\nhi",
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\rX: y\r\nContent-Length: 2\r\n\r\nhi",
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\x00x\r\nContent-Length: 2\r\n\r\nhi",
    b"HTTP/1.1 200 OK\r\nX\tY: 1\r\nContent-Length: 2\r\n\r\nhi",
    b"HTTP/1.1 200 OK\r\nX(Y): 1\r\nContent-Length: 2\r\n\r\nhi",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
], ids=["cut short", "chunked cut short", "bad chunk size", "chunk size not hex", "no CRLF after a chunk",
        "two lengths", "corrupt gzip", "bad status", "no HTTP at all", "chunked and a length",
        "chunked in HTTP/1.0", "length in other digits", "length with a sign", "four-digit status",
        "status under 100", "no space after the status", "bare CR in a value",
        "NUL in a value", "tab in a name", "name not a token", "101"])
async def test_a_broken_answer_raises_the_upstream_error(
    client: UpstreamClient, raw: Callable[[Handler], Awaitable[Raw]], answer: bytes
) -> None:
    async def broken(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer)

    server = await raw(broken)
    with pytest.raises(UpstreamHTTPError):
        await asyncio.wait_for(post(client, server.url), 2)


async def test_a_body_whose_last_coding_is_not_chunked_ends_with_the_connection(
    client: UpstreamClient, raw: Callable[[Handler], Awaitable[Raw]]
) -> None:
    async def not_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n"
                     b"\r\n2\r\nhi\r\n0\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.1)

    server = await raw(not_chunked)
    assert await post(client, server.url) == b"2\r\nhi\r\n0\r\n\r\n"  # all of it, as it came
    assert await post(client, server.url) == b"2\r\nhi\r\n0\r\n\r\n"
    assert server.connections == 2


async def test_interim_heads_are_skipped_up_to_a_bound(
    client: UpstreamClient, raw: Callable[[Handler], Awaitable[Raw]]
) -> None:
    async def interim(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            _, asked = await read_request(reader)
            hint = b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
            writer.write(hint * int(asked) + b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    server = await raw(interim)
    assert await post(client, server.url, b"16") == b"ok"
    for many in (b"17", b"2000"):  # 2000 once overflowed the stack
        with pytest.raises(UpstreamHTTPError, match="interim"):
            await asyncio.wait_for(post(client, server.url, many), 2)


async def test_a_head_in_one_byte_packets_is_read_whatever_the_cut(
    client: UpstreamClient, raw: Callable[[Handler], Awaitable[Raw]]
) -> None:
    head = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 3000 + b"\r\nContent-Length: 2\r\n\r\nok"

    async def dribble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        for i in range(len(head)):
            writer.write(head[i : i + 1])
            await writer.drain()
            if i % 8 == 0:
                await asyncio.sleep(0)

    server = await raw(dribble)
    resp = await client.request("POST", server.url, JSON, b"{}", connect=5, first_byte=5)
    assert (resp.status, resp.headers["x-pad"], await resp.read()) == (200, "a" * 3000, b"ok")
    assert type(await resp.read()) is bytes
    resp.release()


async def test_head_lines_may_end_in_a_bare_lf(
    client: UpstreamClient, raw: Callable[[Handler], Awaitable[Raw]]
) -> None:
    answers = [
        b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\nSet-Cookie: a=b\r\nContent-Length: 3\n\r\nok!",
    ]

    async def lf(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for answer in answers:
            await read_request(reader)
            writer.write(answer)

    server = await raw(lf)
    assert await post(client, server.url) == b"ok"
    resp = await client.request("POST", server.url, JSON, b"{}", connect=5, first_byte=5)
    assert resp.header_items == [("content-type", "text/plain"), ("set-cookie", "a=b"), ("content-length", "3")]
    assert await resp.read() == b"ok!"
    resp.release()
    assert server.connections == 1


async def test_endless_headers_are_refused_once_past_the_bound(
    client: UpstreamClient, raw: Callable[[Handler], Awaitable[Raw]]
) -> None:
    sent = 0

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n")
        while True:
            line = b"x-filler: " + b"a" * 1000 + b"\r\n"
            writer.write(line)
            sent += len(line)
            await writer.drain()

    server = await raw(endless)
    with pytest.raises(UpstreamHTTPError, match="too large"):
        await asyncio.wait_for(post(client, server.url), 5)
    await asyncio.sleep(0.2)
    before = sent
    await asyncio.sleep(0.2)
    assert sent == before  # the connection is closed: nothing more is taken in


# -- timeouts and connection errors ----------------------------------------------


async def test_headers_slower_than_the_first_byte_limit_time_out(
    client: UpstreamClient, raw: Callable[[Handler], Awaitable[Raw]]
) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(10)

    server = await raw(silent)
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(TimeoutError) as e:
        await post(client, server.url, first_byte=0.3)
    assert not isinstance(e.value, UpstreamHTTPError)
    assert 0.25 < loop.time() - start < 2


async def test_a_head_sent_byte_by_byte_times_out_at_the_first_byte_limit(
    client: UpstreamClient, raw: Callable[[Handler], Awaitable[Raw]]
) -> None:
    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        for byte in b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 100:
            writer.write(bytes([byte]))
            await asyncio.sleep(0.05)

    server = await raw(trickle)
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(TimeoutError):
        await post(client, server.url, first_byte=0.4)
    assert 0.35 < loop.time() - start < 1.5  # one deadline, not one per byte


async def test_silence_mid_body_past_the_idle_limit_times_out(
    client: UpstreamClient, raw: Callable[[Handler], Awaitable[Raw]]
) -> None:
    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nfive.")
        await asyncio.sleep(10)

    server = await raw(stall)
    resp = await client.request("POST", server.url, JSON, b"{}", connect=5, first_byte=30)
    resp.set_read_timeout(0.3)
    try:
        assert await resp.readany() == b"five."
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(resp.readany(), 5)
    finally:
        resp.release()


async def test_a_refused_connection_is_an_upstream_error(client: UpstreamClient) -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(UpstreamHTTPError):
        await post(client, f"http://127.0.0.1:{port}/v1/chat/completions")


async def test_a_connection_that_never_completes_its_handshake_is_a_connect_timeout(
    client: UpstreamClient, raw: Callable[[Handler], Awaitable[Raw]]
) -> None:
    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(10)

    server = await raw(mute)
    url = server.url.replace("http://", "https://")
    with pytest.raises(ConnectTimeout):
        await client.request("POST", url, JSON, b"{}", connect=0.3, first_byte=30)


# -- name resolution ------------------------------------------------------------

AddrInfo = list[tuple[int, int, int, str, tuple[str, int]]]


@pytest.fixture
async def lookups(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """The loop's getaddrinfo calls (as host, port), still made for real."""
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo
    asked: list[tuple[str, int]] = []

    async def counted(host: str, port: int, *args: object, **kwargs: object) -> AddrInfo:
        asked.append((host, port))
        return await real(host, port, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(loop, "getaddrinfo", counted)
    return asked


async def answer_and_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    await asyncio.sleep(0.05)  # requests sent together each hold a connection
    writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")


async def test_a_host_name_is_resolved_once_per_ttl_for_all_its_new_connections(
    raw: Callable[[Handler], Awaitable[Raw]], lookups: list[tuple[str, int]]
) -> None:
    server = await raw(answer_and_close)
    url = server.url.replace("127.0.0.1", "localhost")
    port = int(url.split(":")[2].split("/")[0])
    c = UpstreamClient(limit=4, dns_ttl=0.5)
    try:
        assert await asyncio.gather(*(post(c, url) for _ in range(3))) == [b"ok"] * 3
        assert await post(c, url) == b"ok"
        assert await post(c, url) == b"ok"
        assert (server.connections, lookups) == (5, [("localhost", port)])
        await asyncio.sleep(0.6)  # past the TTL
        assert await post(c, url) == b"ok"
        assert await post(c, url) == b"ok"
        assert (server.connections, lookups) == (7, [("localhost", port)] * 2)
        # An address is not resolved at all.
        assert await post(c, server.url) == b"ok"
        assert len(lookups) == 2
    finally:
        await c.close()


async def test_an_address_that_fails_is_passed_over_and_a_name_whose_all_fail_resolved_again(
    raw: Callable[[Handler], Awaitable[Raw]], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await raw(answer_and_close)
    port = int(server.url.split(":")[2].split("/")[0])
    # Nothing listens on 127.0.0.2 and .3 (the server is on 127.0.0.1 only).
    answers: list[list[str]] = [["127.0.0.2", "127.0.0.1"], ["127.0.0.2", "127.0.0.3"], ["127.0.0.1"]]
    asked: list[str] = []

    async def resolve(host: str, port: int, *args: object, **kwargs: object) -> AddrInfo:
        asked.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in answers[len(asked) - 1]]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", resolve)
    url = server.url.replace("127.0.0.1", "provider.test")
    c = UpstreamClient(limit=4)
    try:
        assert await post(c, url) == b"ok"
        assert await post(c, url) == b"ok"  # the cached answer, the good address first
        assert c._names._addresses[("provider.test", port)][1][0][1] == "127.0.0.1"
        assert (asked, server.connections) == (["provider.test"], 2)
        c._names._addresses[("provider.test", port)] = (0.0, [])  # expired
        with pytest.raises(UpstreamHTTPError, match="ConnectionRefusedError"):
            await post(c, url)
        assert ("provider.test", port) not in c._names._addresses
        assert await post(c, url) == b"ok"  # resolved again at once, not after the TTL
        assert (asked, server.connections) == (["provider.test"] * 3, 3)
    finally:
        await c.close()


# -- TLS ------------------------------------------------------------------------


def _certificates(tmp: Path) -> tuple[Path, Path, Path]:
    """A CA and a certificate it signed for localhost and 127.0.0.1."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Lunos test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
        ]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = tmp / "ca.pem", tmp / "cert.pem", tmp / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return paths


async def test_tls_upstreams_are_verified_and_sent_the_server_name(tmp_path: Path) -> None:
    ca, cert, key = _certificates(tmp_path)
    names: list[str | None] = []
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    server_context.sni_callback = lambda sock, name, ctx: names.append(name)

    async def ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret")

    server = await Raw(ok).start(server_context)
    assert server.server is not None
    url = server.url.replace("127.0.0.1", "localhost")
    trusting = verified_context()
    trusting.load_verify_locations(ca)
    clients = [UpstreamClient(4, trusting), UpstreamClient(4, verified_context()),
               UpstreamClient(4, unverified_context())]
    try:
        assert await post(clients[0], url) == b"secret"
        assert names == ["localhost"]
        with pytest.raises(UpstreamHTTPError) as e:  # a CA the system does not know
            await post(clients[1], url)
        assert isinstance(e.value.__cause__, ssl.SSLCertVerificationError)
        assert await post(clients[2], url) == b"secret"  # verify_tls: false
    finally:
        for c in clients:
            await c.close()
        server.server.close()
