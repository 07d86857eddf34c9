"""Requests aiohttp's HTTP parser refuses are answered in JSON (OpenAI's
error shape) that quotes none of the offending bytes, and logged without
them: sent over a raw socket, since no HTTP client sends these."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web

from lunos_proxy.http_errors import JsonErrorsRunner
from tests.conftest import GatewayFactory, Running, basic_config, start_site
from tests.fakes import FakeProvider
from tests.logcapture import Captured

CANARY = b"canary-0b7c-offending-bytes"

MALFORMED = {
    "bad method": b"G<" + CANARY + b"> / HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad version": b"GET /v1/models HTTP/9." + CANARY + b"\r\nHost: x\r\n\r\n",
    "garbage request line": b"\x16\x03\x01" + CANARY + b"\r\n\r\n",
    "request line too long": b"GET /v1/" + CANARY + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "invalid header name": b"GET /v1/models HTTP/1.1\r\nHost: x\r\nBad<" + CANARY + b">: v\r\n\r\n",
    "header without colon": b"GET /v1/models HTTP/1.1\r\nHost: x\r\n" + CANARY + b"\r\n\r\n",
    "header too long": b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Long: " + CANARY + b"b" * 20_000 + b"\r\n\r\n",
    "control byte in header": b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-A: " + CANARY + b"\x01\r\n\r\n",
    "bad content-length": b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: "
    + CANARY + b"\r\n\r\n",
    "bad chunk size": b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    + CANARY + b"\r\n",
}


async def exchange_raw(url: str, data: bytes) -> bytes:
    """Send `data`, read until the server closes the connection."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()


def split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
async def test_a_request_the_parser_refuses_gets_json_without_its_bytes(
    data: bytes, captured_logs: Captured, provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(basic_config(provider.base_url))
    raw = await exchange_raw(gw.url, data)
    assert CANARY not in raw
    status, headers, body = split_response(raw)
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {"error": {"message": "The request is not valid HTTP.",
                                          "type": "invalid_request_error", "param": None, "code": None}}
    assert CANARY.decode() not in captured_logs.text



async def test_an_exception_outside_the_pipeline_is_a_json_500_logged_without_its_message(
    captured_logs: Captured,
) -> None:
    """A route outside the API pipeline (health checks, the 404 route, the
    console) that raises is answered by aiohttp's error handler: JSON too."""

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError(CANARY.decode())

    app = web.Application()
    app.router.add_get("/broken", broken)
    runner = JsonErrorsRunner(app, access_log=None)
    await runner.setup()
    port = await start_site(runner)
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{port}/broken") as r:
                status, raw = r.status, await r.read()
    finally:
        await runner.cleanup()
    assert status == 500
    assert json.loads(raw) == {"error": {
        "message": "The server had an error while processing your request.",
        "type": "server_error", "param": None, "code": "internal_error"}}
    [line] = [line for line in captured_logs.lines() if line.get("event") == "internal_error"]
    assert line["exception"]["type"] == "RuntimeError"
    assert any(frame.endswith(" in broken") for frame in line["exception"]["stack"])
    assert CANARY.decode() not in captured_logs.text


async def test_the_runner_keeps_the_apps_header_limit(gw: Running) -> None:
    """The public app allows 16 KiB header fields (aiohttp's default is 8 KiB):
    the runner's own connections keep the app's handler settings."""
    data = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: " + b"b" * 12_000 + b"\r\n\r\n"
    status, _, body = split_response(await exchange_raw(gw.url, data))
    assert (status, json.loads(body)) == (200, {"status": "ok"})
