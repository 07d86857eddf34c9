"""The span tree of a traced request, its attributes, and the trace context
from the client through the gateway to the provider."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import anthropic
import openai
import pytest
from aiohttp import web
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from lunos_proxy.exchange import exchange_of
from lunos_proxy.plugin import Handler, Plugin
from tests.conftest import GatewayFactory, Running
from tests.e2e.test_translation import Demo
from tests.entry_points import register_plugins
from tests.fakes import CHUNKS, COMPLETION_TOKENS, PROMPT_TOKENS, FakeProvider
from tests.logcapture import Captured
from tests.tracing.conftest import (
    CLIENT_SPAN,
    CLIENT_TRACE,
    CLIENT_TRACEPARENT,
    finished,
    hex_ids,
    parent_of,
    settled,
    traced_config,
)


def by_name(spans: list[ReadableSpan]) -> dict[str, list[ReadableSpan]]:
    out: dict[str, list[ReadableSpan]] = {}
    for s in spans:
        out.setdefault(s.name, []).append(s)
    return out


async def test_a_retried_request_is_one_tree_under_the_clients_span_and_each_attempt_is_the_providers_parent(
    provider: FakeProvider, make_gateway: GatewayFactory, exporter: InMemorySpanExporter
) -> None:
    gw = await make_gateway(traced_config(provider.base_url))
    provider.behaviour.statuses = [500]  # the first deployment fails, the second answers
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.v1 + "/chat/completions", json={"model": "gpt-alias", "messages": []},
                          headers={"traceparent": CLIENT_TRACEPARENT, "tracestate": "vendor=1"}) as r:
            assert r.status == 200
    spans = await finished(gw, exporter)
    names = by_name(spans)
    assert sorted(names) == sorted([
        "POST /v1/chat/completions", "plugin request_id", "plugin meter", "plugin router",
        "chat gpt-upstream", "chat gpt-second",
    ])
    [root] = names["POST /v1/chat/completions"]
    [request_id] = names["plugin request_id"]
    [meter] = names["plugin meter"]
    [router] = names["plugin router"]
    [first] = names["chat gpt-upstream"]
    [second] = names["chat gpt-second"]

    # One trace, the client's; each span the child of the layer around it.
    assert {hex_ids(s)[0] for s in spans} == {CLIENT_TRACE}
    assert parent_of(root) == CLIENT_SPAN and root.parent is not None and root.parent.is_remote
    assert parent_of(request_id) == hex_ids(root)[1]
    assert parent_of(meter) == hex_ids(request_id)[1]
    assert parent_of(router) == hex_ids(meter)[1]
    assert parent_of(first) == parent_of(second) == hex_ids(router)[1]
    assert (root.kind, router.kind, first.kind) == (SpanKind.SERVER, SpanKind.INTERNAL, SpanKind.CLIENT)
    assert first.start_time is not None and second.start_time is not None
    assert first.start_time < second.start_time

    # The provider saw our attempt spans as parents, not the client's span;
    # the client's tracestate went on as the allow-list passes it.
    sent = [r.headers for r in provider.received]
    assert [h["traceparent"] for h in sent] == [
        f"00-{CLIENT_TRACE}-{hex_ids(first)[1]}-01", f"00-{CLIENT_TRACE}-{hex_ids(second)[1]}-01",
    ]
    assert [h["tracestate"] for h in sent] == ["vendor=1", "vendor=1"]

    assert dict(root.attributes or {}) == {
        "http.request.method": "POST",
        "http.route": "/v1/chat/completions",
        "http.response.status_code": 200,
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-test",  # the public name, not the alias the client sent
        "gen_ai.provider.name": "openai",
        "gen_ai.response.model": "gpt-second",
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.usage.input_tokens": PROMPT_TOKENS,
        "gen_ai.usage.output_tokens": COMPLETION_TOKENS,
        "lunos.deployment": "fake/gpt-second",
        "lunos.attempts": 2,
        "lunos.fallbacks": 0,
        "lunos.stream": False,
    }
    assert root.status.status_code is StatusCode.UNSET
    assert dict(first.attributes or {}) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-upstream",
        "server.address": "127.0.0.1",
        "server.port": provider.port,
        "lunos.provider": "fake",
        "lunos.deployment": "fake/gpt-upstream",
        "lunos.model": "gpt-test",
        "lunos.attempt": 1,
        "lunos.fallback": 0,
        "lunos.retryable": True,
        "http.response.status_code": 500,
        "error.type": "upstream_status",
        "lunos.error_class": "provider",
    }
    assert first.status.status_code is StatusCode.ERROR and first.status.description is None
    assert dict(second.attributes or {}) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-second",
        "server.address": "127.0.0.1",
        "server.port": provider.port,
        "lunos.provider": "fake",
        "lunos.deployment": "fake/gpt-second",
        "lunos.model": "gpt-test",
        "lunos.attempt": 2,
        "lunos.fallback": 0,
        "http.response.status_code": 200,
        "gen_ai.response.model": "gpt-second",
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.usage.input_tokens": PROMPT_TOKENS,
        "gen_ai.usage.output_tokens": COMPLETION_TOKENS,
    }
    assert dict(router.attributes or {}) == {"lunos.plugin": "router"}
    for span in spans:
        assert span.events == () and span.links == ()


async def test_a_fallback_attempt_names_its_model_and_a_failed_request_is_an_error(
    provider: FakeProvider, make_gateway: GatewayFactory, exporter: InMemorySpanExporter
) -> None:
    cfg = traced_config(provider.base_url)
    cfg["pipeline"][2]["settings"]["max_attempts"] = 4
    gw = await make_gateway(cfg)
    provider.behaviour.status = 503  # everything fails: two deployments, then the fallback
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.v1 + "/chat/completions", json={"model": "gpt-test", "messages": []}) as r:
            assert r.status == 503
    spans = await finished(gw, exporter)
    attempts = sorted((s for s in spans if s.kind is SpanKind.CLIENT), key=lambda s: s.start_time or 0)
    assert [(s.name, (s.attributes or {})["lunos.attempt"], (s.attributes or {})["lunos.fallback"],
             (s.attributes or {})["lunos.model"]) for s in attempts] == [
        ("chat gpt-upstream", 1, 0, "gpt-test"),
        ("chat gpt-second", 2, 0, "gpt-test"),
        ("chat gpt-same", 3, 1, "gpt-same"),
    ]
    [root] = [s for s in spans if s.kind is SpanKind.SERVER]
    assert parent_of(root) is None  # no traceparent from the client: a new trace
    attrs = dict(root.attributes or {})
    assert {k: attrs[k] for k in ("http.response.status_code", "error.type", "lunos.error_class",
                                  "lunos.attempts", "lunos.fallbacks", "lunos.deployment")} == {
        "http.response.status_code": 503, "error.type": "upstream_status", "lunos.error_class": "provider",
        "lunos.attempts": 3, "lunos.fallbacks": 1, "lunos.deployment": "fake/gpt-same",
    }
    assert "gen_ai.response.model" not in attrs and "gen_ai.usage.input_tokens" not in attrs
    assert root.status.status_code is StatusCode.ERROR and root.status.description is None
    # Every hop to the provider continued the gateway's new trace (its flags
    # say sampled, and that the trace id is random: W3C trace context level 2).
    trace_id = hex_ids(root)[0]
    assert [r.headers["traceparent"] for r in provider.received] == [
        f"00-{trace_id}-{hex_ids(s)[1]}-03" for s in attempts
    ]


async def test_a_streamed_anthropic_answer_records_its_model_stop_reason_and_usage(
    provider: FakeProvider, make_gateway: GatewayFactory, exporter: InMemorySpanExporter
) -> None:
    gw = await make_gateway(traced_config(provider.base_url))
    body = {"model": "claude-test", "max_tokens": 5, "stream": True, "messages": []}
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.url + "/v1/messages", json=body) as r:
            assert r.status == 200
            await r.read()
    spans = await finished(gw, exporter)
    [root] = [s for s in spans if s.kind is SpanKind.SERVER]
    [attempt] = [s for s in spans if s.kind is SpanKind.CLIENT]
    assert root.name == "POST /v1/messages" and attempt.name == "chat claude-upstream"
    for span in (root, attempt):
        attrs = dict(span.attributes or {})
        assert {k: attrs[k] for k in ("gen_ai.provider.name", "gen_ai.response.model",
                                      "gen_ai.response.finish_reasons", "gen_ai.usage.input_tokens",
                                      "gen_ai.usage.output_tokens")} == {
            "gen_ai.provider.name": "anthropic", "gen_ai.response.model": "claude-upstream",
            "gen_ai.response.finish_reasons": ("end_turn",), "gen_ai.usage.input_tokens": PROMPT_TOKENS,
            "gen_ai.usage.output_tokens": COMPLETION_TOKENS,
        }
    assert dict(root.attributes or {})["lunos.stream"] is True


async def test_a_refused_request_ends_in_the_refusing_plugin_without_an_attempt(
    provider: FakeProvider, make_gateway: GatewayFactory, exporter: InMemorySpanExporter
) -> None:
    gw = await make_gateway(traced_config(provider.base_url))
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.v1 + "/chat/completions", json={"model": "no-such-model", "messages": []}) as r:
            assert r.status == 404
    spans = await finished(gw, exporter)
    assert sorted(s.name for s in spans) == sorted(
        ["POST /v1/chat/completions", "plugin request_id", "plugin meter", "plugin router"]
    )
    for span in spans:
        attrs = dict(span.attributes or {})
        assert attrs["error.type"] == "model_not_found" and attrs["lunos.error_class"] == "caller"
        assert span.status.status_code is StatusCode.UNSET  # a 4xx is the client's
    [root] = [s for s in spans if s.kind is SpanKind.SERVER]
    assert dict(root.attributes or {})["gen_ai.request.model"] == "unknown"
    assert provider.received == []


async def stream(gw: Running, *, leave_early: bool) -> None:
    """A streamed chat, read whole or left after its first line."""
    async with aiohttp.ClientSession() as s, s.post(
        gw.v1 + "/chat/completions", json={"model": "gpt-test", "stream": True, "messages": []}
    ) as r:
        assert r.status == 200
        if leave_early:
            await r.content.readline()
            r.close()
        else:
            await r.read()


async def test_a_stream_the_provider_breaks_after_its_200_is_an_error(
    provider: FakeProvider, make_gateway: GatewayFactory, exporter: InMemorySpanExporter
) -> None:
    gw = await make_gateway(traced_config(provider.base_url))
    provider.behaviour.cut_after = 2
    await stream(gw, leave_early=False)
    spans = await settled(gw, exporter)
    [root] = [s for s in spans if s.kind is SpanKind.SERVER]
    [attempt] = [s for s in spans if s.kind is SpanKind.CLIENT]
    for span in (root, attempt):
        attrs = dict(span.attributes or {})
        assert (attrs["http.response.status_code"], attrs["error.type"], attrs["lunos.error_class"]) == (
            200, "stream_broken", "provider")
        assert span.status.status_code is StatusCode.ERROR


async def test_a_client_that_goes_away_mid_stream_is_recorded_but_not_an_error(
    provider: FakeProvider, make_gateway: GatewayFactory, exporter: InMemorySpanExporter
) -> None:
    gw = await make_gateway(traced_config(provider.base_url))
    provider.behaviour.chunk_interval = 0.2
    await stream(gw, leave_early=True)
    spans = await settled(gw, exporter)  # the gateway notices at its next write
    assert len(spans) == 5
    for span in spans:
        attrs = dict(span.attributes or {})
        assert attrs["error.type"] == "client_disconnected", span.name
        assert span.status.status_code is StatusCode.UNSET, span.name


@pytest.mark.parametrize(("path", "body", "operation"), [
    ("/v1/chat/completions", {"model": "gpt-test", "messages": []}, "chat"),
    ("/v1/completions", {"model": "gpt-test", "prompt": "x"}, "text_completion"),
    ("/v1/embeddings", {"model": "gpt-test", "input": "x"}, "embeddings"),
    ("/v1/responses", {"model": "gpt-test", "input": "x"}, "chat"),
    ("/v1/messages", {"model": "claude-test", "max_tokens": 5, "messages": []}, "chat"),
    ("/v1/messages/count_tokens", {"model": "claude-test", "messages": []}, "count_tokens"),
])
async def test_each_endpoint_names_its_genai_operation(
    path: str, body: dict[str, object], operation: str,
    provider: FakeProvider, make_gateway: GatewayFactory, exporter: InMemorySpanExporter,
) -> None:
    gw = await make_gateway(traced_config(provider.base_url))
    async with aiohttp.ClientSession() as s, s.post(gw.url + path, json=body) as r:
        assert r.status == 200
    spans = await finished(gw, exporter)
    [root] = [s for s in spans if s.kind is SpanKind.SERVER]
    [attempt] = [s for s in spans if s.kind is SpanKind.CLIENT]
    assert root.name == f"POST {path}"
    assert (root.attributes or {})["gen_ai.operation.name"] == operation
    assert (attempt.attributes or {})["gen_ai.operation.name"] == operation
    assert attempt.name.startswith(f"{operation} ")


async def test_without_a_router_the_attempt_is_under_the_last_plugin(
    provider: FakeProvider, make_gateway: GatewayFactory, exporter: InMemorySpanExporter
) -> None:
    cfg = traced_config(provider.base_url)
    cfg["pipeline"] = [{"name": "request_id"}]
    gw = await make_gateway(cfg)
    async with aiohttp.ClientSession() as s, s.post(
        gw.v1 + "/chat/completions", json={"model": "gpt-alias", "messages": []}
    ) as r:
        assert r.status == 200
    spans = await finished(gw, exporter)
    [plugin] = [s for s in spans if s.name == "plugin request_id"]
    [attempt] = [s for s in spans if s.kind is SpanKind.CLIENT]
    assert parent_of(attempt) == hex_ids(plugin)[1]
    attrs = dict(attempt.attributes or {})
    assert (attrs["lunos.deployment"], attrs["lunos.model"], attrs["lunos.attempt"]) == (
        "fake/gpt-upstream", "gpt-test", 1)


async def test_the_sdks_trace_context_runs_through_the_gateway_to_the_provider(
    provider: FakeProvider, make_gateway: GatewayFactory, exporter: InMemorySpanExporter
) -> None:
    gw = await make_gateway(traced_config(provider.base_url))
    client = openai.AsyncOpenAI(base_url=gw.v1, api_key="lk-client-key", max_retries=0)
    chunks = await client.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "hi"}], stream=True,
        extra_headers={"traceparent": CLIENT_TRACEPARENT})
    assert "".join([c.choices[0].delta.content or "" async for c in chunks if c.choices]) == "".join(CHUNKS)
    claude = anthropic.AsyncAnthropic(base_url=gw.url, api_key="lk-client-key", max_retries=0)
    message = await claude.messages.create(
        model="claude-test", max_tokens=5, messages=[{"role": "user", "content": "hi"}],
        extra_headers={"traceparent": CLIENT_TRACEPARENT})
    assert message.stop_reason == "end_turn"
    spans = await finished(gw, exporter)
    attempts = sorted((s for s in spans if s.kind is SpanKind.CLIENT), key=lambda s: s.start_time or 0)
    assert [r.headers["traceparent"] for r in provider.received] == [
        f"00-{CLIENT_TRACE}-{hex_ids(s)[1]}-01" for s in attempts]
    roots = [s for s in spans if s.kind is SpanKind.SERVER]
    assert [parent_of(s) for s in roots] == [CLIENT_SPAN, CLIENT_SPAN]
    assert [(s.attributes or {})["gen_ai.response.finish_reasons"] for s in attempts] == [
        ("stop",), ("end_turn",)]


class Broken(Plugin):
    """A plugin with a bug: its exception's message quotes the request."""

    name = "broken"

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        raise RuntimeError(f"broke on {exchange_of(request).body.decode()}")


