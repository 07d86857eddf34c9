"""`Expect: 100-continue` on the API routes: the `100 Continue` is sent only
when the body is about to be read, after the key, the encoding and the
declared length have passed. A client refused before then gets the refusal
as the first bytes, and is never invited to upload. Raw sockets, since the
test must control when the body is sent."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.auth_support import STATIC_KEY, auth_config
from tests.conftest import GatewayFactory, Running
from tests.e2e.test_request_bodies import chat_body, open_raw, read_response
from tests.fakes import FakeProvider

MIB = 1024 * 1024
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def expect_head(path: str, extra: str, length: int = 10_000_000) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: lunos\r\nContent-Type: application/json\r\n"
        f"Expect: 100-continue\r\nContent-Length: {length}\r\n{extra}\r\n"
    ).encode()


@pytest.fixture
async def gw(make_gateway: GatewayFactory, provider: FakeProvider) -> Running:
    return await make_gateway(auth_config(provider.base_url, server={"max_body_bytes": 12 * MIB}))


async def headers_only(gw: Running, head: bytes) -> bytes:
    """Send `head` and no body; all the server sends until it closes."""
    reader, writer = await open_raw(gw.url)
    try:
        writer.write(head)
        async with asyncio.timeout(5.0):
            return await reader.read()
    finally:
        writer.close()


@pytest.mark.parametrize(
    "path, extra, status, code",
    [
        ("/v1/chat/completions", "", 401, "invalid_api_key"),
        ("/v1/chat/completions", "Authorization: Bearer lk-wrong-key-0123456789abcdef\r\n",
         401, "invalid_api_key"),
        ("/v1/chat/completions", f"Authorization: Bearer {STATIC_KEY}\r\nContent-Encoding: gzip\r\n",
         415, "unsupported_content_encoding"),
        ("/v1/no/such/route", f"Authorization: Bearer {STATIC_KEY}\r\n", 404, "not_found"),
    ],
    ids=["no-key", "wrong-key", "compressed", "unknown-path"],
)
async def test_a_refused_request_gets_its_refusal_and_no_invitation_to_send_the_body(
    gw: Running, provider: FakeProvider, path: str, extra: str, status: int, code: str
) -> None:
    raw = await headers_only(gw, expect_head(path, extra))
    assert raw.startswith(f"HTTP/1.1 {status} ".encode()), raw[:200]
    assert b"100 Continue" not in raw
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"\r\nConnection: close\r\n" in head + b"\r\n"
    assert json.loads(body)["error"]["code"] == code
    assert provider.received == []


async def test_a_declared_length_over_the_limit_is_a_413_without_100_continue(
    gw: Running, provider: FakeProvider
) -> None:
    raw = await headers_only(
        gw, expect_head("/v1/chat/completions", f"Authorization: Bearer {STATIC_KEY}\r\n", 13 * MIB)
    )
    assert raw.startswith(b"HTTP/1.1 413 "), raw[:200]
    assert b"100 Continue" not in raw
    assert json.loads(raw.partition(b"\r\n\r\n")[2])["error"]["code"] == "request_too_large"
    assert provider.received == []


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
async def test_a_good_key_is_invited_once_and_its_body_is_served(
    gw: Running, provider: FakeProvider, path: str
) -> None:
    model = "claude-test" if path == "/v1/messages" else "gpt-test"
    body = json.dumps({"model": model, "max_tokens": 16,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    reader, writer = await open_raw(gw.url)
    try:
        writer.write(expect_head(path, f"Authorization: Bearer {STATIC_KEY}\r\n", len(body)))
        async with asyncio.timeout(5.0):
            assert await reader.readexactly(len(CONTINUE)) == CONTINUE
        writer.write(body)
        status, _, answer = await read_response(reader, 5.0)  # a second 100 would be read here
    finally:
        writer.close()
    assert status == 200, answer
    assert len(provider.received) == 1
    assert provider.received[0].json()["messages"] == [{"role": "user", "content": "hi"}]


async def test_a_client_that_sends_the_body_without_waiting_is_served(
    gw: Running, provider: FakeProvider
) -> None:
    body = chat_body("gpt-test")
    reader, writer = await open_raw(gw.url)
    try:
        writer.write(expect_head("/v1/chat/completions", f"Authorization: Bearer {STATIC_KEY}\r\n",
                                 len(body)) + body)
        async with asyncio.timeout(5.0):
            assert await reader.readexactly(len(CONTINUE)) == CONTINUE
        status, _, answer = await read_response(reader, 5.0)
    finally:
        writer.close()
    assert status == 200, answer
    assert len(provider.received) == 1


async def test_a_get_route_answers_without_100_continue(gw: Running) -> None:
    """GET /v1/models reads no body: its answer is the only response."""
    raw = await headers_only(gw, (
        f"GET /v1/models HTTP/1.1\r\nHost: lunos\r\nConnection: close\r\nExpect: 100-continue\r\n"
        f"Authorization: Bearer {STATIC_KEY}\r\n\r\n"
    ).encode())
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n"), raw[:200]
