"""Every error has its SDK's shape and status, and never echoes the request."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from tests.conftest import GatewayFactory, Running, basic_config, free_port
from tests.fakes import FakeProvider

CANARY = "canary-7f3a9e-secret-prompt"


async def post(url: str, data: bytes | None = None, **kw: Any) -> tuple[int, dict[str, Any], Any]:
    async with aiohttp.ClientSession() as s:
        async with s.post(url, data=data, **kw) as r:
            return r.status, dict(r.headers), json.loads(await r.read())


async def test_malformed_json_is_400_in_openai_shape(gw: Running) -> None:
    status, _, body = await post(gw.v1 + "/chat/completions", b'{"model": "gpt-test", ' + CANARY.encode())
    assert status == 400
    assert body == {"error": {"message": "The request body is not valid JSON.",
                              "type": "invalid_request_error", "param": None, "code": None}}


async def test_malformed_json_is_400_in_anthropic_shape(gw: Running) -> None:
    status, _, body = await post(gw.url + "/v1/messages", b"{nope")
    assert status == 400
    assert body == {"type": "error", "error": {"type": "invalid_request_error",
                                               "message": "The request body is not valid JSON."}}


async def test_missing_model_is_400_naming_the_param(gw: Running) -> None:
    status, _, body = await post(gw.v1 + "/chat/completions", json={"messages": [{"content": CANARY}]})
    assert status == 400
    assert body["error"]["param"] == "model"
    assert body["error"]["message"] == "You must provide a model parameter."


async def test_wrong_type_field_is_400_without_the_value(gw: Running) -> None:
    status, _, body = await post(gw.v1 + "/chat/completions", json={"model": "gpt-test", "stream": CANARY})
    assert status == 400
    assert body["error"]["message"] == "Invalid request: Expected bool | null, got str - at stream"
    assert CANARY not in json.dumps(body)


@pytest.mark.parametrize("options, message", [
    (CANARY, "Expected object | null, got str - at stream_options"),
    ([CANARY], "Expected object | null, got array - at stream_options"),
    ({"include_usage": CANARY}, "Expected bool | null, got str - at stream_options.include_usage"),
])
async def test_stream_options_that_are_not_an_object_are_400_naming_the_param(
    gw: Running, provider: FakeProvider, options: Any, message: str
) -> None:
    status, _, body = await post(gw.v1 + "/chat/completions", json={
        "model": "gpt-test", "messages": [], "stream": True, "stream_options": options})
    assert status == 400
    assert (body["error"]["message"], body["error"]["param"]) == (
        "Invalid request: " + message, "stream_options")
    assert CANARY not in json.dumps(body)
    assert provider.received == []


async def test_unknown_model_is_404(gw: Running, provider: FakeProvider) -> None:
    status, _, body = await post(gw.v1 + "/chat/completions", json={"model": "gpt-9", "messages": []})
    assert status == 404
    assert body["error"]["code"] == "model_not_found"
    assert provider.received == []


async def test_unknown_path_is_404(gw: Running) -> None:
    status, _, body = await post(gw.v1 + "/images/generations", json={"model": "gpt-test"})
    assert status == 404
    assert body["error"]["code"] == "not_found"


async def test_body_over_limit_is_413_and_not_forwarded(
    provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    cfg = basic_config(provider.base_url, server={"max_body_bytes": 2048})
    gw = await make_gateway(cfg)
    big = json.dumps({"model": "gpt-test", "messages": [{"content": "x" * 4096}]}).encode()
    status, _, body = await post(gw.v1 + "/chat/completions", big)
    assert status == 413
    assert body["error"]["code"] == "request_too_large"

    async def chunked():  # no content-length: the limit holds while reading
        yield big[:1000]
        yield big[1000:]

    status, _, body = await post(gw.v1 + "/chat/completions", chunked())  # type: ignore[arg-type]
    assert status == 413
    assert provider.received == []


async def test_unreachable_provider_is_502(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(basic_config(f"http://127.0.0.1:{free_port()}/v1"))
    status, _, body = await post(gw.v1 + "/chat/completions", json={"model": "gpt-test", "messages": []})
    assert status == 502
    assert body["error"]["code"] == "upstream_unreachable"


async def test_provider_silent_past_first_byte_timeout_is_504(
    provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    cfg = basic_config(provider.base_url)
    cfg["providers"]["fake"]["timeouts"] = {"first_byte": 0.3}
    gw = await make_gateway(cfg)
    provider.behaviour.delay_headers = 3.0
    status, _, body = await post(gw.v1 + "/chat/completions", json={"model": "gpt-test", "messages": []})
    assert status == 504
    assert body["error"] == {"message": "The provider did not answer within 0.3 s.",
                             "type": "server_error", "param": None, "code": "upstream_timeout"}


async def test_stream_idle_timeout_ends_stream_with_error(
    provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    cfg = basic_config(provider.base_url)
    cfg["providers"]["fake"]["timeouts"] = {"idle": 0.3}
    gw = await make_gateway(cfg)
    provider.behaviour.pause_after_first = 2.0
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.v1 + "/chat/completions",
                          json={"model": "gpt-test", "stream": True, "messages": []}) as r:
            assert r.status == 200
            got = await r.read()
    assert got.count(b"chat.completion.chunk") == 1
    assert b"The provider stalled mid-stream." in got


@pytest.mark.parametrize("status", [400, 429, 500, 503])
async def test_provider_error_status_passes_with_its_shape_but_not_its_message(
    gw: Running, provider: FakeProvider, status: int
) -> None:
    provider.behaviour.status = status
    provider.behaviour.headers = {"retry-after": "7", "x-ratelimit-remaining-requests": "0"}
    provider.behaviour.error_body = json.dumps({"error": {
        "message": f"Your prompt '{CANARY}' is bad", "type": "invalid_request_error",
        "param": "messages", "code": "context_length_exceeded"}}).encode()
    got, headers, body = await post(gw.v1 + "/chat/completions",
                                    json={"model": "gpt-test", "messages": [{"content": CANARY}]})
    assert got == status
    assert CANARY not in json.dumps(body)
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["code"] == "context_length_exceeded"
    assert body["error"]["param"] == "messages"
    assert "x-ratelimit-remaining-requests" not in {k.lower() for k in headers}


async def test_provider_error_for_anthropic_client_in_anthropic_shape(
    gw: Running, provider: FakeProvider
) -> None:
    provider.behaviour.status = 529
    provider.behaviour.error_body = json.dumps(
        {"type": "error", "error": {"type": "overloaded_error", "message": CANARY}}).encode()
    status, _, body = await post(gw.url + "/v1/messages", json={"model": "claude-test", "max_tokens": 5,
                                                                "messages": []})
    assert status == 529
    assert body["type"] == "error" and body["error"]["type"] == "overloaded_error"
    assert CANARY not in json.dumps(body)
