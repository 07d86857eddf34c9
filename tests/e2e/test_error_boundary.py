"""Every failure ends in the client's SDK shape, counted and logged, and no
error repeats what the client sent.

- an exception in any plugin (outside or inside the logger) or in the
  handler is a 500 in the OpenAI or Anthropic shape, counted as 5xx, logged
  once with its type and stack and never its message;
- input that used to raise (JSON nested too deep, invalid UTF-8 in the
  model, a 309-digit budget) is a 400 naming the parameter;
- an unknown model (1 MB long, or `<script>`) gets a short error without the
  name, from the core handler, the router and the auth plugin;
- an unknown path is a 404 without the path; a known path with another
  method is a 405 with `Allow`, on the public and the admin listener.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import aiohttp
import anthropic
import msgspec
import openai
import pytest
from aiohttp import web

from lunos_proxy.exchange import exchange_of
from lunos_proxy.plugin import Handler, Plugin
from lunos_proxy.usage.estimate import count_input
from tests.auth_support import STATIC_KEY, auth_config, static_entry
from tests.conftest import ADMIN_HEADERS, GatewayFactory, Running, basic_config
from tests.entry_points import register_plugins
from tests.fakes import FakeProvider
from tests.limits.fakes import abuse_fakes  # noqa: F401 - fixture
from tests.limits.helpers import abuse_config, plan
from tests.logcapture import Captured
from tests.meter_support import KEYS, meter_config

CANARY = "canary-5e1d-client-secret"
CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
MESSAGES = {"model": "claude-test", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
INTERNAL_OPENAI = {"error": {"message": "The server had an error while processing your request.",
                             "type": "server_error", "param": None, "code": "internal_error"}}
INTERNAL_ANTHROPIC = {"type": "error", "error": {
    "type": "api_error", "message": "The server had an error while processing your request."}}


class Explode(Plugin):
    """Raises an exception carrying the canary, before or after the rest of
    the pipeline ran."""

    name = "explode"

    class Settings(msgspec.Struct, forbid_unknown_fields=True):
        when: Literal["before", "after"] = "before"

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.settings.when == "before":
            raise RuntimeError(f"plugin broke on {CANARY}")
        response = await handler(request)
        exchange_of(request).extra["explode"] = True
        raise KeyError(CANARY)
        return response  # pragma: no cover


@pytest.fixture
def explode_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    register_plugins(tmp_path, "lunos-explode", {"explode": f"{__name__}:Explode"}, monkeypatch)


def requests_counted(gw: Running, status_class: str, error_type: str) -> float:
    value = gw.gateway.metrics.registry.get_sample_value(
        "lunos_requests_total",
        {"model": "none", "provider": "none", "status_class": status_class, "error_type": error_type},
    )
    return value or 0.0


async def post(url: str, data: bytes | None = None, **kw: Any) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as s:
        async with s.post(url, data=data, **kw) as r:
            return r.status, dict(r.headers), await r.read()


# -- an exception anywhere on the request path ------------------------------------


@pytest.mark.parametrize("pipeline", [
    [{"name": "explode"}, {"name": "request_id"}],  # outermost: before any other plugin
    [{"name": "request_id"}, {"name": "explode"}],
    [{"name": "request_id"}, {"name": "explode", "settings": {"when": "after"}}],  # after forwarding
])
async def test_a_failing_plugin_is_a_500_in_the_sdk_shape_counted_and_logged_once(
    pipeline: list[dict[str, Any]], explode_plugin: None, captured_logs: Captured,
    provider: FakeProvider, make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(basic_config(provider.base_url, pipeline=pipeline))
    async with openai.AsyncOpenAI(base_url=gw.v1, api_key="sk-x", max_retries=0) as client:
        with pytest.raises(openai.InternalServerError) as oa:
            await client.chat.completions.create(**CHAT)  # type: ignore[call-overload]
    async with anthropic.AsyncAnthropic(base_url=gw.url, api_key="sk-x", max_retries=0) as claude:
        with pytest.raises(anthropic.InternalServerError) as an:
            await claude.messages.create(**MESSAGES)  # type: ignore[call-overload]
    assert (oa.value.status_code, json.loads(oa.value.response.content)) == (500, INTERNAL_OPENAI)
    assert (an.value.status_code, json.loads(an.value.response.content)) == (500, INTERNAL_ANTHROPIC)
    # Counted as server errors, not as "none".
    counted = sum(
        gw.gateway.metrics.registry.get_sample_value("lunos_requests_total", {
            "model": model, "provider": prov, "status_class": "5xx", "error_type": "gateway"}) or 0.0
        for model, prov in (("none", "none"), ("gpt-test", "fake"), ("claude-test", "fake-anthropic"))
    )
    assert counted == 2
    assert requests_counted(gw, "none", "none") == 0
    # One line per request: the exception's type and frames, never its message.
    lines = [line for line in captured_logs.lines() if line.get("event") == "internal_error"]
    assert len(lines) == 2
    kind = "KeyError" if pipeline[1].get("settings") else "RuntimeError"
    for line in lines:
        assert line["level"] == "error"
        assert line["exception"]["type"] == kind
        assert any(frame.endswith(" in __call__") and "test_error_boundary.py" in frame
                   for frame in line["exception"]["stack"])
    assert CANARY not in captured_logs.text


async def test_the_500_is_answered_when_logging_is_left_as_structlog_sets_it_up(
    explode_plugin: None, provider: FakeProvider, make_gateway: GatewayFactory,
) -> None:
    """The gateway embedded in an app that never configured logging."""
    gw = await make_gateway(basic_config(provider.base_url, pipeline=[{"name": "explode"}]))
    status, _, body = await post(gw.v1 + "/chat/completions", json=CHAT)
    assert (status, json.loads(body)) == (500, INTERNAL_OPENAI)


async def test_a_failing_plugin_inside_the_logger_is_logged_by_it_alone(
    explode_plugin: None, captured_logs: Captured, provider: FakeProvider, make_gateway: GatewayFactory,
) -> None:
    pipeline = [{"name": "request_id"}, {"name": "logger"}, {"name": "explode"}]
    gw = await make_gateway(basic_config(provider.base_url, pipeline=pipeline))
    status, _, body = await post(gw.v1 + "/chat/completions", json=CHAT)
    assert (status, json.loads(body)) == (500, INTERNAL_OPENAI)
    with_stack = [line for line in captured_logs.lines() if "exception" in line]
    assert [(line["event"], line["exception"]["type"]) for line in with_stack] == [("request", "RuntimeError")]
    assert requests_counted(gw, "5xx", "gateway") == 1
    assert CANARY not in captured_logs.text


# -- input that used to raise ------------------------------------------------------


@pytest.mark.parametrize("depth", [1_000, 100_000])
async def test_json_nested_too_deep_is_a_400(gw: Running, depth: int) -> None:
    body = b'{"model": "gpt-test", "messages": ' + b"[" * depth + b"]" * depth + b"}"
    status, _, raw = await post(gw.v1 + "/chat/completions", body, headers={"Content-Type": "application/json"})
    assert (status, json.loads(raw)) == (400, {"error": {
        "message": "The request body is nested too deeply.",
        "type": "invalid_request_error", "param": None, "code": None}})
    status, _, raw = await post(gw.url + "/v1/messages", body)
    assert (status, json.loads(raw)["error"]["type"]) == (400, "invalid_request_error")


async def test_invalid_utf8_in_the_model_is_a_400_naming_it(gw: Running, provider: FakeProvider) -> None:
    body = b'{"model": "gpt-\xff\xfe", "messages": []}'
    status, _, raw = await post(gw.v1 + "/chat/completions", body)
    assert (status, json.loads(raw)) == (400, {"error": {
        "message": "The model parameter is not valid UTF-8.",
        "type": "invalid_request_error", "param": "model", "code": None}})
    status, _, raw = await post(gw.url + "/v1/messages", body)
    assert (status, json.loads(raw)) == (400, {"type": "error", "error": {
        "type": "invalid_request_error", "message": "The model parameter is not valid UTF-8."}})
    assert provider.received == []


@pytest.mark.parametrize("store", ["memory", "redis"])
@pytest.mark.usefixtures("abuse_fakes")
async def test_a_309_digit_budget_is_a_400_naming_it(
    store: str, request: pytest.FixtureRequest, provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    url = "memory://" if store == "memory" else request.getfixturevalue("redis_url")
    gw = await make_gateway(abuse_config(provider.base_url, plan(key={"tokens_per_minute": 1000}), store=url))
    huge = b"9" * 309  # past the largest float
    body = b'{"model": "claude-test", "max_tokens": ' + huge + b', "messages": []}'
    status, _, raw = await post(gw.url + "/v1/messages", body, headers={"Authorization": "Bearer a1.k1"})
    assert (status, json.loads(raw)) == (400, {"type": "error", "error": {
        "type": "invalid_request_error",
        "message": "Invalid request: Expected int <= 2147483647 - at max_tokens"}})
    body = b'{"model": "gpt-test", "max_completion_tokens": ' + huge + b', "messages": []}'
    status, _, raw = await post(gw.v1 + "/chat/completions", body, headers={"Authorization": "Bearer a1.k1"})
    assert status == 400
    assert json.loads(raw)["error"]["param"] == "max_completion_tokens"
    assert provider.received == []


# -- nothing the client sent comes back -------------------------------------------

HUGE_NAME = "gpt-" + CANARY + "x" * 1_000_000
SCRIPT_NAME = "<script>alert(1)</script>"


def refused_model_configs(provider_url: str) -> dict[str, dict[str, Any]]:
    restricted = [static_entry(allowed_models=["gpt-t*", "claude-t*"])]
    return {
        "core": basic_config(provider_url),
        "router": basic_config(provider_url, pipeline=[{"name": "request_id"}, {"name": "router"}]),
        "auth": auth_config(provider_url, static=restricted),
    }


@pytest.mark.parametrize("name", [HUGE_NAME, SCRIPT_NAME], ids=["1MB", "script"])
@pytest.mark.parametrize("via", ["core", "router", "auth"])
async def test_an_unknown_model_name_is_not_repeated(
    via: str, name: str, provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(refused_model_configs(provider.base_url)[via])
    headers = {"Authorization": f"Bearer {STATIC_KEY}", "x-api-key": STATIC_KEY}
    expected = (403, "permission_error") if via == "auth" else (404, "not_found_error")
    for url, payload in ((gw.v1 + "/chat/completions", CHAT), (gw.url + "/v1/messages", MESSAGES)):
        status, _, raw = await post(url, json={**payload, "model": name}, headers=headers)
        body = json.loads(raw)
        assert status == expected[0]
        assert len(raw) < 300
        assert name not in raw.decode() and "<script>" not in raw.decode() and CANARY not in raw.decode()
        if url.endswith("/messages"):
            assert body["error"]["type"] == expected[1]
        else:
            assert body["error"]["param"] == "model"
    assert provider.received == []


async def test_an_unknown_model_through_the_sdk_keeps_its_shape(gw: Running) -> None:
    async with openai.AsyncOpenAI(base_url=gw.v1, api_key="sk-x", max_retries=0) as client:
        with pytest.raises(openai.NotFoundError) as e:
            await client.chat.completions.create(model=SCRIPT_NAME, messages=[])
    assert e.value.body == {
        "message": "The requested model does not exist or you do not have access to it.",
        "type": "invalid_request_error", "param": "model", "code": "model_not_found"}


@pytest.mark.parametrize("path", [f"/v1/{CANARY}/<script>", f"/v1/messages/{CANARY}", f"/{CANARY}"])
async def test_an_unknown_path_is_a_404_without_it(gw: Running, path: str) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(gw.url + path) as r:
            status, raw = r.status, await r.read()
    assert status == 404
    assert CANARY not in raw.decode() and "script" not in raw.decode()
    body = json.loads(raw)
    if path.startswith("/v1/messages"):
        assert body == {"type": "error", "error": {"type": "not_found_error", "message": "Unknown request URL."}}
    else:
        assert body["error"] == {"message": "Unknown request URL.", "type": "invalid_request_error",
                                 "param": None, "code": "not_found"}


# -- a known path, another method ----------------------------------------------------


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("POST", "/v1/models", "GET"),
    ("GET", "/v1/chat/completions", "POST"),
    ("PUT", "/v1/messages", "POST"),
    ("DELETE", "/healthz", "GET, HEAD"),
])
async def test_a_known_path_with_another_method_is_a_405_with_allow(
    gw: Running, method: str, path: str, allow: str
) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.request(method, gw.url + path) as r:
            status, headers, body = r.status, r.headers, await r.json()
    assert (status, headers["Allow"]) == (405, allow)
    message = "This URL does not accept the request's method; see the Allow header."
    if path == "/v1/messages":
        assert body == {"type": "error", "error": {"type": "invalid_request_error", "message": message}}
    else:
        assert body == {"error": {"message": message, "type": "invalid_request_error",
                                  "param": None, "code": "method_not_allowed"}}


async def test_the_openai_sdk_sees_a_405_as_an_api_error(gw: Running) -> None:
    async with openai.AsyncOpenAI(base_url=gw.v1, api_key="sk-x", max_retries=0) as client:
        with pytest.raises(openai.APIStatusError) as e:
            await client.post("/models", cast_to=object)
    assert e.value.status_code == 405
    assert e.value.body["code"] == "method_not_allowed"  # type: ignore[index]


@pytest.mark.parametrize(("method", "path", "allow", "auth"), [
    ("POST", "/metrics", "GET, HEAD", False),
    ("DELETE", "/admin/accounts", "GET, HEAD, POST", True),
])
async def test_the_admin_listener_answers_405_with_allow(
    gw: Running, method: str, path: str, allow: str, auth: bool
) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.request(method, gw.admin_url + path, headers=ADMIN_HEADERS if auth else {}) as r:
            status, headers, body = r.status, r.headers, await r.json()
    assert (status, headers["Allow"]) == (405, allow)
    assert body == {"error": {"message": "method not allowed; see the Allow header", "status": 405}}


async def test_the_admin_listener_does_not_repeat_an_unknown_path(gw: Running) -> None:
    async with aiohttp.ClientSession() as s:
        for path in (f"/admin/{CANARY}", f"/{CANARY}"):
            async with s.get(gw.admin_url + path, headers=ADMIN_HEADERS) as r:
                status, raw = r.status, await r.read()
            assert status == 404
            assert json.loads(raw) == {"error": {"message": "not found", "status": 404}}
        async with s.get(gw.admin_url + f"/admin/accounts/acc_{CANARY}", headers=ADMIN_HEADERS) as r:
            status, raw = r.status, await r.read()
    assert status == 404
    assert CANARY not in raw.decode()


async def test_a_failure_after_a_stream_began_closes_the_connection_and_is_still_counted(
    explode_plugin: None, captured_logs: Captured, provider: FakeProvider, make_gateway: GatewayFactory,
) -> None:
    pipeline = [{"name": "request_id"}, {"name": "explode", "settings": {"when": "after"}}]
    gw = await make_gateway(basic_config(provider.base_url, pipeline=pipeline))
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.v1 + "/chat/completions", json={**CHAT, "stream": True}) as r:
            status, raw = r.status, await r.read()
    # The stream went out whole; nothing (no second answer) was glued after it.
    assert status == 200
    assert raw.rstrip().endswith(b"data: [DONE]")
    assert gw.gateway.metrics.registry.get_sample_value("lunos_requests_total", {
        "model": "gpt-test", "provider": "fake", "status_class": "5xx", "error_type": "gateway"}) == 1
    [line] = [line for line in captured_logs.lines() if line.get("event") == "internal_error"]
    assert line["exception"]["type"] == "KeyError"
    assert CANARY not in captured_logs.text


async def test_a_key_that_is_not_utf8_is_a_400_through_the_meter_and_the_forwarder(
    tmp_path: Path, provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    """A top-level key that is not UTF-8 (the head decoder skips it unread):
    the meter, which rewrites a streamed body to ask for usage, leaves it as
    is, and the forwarder, setting the provider's model name, refuses it."""
    gw = await make_gateway(meter_config(provider.base_url, tmp_path))
    key = next(iter(KEYS))
    for stream in (b"true", b"false"):
        body = b'{"model": "gpt-test", "stream": ' + stream + b', "\xff": 1, "messages": []}'
        status, _, raw = await post(gw.v1 + "/chat/completions", body, headers={"Authorization": f"Bearer {key}"})
        assert (status, json.loads(raw)) == (400, {"error": {
            "message": "The request body is not valid UTF-8.",
            "type": "invalid_request_error", "param": None, "code": None}})
    assert provider.received == []


def test_the_input_estimate_of_a_body_that_is_not_utf8_is_zero() -> None:
    body = b'{"model": "gpt-test", "messages": [{"role": "user", "content": "\xff"}]}'
    assert count_input("gpt-test", "chat/completions", body) == 0
