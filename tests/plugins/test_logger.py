"""The logger plugin: one metadata-only JSON line per request, every outcome."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from lunos_proxy import errors
from lunos_proxy.config import ConfigError
from lunos_proxy.exchange import Exchange, Principal, exchange_of
from lunos_proxy.loading import parse_config
from lunos_proxy.plugin import Services
from plugins.logger import (
    ERROR_CODES,
    PROVIDER_ERROR_CODES,
    PROVIDER_ERROR_TYPES,
    Logger,
    RequestRecord,
    classify,
    provider_error_value,
    truncate_address,
)
from tests.conftest import GatewayFactory, Running, basic_config
from tests.fakes import FakeProvider
from tests.logcapture import Captured

LOGGED = [{"name": "request_id"}, {"name": "logger"}]


async def start(make_gateway: GatewayFactory, provider: FakeProvider, **settings: Any) -> Running:
    cfg = basic_config(provider.base_url)
    cfg["pipeline"] = [{"name": "request_id"}, {"name": "logger", "settings": settings}]
    return await make_gateway(cfg)


async def test_success_is_one_line_of_metadata(
    captured_logs: Captured, provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    gw = await start(make_gateway, provider, address="full")
    body = {"model": "gpt-alias", "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as s:
        async with s.post(
            gw.v1 + "/chat/completions",
            data=msgspec.json.encode(body),
            headers={"User-Agent": "sdk/1.2", "x-request-id": "r-1", "Content-Type": "application/json"},
        ) as r:
            answer = await r.read()
    [line] = captured_logs.requests()
    assert line["level"] == "info"
    assert line["timestamp"].endswith("Z")
    assert line["request_id"] == "r-1"
    assert line["endpoint"] == "chat/completions"
    assert line["model"] == "gpt-test"  # the public name, not the alias sent
    assert line["model_served"] == "gpt-upstream"
    assert line["provider"] == "fake"
    assert line["status"] == 200
    assert line["attempts"] == 1
    assert line["bytes_in"] == len(msgspec.json.encode(body))
    assert line["bytes_out"] == len(answer)
    assert line["client_addr"] == "127.0.0.1"
    assert line["user_agent"] == "sdk/1.2"
    assert line["duration_ms"] >= line["upstream_ms"] >= line["ttfb_ms"] >= 0
    assert line["overhead_ms"] == pytest.approx(line["duration_ms"] - line["upstream_ms"], abs=0.01)
    assert "error_type" not in line
    assert set(line) <= set(RequestRecord.__struct_fields__) | {"event", "level", "timestamp"}


async def test_unknown_model_is_a_caller_error_without_the_name_sent(
    captured_logs: Captured, provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    gw = await start(make_gateway, provider)
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.v1 + "/chat/completions", json={"model": "secret-name-42", "messages": []}) as r:
            assert r.status == 404
    [line] = captured_logs.requests()
    assert (line["status"], line["error_type"], line["error_code"], line["model"]) == (
        404, "caller", "model_not_found", "unknown")
    assert "secret-name-42" not in captured_logs.text


async def test_provider_error_keeps_status_type_and_code_but_not_its_message(
    captured_logs: Captured, provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    gw = await start(make_gateway, provider)
    provider.behaviour.status = 429
    provider.behaviour.error_body = (
        b'{"error":{"message":"you said ECHOED-PROMPT","type":"rate_limit_error","code":"rate_limit_exceeded"}}'
    )
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.v1 + "/chat/completions", json={"model": "gpt-test", "messages": []}) as r:
            assert r.status == 429
    [line] = captured_logs.requests()
    assert line["level"] == "warning"
    assert (line["error_type"], line["error_code"], line["upstream_status"]) == ("provider", "upstream_status", 429)
    assert (line["provider_error_type"], line["provider_error_code"]) == ("rate_limit_error", "rate_limit_exceeded")
    assert "ECHOED-PROMPT" not in captured_logs.text


async def test_provider_error_type_and_code_that_are_not_identifiers_are_other(
    captured_logs: Captured, provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    gw = await start(make_gateway, provider)
    provider.behaviour.status = 400
    provider.behaviour.error_body = b'{"error":{"type":"invalid request: you said X","code":"bad {x}"}}'
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.v1 + "/chat/completions", json={"model": "gpt-test", "messages": []}) as r:
            assert r.status == 400
    [line] = captured_logs.requests()
    assert line["upstream_status"] == 400
    assert (line["provider_error_type"], line["provider_error_code"]) == ("other", "other")
    assert "you said" not in captured_logs.text


# An identifier-like piece of the prompt, as a provider could put it in its
# error's type or code (a validation error naming the offending word).
PROMPT_WORD = "jane_doe_hba1c_9_4"


@pytest.mark.parametrize(
    ("path", "model", "error_body", "logged"),
    [
        ("/chat/completions", "gpt-test",
         b'{"error":{"message":"m","type":"%s","code":"%s"}}' % (PROMPT_WORD.encode(), PROMPT_WORD.encode()),
         ("other", "other")),
        ("/chat/completions", "gpt-test",
         b'{"error":{"message":"m","type":"invalid_request_error","code":"context_length_exceeded"}}',
         ("invalid_request_error", "context_length_exceeded")),
        ("/messages", "claude-test",
         b'{"type":"error","error":{"type":"%s","message":"m"}}' % PROMPT_WORD.encode(),
         ("other", None)),
        ("/messages", "claude-test",
         b'{"type":"error","error":{"type":"overloaded_error","message":"m"}}',
         ("overloaded_error", None)),
        # An OpenAI code is not an Anthropic type.
        ("/messages", "claude-test",
         b'{"type":"error","error":{"type":"context_length_exceeded","message":"m"}}',
         ("other", None)),
    ],
    ids=["openai-prompt-word", "openai-known", "anthropic-prompt-word", "anthropic-known", "anthropic-foreign"],
)
async def test_provider_error_type_and_code_are_kept_only_from_their_formats_documented_values(
    captured_logs: Captured, provider: FakeProvider, make_gateway: GatewayFactory,
    path: str, model: str, error_body: bytes, logged: tuple[str | None, str | None],
) -> None:
    gw = await start(make_gateway, provider)
    provider.behaviour.status = 400
    provider.behaviour.error_body = error_body
    body = {"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": f"about {PROMPT_WORD}"}]}
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.v1 + path, json=body) as r:
            assert r.status == 400
    [line] = captured_logs.requests()
    assert (line.get("provider_error_type"), line.get("provider_error_code")) == logged
    assert PROMPT_WORD not in captured_logs.text


@pytest.mark.parametrize(
    ("status", "logged"),
    [("RESOURCE_EXHAUSTED", "RESOURCE_EXHAUSTED"), (PROMPT_WORD.upper(), "other")],
    ids=["known", "prompt-word"],
)
async def test_a_translated_providers_own_error_status_is_logged_from_its_formats_values(
    captured_logs: Captured, provider: FakeProvider, make_gateway: GatewayFactory, status: str, logged: str
) -> None:
    cfg = basic_config(provider.base_url)
    cfg["providers"]["google"] = {"format": "gemini", "base_url": provider.root_url + "/v1beta", "api_key": "g"}
    cfg["models"]["gemini-test"] = {"deployments": [{"provider": "google", "model": "gemini-upstream"}]}
    cfg["pipeline"] = [{"name": "request_id"}, {"name": "logger"}]
    gw = await make_gateway(cfg)
    provider.behaviour.status = 429
    provider.behaviour.error_body = b'{"error":{"code":429,"message":"m","status":"%s"}}' % status.encode()
    body = {"model": "gemini-test", "messages": [{"role": "user", "content": f"about {PROMPT_WORD}"}]}
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.v1 + "/chat/completions", json=body) as r:
            answer = await r.json()
    # The OpenAI client gets a type its SDK knows; the log, Gemini's own words.
    assert (r.status, answer["error"]["type"]) == (429, "rate_limit_exceeded")
    [line] = captured_logs.requests()
    assert (line["provider_wire"], line["provider_error_type"], line["provider_error_code"]) == (
        "gemini", logged, "429")
    assert PROMPT_WORD.upper() not in captured_logs.text


def test_a_provider_error_value_is_its_formats_or_a_status() -> None:
    assert provider_error_value("RESOURCE_EXHAUSTED", "gemini", PROVIDER_ERROR_TYPES) == "RESOURCE_EXHAUSTED"
    assert provider_error_value("RESOURCE_EXHAUSTED", "openai", PROVIDER_ERROR_TYPES) == "other"
    assert provider_error_value("rate_limit_exceeded", "gemini", PROVIDER_ERROR_TYPES) == "other"
    assert provider_error_value("429", "openai", PROVIDER_ERROR_CODES) == "429"  # Azure's code
    assert provider_error_value("4290", "openai", PROVIDER_ERROR_CODES) == "other"
    assert provider_error_value("", "openai", PROVIDER_ERROR_CODES) is None
    assert provider_error_value(None, "anthropic", PROVIDER_ERROR_CODES) is None


async def test_provider_unreachable_is_a_provider_error(
    captured_logs: Captured, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(basic_config("http://127.0.0.1:9/v1", pipeline=LOGGED))
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.v1 + "/chat/completions", json={"model": "gpt-test", "messages": []}) as r:
            assert r.status == 502
    [line] = captured_logs.requests()
    assert (line["status"], line["error_type"], line["error_code"]) == (502, "provider", "upstream_unreachable")


async def test_stream_cut_by_provider_is_logged_with_the_status_sent(
    captured_logs: Captured, provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    gw = await start(make_gateway, provider)
    provider.behaviour.cut_after = 3
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.v1 + "/chat/completions", json={"model": "gpt-test", "stream": True, "messages": []}) as r:
            await r.read()
    [line] = captured_logs.requests()
    assert (line["status"], line["error_type"], line["error_code"]) == (200, "provider", "stream_broken")
    assert line["stream"] is True
    assert line["bytes_out"] > 0


async def test_client_abort_mid_stream_is_logged_as_499(
    captured_logs: Captured, provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    gw = await start(make_gateway, provider)
    provider.behaviour.chunk_interval = 0.3
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.v1 + "/chat/completions", json={"model": "gpt-test", "stream": True, "messages": []}) as r:
            await r.content.readline()
    for _ in range(100):
        if captured_logs.requests():
            break
        await asyncio.sleep(0.05)
    [line] = captured_logs.requests()
    assert (line["status"], line["error_type"], line["error_code"]) == (499, "caller", "client_disconnected")


async def test_client_gone_before_the_answer_is_499_in_log_and_metrics(
    captured_logs: Captured, provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    gw = await start(make_gateway, provider)
    provider.behaviour.delay_headers = 3.0
    async with aiohttp.ClientSession() as s:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await s.post(gw.v1 + "/chat/completions", json={"model": "gpt-test", "messages": []})
    for _ in range(100):
        if captured_logs.requests():
            break
        await asyncio.sleep(0.05)
    [line] = captured_logs.requests()
    assert (line["status"], line["error_type"], line["error_code"]) == (499, "caller", "client_disconnected")
    sample = gw.gateway.metrics.registry.get_sample_value(
        "lunos_requests_total",
        {"model": "gpt-test", "provider": "fake", "status_class": "4xx", "error_type": "caller"},
    )
    assert sample == 1


def _services(provider_url: str = "http://127.0.0.1:9/v1") -> Services:
    config = parse_config(msgspec.json.encode(basic_config(provider_url)).decode(), "t.yaml")
    return Services(config=config, store=None, metrics=None)  # type: ignore[arg-type]


async def test_internal_error_logs_type_and_stack_but_not_message(captured_logs: Captured) -> None:
    logger = Logger(Logger.Settings(), _services())

    async def broken(request: web.Request) -> web.StreamResponse:
        prompt = "LOCAL-PROMPT-TEXT"  # a local variable that must not be logged
        raise ValueError(f"could not parse {prompt}")

    request = make_mocked_request("POST", "/v1/chat/completions")
    exchange_of(request).request_id = "r-9"
    with pytest.raises(ValueError):
        await logger(request, broken)
    [line] = captured_logs.requests()
    assert line["level"] == "error"
    assert (line["status"], line["error_type"], line["error_code"]) == (500, "gateway", "internal_error")
    assert line["exception"]["type"] == "ValueError"
    assert any(frame.endswith(" in broken") for frame in line["exception"]["stack"])
    assert "LOCAL-PROMPT-TEXT" not in captured_logs.text


async def test_internal_error_is_marked_on_the_exchange_so_it_is_logged_once(captured_logs: Captured) -> None:
    logger = Logger(Logger.Settings(), _services())

    async def broken(request: web.Request) -> web.StreamResponse:
        raise ValueError("x")

    request = make_mocked_request("POST", "/v1/chat/completions")
    with pytest.raises(ValueError):
        await logger(request, broken)
    exchange = exchange_of(request)
    assert (exchange.error_type, exchange.error_code) == ("gateway", "internal_error")


async def test_a_write_to_a_client_gone_is_logged_as_499_without_a_stack(captured_logs: Captured) -> None:
    """The forwarder marks the Exchange before the reset propagates."""
    logger = Logger(Logger.Settings(), _services())

    async def hung_up(request: web.Request) -> web.StreamResponse:
        exchange_of(request).error_type, exchange_of(request).error_code = "caller", "client_disconnected"
        raise ConnectionResetError("Cannot write to closing transport")

    request = make_mocked_request("POST", "/v1/chat/completions")
    with pytest.raises(ConnectionResetError):
        await logger(request, hung_up)
    [line] = captured_logs.requests()
    assert (line["status"], line["error_type"], line["error_code"]) == (499, "caller", "client_disconnected")
    assert "exception" not in line


async def test_refusal_by_an_inner_plugin_is_logged_with_the_principal(captured_logs: Captured) -> None:
    logger = Logger(Logger.Settings(address="dropped"), _services())

    async def refuse(request: web.Request) -> web.StreamResponse:
        exchange_of(request).principal = Principal(account_id="acct_1", key_id="key_1", key_prefix="lk-ab12")
        raise errors.RateLimited("Too many requests.")

    request = make_mocked_request("POST", "/v1/chat/completions")
    with pytest.raises(errors.RateLimited):
        await logger(request, refuse)
    [line] = captured_logs.requests()
    assert (line["account_id"], line["key_id"], line["key_prefix"]) == ("acct_1", "key_1", "lk-ab12")
    assert (line["status"], line["error_type"], line["error_code"]) == (429, "policy", "rate_limit_exceeded")
    assert "client_addr" not in line


@pytest.mark.parametrize(
    ("mode", "addr", "logged"),
    [
        ("full", "192.0.2.17", "192.0.2.17"),
        ("truncated", "192.0.2.17", "192.0.2.0/24"),
        ("truncated", "2001:db8:1:2::5", "2001:db8:1::/48"),
        ("truncated", "::ffff:192.0.2.17", "192.0.2.0/24"),
        ("truncated", "not-an-address", None),
        ("dropped", "192.0.2.17", None),
    ],
)
def test_client_address_modes(mode: str, addr: str, logged: str | None) -> None:
    logger = Logger(Logger.Settings(address=mode), _services())  # type: ignore[arg-type]
    assert logger.address(addr) == logged


def test_hashed_address_is_keyed_and_stable() -> None:
    a = Logger(Logger.Settings(address="hashed", address_hash_key="k" * 16), _services())
    b = Logger(Logger.Settings(address="hashed", address_hash_key="j" * 16), _services())
    assert a.address("192.0.2.17") == a.address("192.0.2.17")
    assert len(a.address("192.0.2.17")) == 16
    assert a.address("192.0.2.17") != a.address("192.0.2.18")
    assert a.address("192.0.2.17") != b.address("192.0.2.17")
    assert "192.0.2" not in a.address("192.0.2.17")


def test_hashed_address_without_a_key_is_a_config_error(provider: FakeProvider) -> None:
    cfg = basic_config(provider.base_url)
    cfg["pipeline"] = [{"name": "logger", "settings": {"address": "hashed"}}]
    with pytest.raises(ConfigError) as e:
        parse_config(msgspec.json.encode(cfg).decode(), "lunos.yaml")
    assert e.value.problems == [
        "lunos.yaml: pipeline[0].settings: address: hashed needs an address_hash_key of 16+ characters"
    ]


def test_user_agent_is_cut_and_non_printable_dropped() -> None:
    logger = Logger(Logger.Settings(user_agent_length=8), _services())
    ex = Exchange(user_agent="python-httpx/0.27")
    assert logger.record(ex, 200, None, None).user_agent == "python-h"
    ex = Exchange(user_agent="bad\x00agent")
    assert logger.record(ex, 200, None, None).user_agent is None


def test_every_gateway_error_maps_into_the_taxonomy() -> None:
    from plugins.logger import _classify_error

    def subclasses(cls: type[errors.GatewayError]) -> list[type[errors.GatewayError]]:
        return [cls, *(s for c in cls.__subclasses__() for s in subclasses(c))]

    for cls in subclasses(errors.GatewayError):
        kind, code = _classify_error(cls("x"))
        assert kind in ERROR_CODES, cls
        assert code != "other", f"{cls.__name__} has no code in the taxonomy"
        assert code in ERROR_CODES[kind]


def test_codes_outside_the_taxonomy_are_logged_as_other() -> None:
    assert classify("caller", "made-up") == ("caller", "other")
    assert classify("nonsense", "x") == ("gateway", "other")
    assert classify("provider", "stream_stalled") == ("provider", "stream_stalled")


def test_record_fields_are_an_explicit_allow_list() -> None:
    # A new field is a privacy decision: add it here only for an id, a config
    # name, a number or a fixed code. The order is the line's, and the one
    # `Logger.record` passes the fields in.
    assert RequestRecord.__struct_fields__ == (
        "request_id", "trace_id", "account_id", "key_id", "key_prefix", "endpoint", "wire", "provider_wire",
        "stream", "model",
        "model_served", "provider", "deployment", "region", "status", "error_type", "error_code",
        "upstream_status", "provider_error_type", "provider_error_code", "attempts", "fallbacks",
        "deployments_tried", "duration_ms", "upstream_ms", "ttfb_ms", "overhead_ms",
        "input_tokens", "output_tokens", "cached_input_tokens", "cache_creation_tokens",
        "reasoning_tokens", "usage_source", "cost_micros", "bytes_in", "bytes_out",
        "client_addr", "user_agent", "exception",
    )


def test_each_field_of_the_record_comes_from_its_part_of_the_exchange() -> None:
    logger = Logger(Logger.Settings(address="full"), _services())
    ex = Exchange(client_addr="192.0.2.7", user_agent="sdk/9")
    ex.request_id, ex.trace_id, ex.endpoint = "r-1", "t" * 32, "chat/completions"
    ex.wire, ex.provider_wire, ex.stream = "anthropic", "openai", True
    ex.principal = Principal(account_id="acct", key_id="key", key_prefix="lk-12")
    ex.model, ex.served_model, ex.upstream_model = "gpt-alias", "gpt-served", "gpt-upstream"
    ex.provider, ex.deployment, ex.region = "fake", "fake/one", "eu"
    ex.attempts, ex.fallbacks, ex.deployments_tried = 3, 2, ["fake/zero", "fake/one"]
    ex.usage.input_tokens, ex.usage.output_tokens, ex.usage.cached_input_tokens = 11, 12, 13
    ex.usage.cache_creation_tokens, ex.usage.reasoning_tokens, ex.usage.source = 14, 15, "reported"
    ex.cost_micros, ex.bytes_in, ex.bytes_out = 16, 17, 18
    t = ex.timings
    t.received, t.upstream_start, t.first_byte, t.last_byte = 100.0, 100.25, 100.5, 101.0
    record = logger.record(ex, 201, "provider", "stream_broken")
    assert msgspec.to_builtins(record) == {
        "request_id": "r-1", "trace_id": "t" * 32, "account_id": "acct", "key_id": "key",
        "key_prefix": "lk-12", "endpoint": "chat/completions", "wire": "anthropic",
        "provider_wire": "openai", "stream": True, "model": "gpt-test", "model_served": "gpt-served",
        "provider": "fake", "deployment": "fake/one", "region": "eu", "status": 201,
        "error_type": "provider", "error_code": "stream_broken", "attempts": 3, "fallbacks": 2,
        "deployments_tried": ["fake/zero", "fake/one"], "duration_ms": 1000.0, "upstream_ms": 750.0,
        "ttfb_ms": 250.0, "overhead_ms": 250.0, "input_tokens": 11, "output_tokens": 12,
        "cached_input_tokens": 13, "cache_creation_tokens": 14, "reasoning_tokens": 15,
        "usage_source": "reported", "cost_micros": 16, "bytes_in": 17, "bytes_out": 18,
        "client_addr": "192.0.2.7", "user_agent": "sdk/9",
    }
    ex.served_model = "not an identifier"  # falls back to the name the config sent
    assert logger.record(ex, 200, None, None).model_served == "gpt-upstream"


def test_library_log_lines_keep_only_the_template_and_a_safe_stack(captured_logs: Captured) -> None:
    try:
        raise KeyError("LIB-SECRET")
    except KeyError:
        logging.getLogger("aiohttp.server").exception("Error handling request from %s", "LIB-SECRET")
    logging.getLogger("asyncio").error("Task exception was never retrieved\nfuture: <Task LIB-SECRET>")
    first, second = captured_logs.lines()
    assert (first["event"], first["message"]) == ("library_log", "Error handling request from %s")
    assert first["logger"] == "aiohttp.server"
    assert first["level"] == "error"
    assert first["exception"]["type"] == "KeyError"
    assert second["message"] == "Task exception was never retrieved"
    assert "LIB-SECRET" not in captured_logs.text


async def test_a_routed_request_logs_the_providers_model_as_served(
    captured_logs: Captured, provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    cfg = basic_config(provider.base_url)
    cfg["pipeline"] = [*LOGGED, {"name": "router"}]
    gw = await make_gateway(cfg)
    body = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as s, s.post(gw.v1 + "/chat/completions", json=body) as r:
        assert r.status == 200
    [line] = captured_logs.requests()
    assert (line["model"], line["model_served"]) == ("gpt-test", "gpt-upstream")


def test_truncate_address_handles_ipv6_loopback() -> None:
    assert truncate_address("::1") == "::/48"


async def test_a_closed_log_stream_does_not_fail_the_request() -> None:
    import io

    from lunos_proxy.logs import configure_logging

    stream = io.StringIO()
    configure_logging("info", "json", stream)
    logger = Logger(Logger.Settings(), _services())
    stream.close()

    async def ok(request: web.Request) -> web.StreamResponse:
        return web.Response(status=204)

    response = await logger(make_mocked_request("GET", "/v1/models"), ok)
    assert response.status == 204


def test_the_console_format_writes_a_safe_stack_and_nothing_to_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import io

    import structlog

    from lunos_proxy.logs import configure_logging

    stream = io.StringIO()
    configure_logging("info", "console", stream)
    try:
        try:
            raise ValueError("CANARY-in-message")
        except ValueError:
            logging.getLogger("aiohttp.server").exception("Error handling request %s", "CANARY-arg")
            structlog.get_logger("lunos.test").exception("plugin failed")
    finally:
        configure_logging("info", "json")
    text = stream.getvalue()
    assert text.count("ValueError") == 2 and "Error handling request" in text
    assert "CANARY" not in text
    assert capsys.readouterr().err == ""  # no "--- Logging error ---" with the raw arguments