async def test_a_bug_in_a_plugin_is_a_500_named_by_its_class_and_nothing_of_its_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    provider: FakeProvider, make_gateway: GatewayFactory, exporter: InMemorySpanExporter,
) -> None:
    register_plugins(tmp_path, "tracing-test-plugins", {"broken": f"{__name__}:Broken"}, monkeypatch)
    cfg = traced_config(provider.base_url)
    cfg["pipeline"].insert(1, {"name": "broken"})
    gw = await make_gateway(cfg)
    async with aiohttp.ClientSession() as s, s.post(
        gw.v1 + "/chat/completions", json={"model": "gpt-test", "messages": [{"content": "CANARYbug"}]}
    ) as r:
        assert r.status == 500
    spans = await finished(gw, exporter)
    assert sorted(s.name for s in spans) == sorted(
        ["POST /v1/chat/completions", "plugin request_id", "plugin broken"])
    for span in spans:
        attrs = dict(span.attributes or {})
        assert (attrs["error.type"], attrs["lunos.error_class"]) == ("RuntimeError", "gateway")
        assert span.status.status_code is StatusCode.ERROR and span.status.description is None
        assert span.events == ()
        assert "CANARY" not in span.to_json()
    [root] = [s for s in spans if s.kind is SpanKind.SERVER]
    assert (root.attributes or {})["http.response.status_code"] == 500


