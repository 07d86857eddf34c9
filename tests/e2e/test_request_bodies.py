"""Compressed request bodies: never decoded before auth, refused by default,
decoded within the size limit where the config allows it, and forwarded plain.

Raw sockets where the test needs to control what is sent and when."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import gzip
import json
import time
import zlib
from functools import cache
from typing import Any

import aiohttp
import anthropic
import openai
import pytest

from bench.bomb import gzip_bomb
from tests.auth_support import STATIC_KEY, auth_config
from tests.conftest import GatewayFactory, Running
from tests.fakes import FakeProvider

CANARY = "canary-5c1d-compressed-prompt"
MIB = 1024 * 1024


@cache
def bomb() -> bytes:
    """2 GiB of zeros in about 2 MB of gzip (built once)."""
    return gzip_bomb(2)


def chat_body(model: str = "gpt-same", pad: int = 0) -> bytes:
    message = CANARY + " " + "x" * pad
    return json.dumps({"model": model, "messages": [{"role": "user", "content": message}]}).encode()


async def open_raw(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def bomb_gateway(make_gateway: GatewayFactory, provider: FakeProvider, decompression: bool) -> Running:
    """Auth on, bodies up to 4 MiB: the 2 MB bomb passes the length check."""
    return await make_gateway(auth_config(
        provider.base_url, server={"request_decompression": decompression, "max_body_bytes": 4 * MIB}
    ))


async def exchange_raw(
    url: str, head: str, body: bytes, *, read_timeout: float = 10.0
) -> tuple[int, dict[str, str], bytes]:
    """Send a request over a raw socket and read one response to it."""
    reader, writer = await open_raw(url)
    try:
        writer.write(head.encode() + body)
        return await read_response(reader, read_timeout)
    finally:
        writer.close()


async def read_response(reader: asyncio.StreamReader, within: float) -> tuple[int, dict[str, str], bytes]:
    async with asyncio.timeout(within):
        status_line = await reader.readline()
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body


def request_head(path: str, length: int, *, key: str | None = None, coding: str = "gzip") -> str:
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    return (
        f"POST {path} HTTP/1.1\r\nHost: lunos\r\nContent-Type: application/json\r\n"
        f"Content-Encoding: {coding}\r\nContent-Length: {length}\r\n{auth}\r\n"
    )


async def healthz_seconds(gw: Running) -> float:
    started = time.perf_counter()
    async with aiohttp.ClientSession() as s, s.get(gw.url + "/healthz") as r:
        assert r.status == 200
    return time.perf_counter() - started


@pytest.mark.parametrize("decompression", [False, True])
async def test_gzip_bomb_without_a_key_is_refused_at_once_and_stalls_no_one(
    make_gateway: GatewayFactory, provider: FakeProvider, decompression: bool
) -> None:
    gw = await bomb_gateway(make_gateway, provider, decompression)
    data = bomb()
    reader, writer = await open_raw(gw.url)
    started = time.perf_counter()
    writer.write(request_head("/v1/chat/completions", len(data)).encode())
    writer.write(data)  # sent while the answer is awaited
    healthz = asyncio.ensure_future(healthz_seconds(gw))
    status, _, body = await read_response(reader, 10.0)
    refused_after = time.perf_counter() - started
    with contextlib.suppress(ConnectionError):
        # Whatever of the bomb the server took before closing after its 401.
        await writer.drain()
    writer.close()
    assert status == 401
    assert json.loads(body)["error"]["code"] == "invalid_api_key"
    assert refused_after < 0.1
    assert await healthz < 0.1
    assert provider.received == []


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v1/chat/completions", {"error": {
            "message": "Compressed request bodies are not accepted; send the body uncompressed.",
            "type": "invalid_request_error", "param": None, "code": "unsupported_content_encoding"}}),
        ("/v1/messages", {"type": "error", "error": {
            "type": "invalid_request_error",
            "message": "Compressed request bodies are not accepted; send the body uncompressed."}}),
    ],
)
async def test_compressed_body_with_a_key_is_415_in_the_sdk_shape_by_default(
    make_gateway: GatewayFactory, provider: FakeProvider, path: str, expected: dict[str, Any]
) -> None:
    gw = await make_gateway(auth_config(provider.base_url))
    data = gzip.compress(chat_body())
    status, headers, body = await exchange_raw(
        gw.url, request_head(path, len(data), key=STATIC_KEY), data
    )
    assert (status, json.loads(body)) == (415, expected)
    assert headers["content-type"].startswith("application/json")
    assert provider.received == []


def raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


@pytest.mark.parametrize(
    ("coding", "encode"),
    [
        ("gzip", lambda b: gzip.compress(b, mtime=0)),
        ("x-gzip", lambda b: gzip.compress(b, mtime=0)),
        ("GZIP, identity", lambda b: gzip.compress(b, mtime=0)),
        ("gzip", lambda b: gzip.compress(b[:40], mtime=0) + gzip.compress(b[40:], mtime=0)),
        ("deflate", zlib.compress),
        ("deflate", raw_deflate),
    ],
    ids=["gzip", "x-gzip", "gzip-identity", "gzip-two-members", "deflate", "raw-deflate"],
)
async def test_compressed_body_is_forwarded_decoded_without_content_encoding(
    make_gateway: GatewayFactory, provider: FakeProvider, coding: str, encode: Any
) -> None:
    gw = await make_gateway(auth_config(provider.base_url, server={"request_decompression": True}))
    plain = chat_body(pad=5000)
    data = encode(plain)
    assert len(data) < 200  # a small body that inflates to about 5 KB
    status, _, body = await exchange_raw(
        gw.url, request_head("/v1/chat/completions", len(data), key=STATIC_KEY, coding=coding), data
    )
    assert status == 200, body
    assert len(provider.received) == 1
    got = provider.received[0]
    assert got.body == plain
    assert {k.lower() for k in got.headers} & {"content-encoding"} == set()
    assert got.headers["Content-Length"] == str(len(plain))


async def test_gzip_bomb_with_a_key_is_413_once_it_inflates_past_the_limit(
    make_gateway: GatewayFactory, provider: FakeProvider
) -> None:
    gw = await bomb_gateway(make_gateway, provider, True)
    data = bomb()
    reader, writer = await open_raw(gw.url)
    started = time.perf_counter()
    # Only the first 16 KiB (16 MiB inflated) of the 2 MB: the answer must
    # not wait for the rest, nor decode more than the limit.
    head = request_head("/v1/chat/completions", len(data), key=STATIC_KEY)
    writer.write(head.encode() + data[: 16 * 1024])
    status, _, body = await read_response(reader, 5.0)
    elapsed = time.perf_counter() - started
    writer.close()
    assert (status, json.loads(body)) == (413, {"error": {
        "message": f"Request body is larger than the limit of {4 * MIB} bytes.",
        "type": "invalid_request_error", "param": None, "code": "request_too_large"}})
    assert elapsed < 0.5
    assert provider.received == []


@pytest.mark.parametrize(
    ("coding", "data", "status", "message"),
    [
        ("gzip", b"\x1f\x8b\x08\x00not-gzip-at-all-" + CANARY.encode(), 400,
         "The request body is not valid gzip data."),
        ("gzip", gzip.compress(chat_body())[:-12], 400, "The request body is not valid gzip data."),
        ("deflate", zlib.compress(chat_body()) + b"trailing", 400,
         "The request body is not valid deflate data."),
        ("br", b"\x0b\x02\x80" + CANARY.encode(), 415, "Only gzip and deflate request bodies are accepted."),
        ("zstd", b"\x28\xb5\x2f\xfd" + CANARY.encode(), 415, "Only gzip and deflate request bodies are accepted."),
        ("gzip, gzip", gzip.compress(gzip.compress(chat_body())), 415,
         "Only gzip and deflate request bodies are accepted."),
    ],
    ids=["not-gzip", "truncated", "trailing-garbage", "br", "zstd", "stacked"],
)
async def test_bad_or_unsupported_compressed_bodies_are_refused_without_echo(
    make_gateway: GatewayFactory, provider: FakeProvider, coding: str, data: bytes, status: int, message: str
) -> None:
    gw = await make_gateway(auth_config(provider.base_url, server={"request_decompression": True}))
    got, _, body = await exchange_raw(
        gw.url, request_head("/v1/chat/completions", len(data), key=STATIC_KEY, coding=coding), data
    )
    assert (got, json.loads(body)["error"]["message"]) == (status, message)
    assert CANARY not in body.decode()
    assert provider.received == []


async def test_compressed_length_over_the_limit_is_413_before_reading(
    make_gateway: GatewayFactory, provider: FakeProvider
) -> None:
    gw = await make_gateway(auth_config(
        provider.base_url, server={"request_decompression": True, "max_body_bytes": 1024}
    ))
    # Announces 2 MB and sends none of it.
    got, _, body = await exchange_raw(
        gw.url, request_head("/v1/chat/completions", len(bomb()), key=STATIC_KEY), b"", read_timeout=2.0
    )
    assert (got, json.loads(body)["error"]["code"]) == (413, "request_too_large")


async def test_the_sdks_read_the_415_as_their_own_error(
    make_gateway: GatewayFactory, provider: FakeProvider
) -> None:
    gw = await make_gateway(auth_config(provider.base_url))
    compressed = {"Content-Encoding": "gzip"}  # the SDKs send plain JSON: it claims otherwise
    async with openai.AsyncOpenAI(base_url=gw.v1, api_key=STATIC_KEY, max_retries=0) as oai:
        with pytest.raises(openai.APIStatusError) as e:
            await oai.chat.completions.create(
                model="gpt-same", messages=[{"role": "user", "content": CANARY}], extra_headers=compressed
            )
    assert (e.value.status_code, e.value.type, e.value.code) == (
        415, "invalid_request_error", "unsupported_content_encoding"
    )
    async with anthropic.AsyncAnthropic(base_url=gw.url, api_key=STATIC_KEY, max_retries=0) as ant:
        with pytest.raises(anthropic.APIStatusError) as a:
            await ant.messages.create(
                model="claude-test", max_tokens=10, messages=[{"role": "user", "content": CANARY}],
                extra_headers=compressed,
            )
    assert a.value.status_code == 415
    assert a.value.body == {"type": "error", "error": {
        "type": "invalid_request_error",
        "message": "Compressed request bodies are not accepted; send the body uncompressed."}}
    assert provider.received == []


def plain_head(path: str, framing: str, headers: str = "") -> str:
    return (
        f"POST {path} HTTP/1.1\r\nHost: lunos\r\nContent-Type: application/json\r\n"
        f"{framing}\r\n{headers}\r\n"
    )


WRONG_KEY = "lk-wrong-key-canary-77d2"


@pytest.mark.parametrize(
    ("framing", "headers", "status", "code"),
    [
        ("Content-Length: 2000000", "", 401, "invalid_api_key"),
        ("Content-Length: 2000000", f"Authorization: Bearer {WRONG_KEY}\r\n", 401, "invalid_api_key"),
        ("Content-Length: 2000000", f"Authorization: Bearer {STATIC_KEY}\r\nContent-Encoding: gzip\r\n",
         415, "unsupported_content_encoding"),
        ("Content-Length: 2000000", f"Authorization: Bearer {STATIC_KEY}\r\n", 413, "request_too_large"),
        ("Transfer-Encoding: chunked", "", 401, "invalid_api_key"),
        ("Transfer-Encoding: chunked", f"Authorization: Bearer {STATIC_KEY}\r\nContent-Encoding: gzip\r\n",
         415, "unsupported_content_encoding"),
    ],
    ids=["no-key", "wrong-key", "compressed", "over-the-limit", "chunked-no-key", "chunked-compressed"],
)
async def test_a_refusal_that_needs_no_body_answers_at_once_and_closes_without_reading_it(
    make_gateway: GatewayFactory, provider: FakeProvider, framing: str, headers: str, status: int, code: str
) -> None:
    gw = await make_gateway(auth_config(provider.base_url, server={"max_body_bytes": MIB}))
    reader, writer = await open_raw(gw.url)
    started = time.perf_counter()
    first = b"5\r\n{\"mod\r\n" if framing.startswith("Transfer") else b'{"model": "gpt-'
    writer.write(plain_head("/v1/chat/completions", framing, headers).encode() + first)
    try:
        got, answer_headers, body = await read_response(reader, 5.0)
        # The rest of the body never comes: a server reading it (aiohttp's
        # lingering close waits up to 10 s for it) would not end the
        # connection now.
        async with asyncio.timeout(2.0):
            rest = await reader.read()
        elapsed = time.perf_counter() - started
    finally:
        writer.close()
    assert (got, json.loads(body)["error"]["code"]) == (status, code)
    assert answer_headers["connection"] == "close"
    assert rest == b""
    assert elapsed < 1.0
    assert provider.received == []


async def test_a_refusal_whose_body_came_whole_keeps_the_connection(
    make_gateway: GatewayFactory, provider: FakeProvider
) -> None:
    gw = await make_gateway(auth_config(provider.base_url))
    data = chat_body()
    head = plain_head("/v1/chat/completions", f"Content-Length: {len(data)}")
    reader, writer = await open_raw(gw.url)
    try:
        for _ in range(2):  # both answered on the one connection
            writer.write(head.encode() + data)
            got, headers, body = await read_response(reader, 5.0)
            assert (got, json.loads(body)["error"]["code"]) == (401, "invalid_api_key")
            assert "connection" not in headers
    finally:
        writer.close()


async def test_what_arrived_of_an_unread_body_is_freed_when_its_connection_closes(
    make_gateway: GatewayFactory, provider: FakeProvider
) -> None:
    gw = await make_gateway(auth_config(provider.base_url))
    head = plain_head("/v1/chat/completions", "Content-Length: 2000000").encode()

    async def refused() -> None:
        reader, writer = await open_raw(gw.url)
        writer.write(head + b"x" * (256 * 1024))
        got, _, _ = await read_response(reader, 5.0)
        assert got == 401
        async with asyncio.timeout(2.0):
            assert await reader.read() == b""
        writer.close()

    # The requests of refused uploads end in reference cycles; with the
    # collector off (as good as off in `serve`, whose thresholds are high)
    # only what the connection freed itself is gone.
    gc.disable()
    try:
        await asyncio.gather(*(refused() for _ in range(8)))
        await asyncio.sleep(0.05)  # the connections' connection_lost
        held = sum(o._size for o in gc.get_objects() if type(o) is aiohttp.StreamReader)
    finally:
        gc.enable()
    assert held == 0


@pytest.mark.parametrize("pad", [1000, 3 * MIB], ids=["small", "3MB"])
async def test_the_sdk_with_a_wrong_key_reads_its_401_whatever_the_body_size(
    make_gateway: GatewayFactory, provider: FakeProvider, pad: int
) -> None:
    gw = await make_gateway(auth_config(provider.base_url))
    async with openai.AsyncOpenAI(base_url=gw.v1, api_key=WRONG_KEY, max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError) as e:
            await client.chat.completions.create(
                model="gpt-same", messages=[{"role": "user", "content": CANARY + "x" * pad}]
            )
    assert e.value.status_code == 401
    assert e.value.body == {"message": "Incorrect API key provided.", "type": "invalid_request_error",
                            "param": None, "code": "invalid_api_key"}
    assert provider.received == []
