"""Requests that aiohttp answers before any route or middleware runs, on
both listeners: an `Expect` header it does not know, a request target that
is no path (CONNECT's host:port, OPTIONS's `*`), a request line the parser
refuses on the admin listener. Each is answered in JSON (OpenAI's error
shape; Anthropic's under /v1/messages) that quotes nothing the client sent,
and the connection rules still hold (100-continue still works)."""

from __future__ import annotations

import json

import aiohttp
import pytest

from tests.conftest import GatewayFactory, Running
from tests.console.support import console_config
from tests.e2e.test_protocol_errors import exchange_raw, split_response
from tests.fakes import FakeProvider

CANARY = b"qz7canary-expect"

EXPECT = [
    ("GET", b"/v1/models"),
    ("POST", b"/v1/chat/completions"),
    ("POST", b"/v1/messages"),
    ("GET", b"/healthz"),
    ("GET", b"/console/"),
    ("GET", b"/no/such/path"),
]


@pytest.fixture
async def gw_console(provider: FakeProvider, make_gateway: GatewayFactory) -> Running:
    return await make_gateway(console_config(provider.base_url))


def _refusal(raw: bytes) -> tuple[int, dict[str, str], dict[str, object]]:
    assert CANARY not in raw, raw[:400]
    status, headers, body = split_response(raw)
    assert headers["content-type"] == "application/json", raw[:400]
    return status, headers, json.loads(body)


@pytest.mark.parametrize("method, path", EXPECT, ids=[p.decode() for _, p in EXPECT])
async def test_an_unknown_expectation_is_refused_in_json_without_quoting_it(
    gw_console: Running, method: str, path: bytes
) -> None:
    data = (method.encode() + b" " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Expect: " + CANARY + b"\r\nContent-Length: 2\r\n\r\n{}")
    status, _, body = _refusal(await exchange_raw(gw_console.url, data))
    assert status == 417
    message = "The Expect header asks for something this server does not do (only 100-continue)."
    if path.startswith(b"/v1/messages"):
        assert body == {"type": "error", "error": {"type": "invalid_request_error", "message": message}}
    else:
        assert body == {"error": {"message": message, "type": "invalid_request_error",
                                  "param": None, "code": "expectation_failed"}}


async def test_100_continue_still_works(gw_console: Running) -> None:
    data = (b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nExpect: 100-continue\r\n\r\n")
    raw = await exchange_raw(gw_console.url, data)
    assert raw.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"), raw[:200]


@pytest.mark.parametrize("line", [
    b"CONNECT " + CANARY + b".example:443 HTTP/1.1",
    b"OPTIONS * HTTP/1.1",
], ids=["connect", "options-star"])
async def test_a_target_that_is_no_path_is_a_json_404_on_the_public_listener(
    gw_console: Running, line: bytes
) -> None:
    raw = await exchange_raw(gw_console.url, line + b"\r\nHost: x\r\nConnection: close\r\n\r\n")
    status, _, body = _refusal(raw)
    assert status == 404
    assert body == {"error": {"message": "Unknown request URL.", "type": "invalid_request_error",
                              "param": None, "code": "not_found"}}


@pytest.mark.parametrize("data", [
    b"GET /admin/" + CANARY + b"\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"G<" + CANARY + b"> /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-A: " + CANARY + b"\x01\r\n\r\n",
], ids=["control-byte-in-path", "bad-method", "control-byte-in-header"])
async def test_the_admin_listener_answers_malformed_http_in_json_that_quotes_nothing(
    gw_console: Running, data: bytes
) -> None:
    status, _, body = _refusal(await exchange_raw(gw_console.admin_url, data))
    assert status == 400
    assert body["error"]["message"] == "The request is not valid HTTP."  # type: ignore[index]


@pytest.mark.parametrize("path", [b"/metrics", b"/admin/audit"])
async def test_the_admin_listener_refuses_an_unknown_expectation_without_quoting_it(
    gw_console: Running, path: bytes
) -> None:
    data = b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\nExpect: " + CANARY + b"\r\n\r\n"
    status, _, body = _refusal(await exchange_raw(gw_console.admin_url, data))
    assert status == 417
    assert "Expect" in body["error"]["message"]  # type: ignore[index]
    async with aiohttp.ClientSession() as s, s.get(gw_console.admin_url + "/metrics") as r:
        assert r.status == 200


async def test_a_console_form_over_the_limit_is_a_json_413_quoting_nothing(gw_console: Running) -> None:
    form = {"email": CANARY.decode() + "x" * 2_000_000}
    async with aiohttp.ClientSession() as s:
        async with s.post(gw_console.url + "/console/sign-in/email", data=form) as r:
            raw = await r.read()
            assert CANARY not in raw
            assert (r.status, json.loads(raw)) == (413, {"error": {
                "message": "The request body is too large.", "type": "invalid_request_error",
                "param": None, "code": "request_too_large"}})
            assert r.headers["X-Frame-Options"] == "DENY"  # the console's headers stay