async def test_a_translated_answer_is_read_as_the_client_gets_it(
    demo: Demo, provider: FakeProvider, make_gateway: GatewayFactory, exporter: InMemorySpanExporter
) -> None:
    cfg = traced_config(provider.base_url)
    cfg["providers"]["google"] = {"format": "gemini", "api_key": "goog-key",
                                  "base_url": demo.url.removesuffix("/v1") + "/v1beta"}
    cfg["models"]["gemini-test"] = {"deployments": [{"provider": "google", "model": "gemini-upstream"}]}
    gw = await make_gateway(cfg)
    client = openai.AsyncOpenAI(base_url=gw.v1, api_key="lk-client-key", max_retries=0)
    chunks = await client.chat.completions.create(
        model="gemini-test", messages=[{"role": "user", "content": "hi"}], stream=True)
    assert [c async for c in chunks]
    spans = await settled(gw, exporter)
    [attempt] = [s for s in spans if s.kind is SpanKind.CLIENT]
    attrs = dict(attempt.attributes or {})
    assert attempt.name == "chat gemini-upstream"
    assert {k: attrs[k] for k in ("gen_ai.provider.name", "gen_ai.request.model", "lunos.provider",
                                  "gen_ai.response.finish_reasons", "http.response.status_code")} == {
        "gen_ai.provider.name": "gcp.gemini", "gen_ai.request.model": "gemini-upstream",
        "lunos.provider": "google", "gen_ai.response.finish_reasons": ("stop",),
        "http.response.status_code": 200,
    }
    assert demo.received[-1][1]["contents"]  # the provider got Gemini's shape


