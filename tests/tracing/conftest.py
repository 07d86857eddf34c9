"""Tracing fixtures: every generation's spans go to an in-memory exporter.

The gateway, the pipeline and the fake provider are real (loopback); only
the OTLP exporter is replaced by the SDK's `InMemorySpanExporter`, behind
the same `BatchSpanProcessor` (test_export.py sends to a real OTLP/HTTP
receiver instead).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from lunos_proxy.tracing import spans as tracing_spans
from lunos_proxy.tracing.settings import TracingConfig
from tests.conftest import Running, basic_config
from tests.e2e.test_translation import demo  # noqa: F401 - the demo provider on loopback (fixture)

CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
CLIENT_TRACEPARENT = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()

    def in_memory(settings: TracingConfig) -> InMemorySpanExporter:
        return memory

    monkeypatch.setattr(tracing_spans, "otlp_exporter", in_memory)
    yield memory


def traced_config(provider_url: str, **tracing: Any) -> dict[str, Any]:
    """The basic config with tracing on, a meter (usage) and a router that
    tries a second deployment, then the fallback model."""
    cfg = basic_config(provider_url)
    cfg["tracing"] = {"enabled": True, **tracing}
    cfg["models"]["gpt-test"] = {
        "aliases": ["gpt-alias"],
        "fallbacks": ["gpt-same"],
        "deployments": [
            {"provider": "fake", "model": "gpt-upstream", "priority": 1},
            {"provider": "fake", "model": "gpt-second", "priority": 2},
        ],
    }
    cfg["pipeline"] = [
        {"name": "request_id"},
        {"name": "meter"},
        {"name": "router", "settings": {"max_attempts": 3, "seed": 1}},
    ]
    return cfg


async def finished(gw: Running, exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    """Every span ended so far, once the batch processor has handed them over."""
    generation = gw.gateway.generation
    assert generation is not None and generation.tracing is not None
    # A request's spans end with it, which may be after the client has its
    # whole answer (the meter counts tokens off the loop, then settles).
    for _ in range(500):
        if not generation.in_flight:
            break
        await asyncio.sleep(0.01)
    provider = generation.tracing.provider
    assert provider is not None
    await asyncio.to_thread(provider.force_flush)
    return list(exporter.get_finished_spans())


async def settled(gw: Running, exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    """`finished` once the request span has ended: a client can have read
    the last byte (or left) before the gateway's handler returns."""
    for _ in range(50):
        spans = await finished(gw, exporter)
        if any(s.kind is SpanKind.SERVER for s in spans):
            return spans
        await asyncio.sleep(0.1)
    raise AssertionError("no request span ended")


def hex_ids(span: ReadableSpan) -> tuple[str, str]:
    ctx = span.get_span_context()
    assert ctx is not None
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


def parent_of(span: ReadableSpan) -> str | None:
    return None if span.parent is None else f"{span.parent.span_id:016x}"