async def test_the_request_log_line_names_the_trace_it_is_recorded_in(
    provider: FakeProvider, make_gateway: GatewayFactory, exporter: InMemorySpanExporter,
    captured_logs: Captured,
) -> None:
    cfg = traced_config(provider.base_url)
    cfg["pipeline"] = [{"name": "request_id"}, {"name": "logger"}]
    gw = await make_gateway(cfg)
    async with aiohttp.ClientSession() as s:
        for headers in ({"traceparent": CLIENT_TRACEPARENT}, {}):
            async with s.post(
                gw.v1 + "/chat/completions", json={"model": "gpt-test", "messages": []}, headers=headers
            ) as r:
                assert r.status == 200
    spans = await settled(gw, exporter)
    roots = sorted((s for s in spans if s.kind is SpanKind.SERVER), key=lambda s: s.start_time or 0)
    traces = [hex_ids(s)[0] for s in roots]
    assert traces[0] == CLIENT_TRACE and traces[1] != CLIENT_TRACE
    assert [line["trace_id"] for line in captured_logs.requests()] == traces


async def test_a_request_sampled_out_has_no_trace_id_in_its_log_line(
    provider: FakeProvider, make_gateway: GatewayFactory, exporter: InMemorySpanExporter,
    captured_logs: Captured,
) -> None:
    cfg = traced_config(provider.base_url, sample_ratio=0.0)
    cfg["pipeline"] = [{"name": "request_id"}, {"name": "logger"}]
    gw = await make_gateway(cfg)
    async with aiohttp.ClientSession() as s, s.post(
        gw.v1 + "/chat/completions", json={"model": "gpt-test", "messages": []}
    ) as r:
        assert r.status == 200
    [line] = captured_logs.requests()
    assert "trace_id" not in line
    assert await finished(gw, exporter) == []
