"""Tracing off costs nothing; on, it is sampled as configured, checked
strictly when the config loads, and follows a reload."""

from __future__ import annotations

import asyncio
import gc
import json
import re
import subprocess
import sys
import textwrap
import weakref
from typing import Any

import aiohttp
import pytest
import yaml
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from lunos_proxy.app import _through
from lunos_proxy.config import ConfigError
from lunos_proxy.forward import Forwarder
from lunos_proxy.loading import parse_config
from lunos_proxy.plugin import Plugin
from tests.conftest import GatewayFactory, Running, basic_config
from tests.fakes import FakeProvider
from tests.tracing.conftest import CLIENT_TRACE, CLIENT_TRACEPARENT, finished, traced_config


async def chat(gw: Running, headers: dict[str, str] | None = None) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.v1 + "/chat/completions", json={"model": "gpt-test", "messages": []},
                          headers=headers or {}) as r:
            assert r.status == 200


async def test_off_the_pipeline_is_built_without_tracing_and_the_clients_traceparent_passes_untouched(
    gw: Running, provider: FakeProvider
) -> None:
    generation = gw.gateway.generation
    assert generation is not None and generation.tracing is None
    assert type(generation.forwarder) is Forwarder
    # The outermost layer is the first plugin itself, not a wrapper around the pipeline.
    assert generation.pipeline.func is _through  # type: ignore[attr-defined]
    assert isinstance(generation.pipeline.args[0], Plugin)  # type: ignore[attr-defined]
    await chat(gw, {"traceparent": CLIENT_TRACEPARENT, "tracestate": "vendor=1"})
    sent = provider.received[0].headers
    assert (sent["traceparent"], sent["tracestate"]) == (CLIENT_TRACEPARENT, "vendor=1")


SERVE_ONE = textwrap.dedent("""
    import asyncio, json, sys
    import aiohttp
    from aiohttp import web
    from lunos_proxy.app import Gateway
    from lunos_proxy.loading import parse_config

    async def main() -> None:
        gateway = Gateway(parse_config(sys.argv[1], "t.yaml"))
        await gateway.start()
        runner = web.AppRunner(gateway.public_app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        async with aiohttp.ClientSession() as s, s.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={"model": "demo", "messages": [{"role": "user", "content": "hi"}]},
        ) as r:
            status = r.status
        await runner.cleanup()
        await gateway.close()
        print(json.dumps([status, sorted(m for m in sys.modules if m.startswith("opentelemetry"))]))

    asyncio.run(main())
""")


@pytest.mark.parametrize("enabled", [False, True])
def test_the_sdk_is_imported_only_when_tracing_is_on(enabled: bool) -> None:
    config = {
        "store": {"url": "memory://"},
        "providers": {"demo": {"format": "demo"}},
        "models": {"demo": {"deployments": [{"provider": "demo", "model": "demo"}]}},
        "pipeline": [{"name": "request_id"}],
        # An endpoint nothing listens on: the exporter's failures stay on its thread.
        "tracing": {"enabled": enabled, "endpoint": "http://127.0.0.1:9", "export_timeout_seconds": 0.5},
    }
    out = subprocess.run([sys.executable, "-c", SERVE_ONE, yaml.safe_dump(config)],
                         capture_output=True, text=True, timeout=60, check=True)
    status, modules = json.loads(out.stdout.strip().splitlines()[-1])
    assert status == 200
    if enabled:
        assert {"opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.http.trace_exporter"} <= set(modules)
    else:
        assert modules == []


async def test_sample_ratio_zero_records_nothing_yet_the_provider_gets_a_traceparent(
    provider: FakeProvider, make_gateway: GatewayFactory, exporter: InMemorySpanExporter
) -> None:
    gw = await make_gateway(traced_config(provider.base_url, sample_ratio=0.0))
    await chat(gw)
    assert await finished(gw, exporter) == []
    flags = re.fullmatch(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})",
                         provider.received[0].headers["traceparent"])
    assert flags is not None and int(flags.group(3), 16) & 1 == 0  # not sampled
    # A caller that records its trace has it recorded here too (parent-based sampling).
    await chat(gw, {"traceparent": CLIENT_TRACEPARENT})
    spans = await finished(gw, exporter)
    assert len(spans) == 5 and {f"{s.context.trace_id:032x}" for s in spans if s.context} == {CLIENT_TRACE}


async def test_a_caller_that_does_not_record_its_trace_is_not_recorded_but_continued(
    provider: FakeProvider, make_gateway: GatewayFactory, exporter: InMemorySpanExporter
) -> None:
    gw = await make_gateway(traced_config(provider.base_url))
    await chat(gw, {"traceparent": f"00-{CLIENT_TRACE}-b7ad6b7169203331-00"})
    assert await finished(gw, exporter) == []
    sent = provider.received[0].headers["traceparent"]
    assert sent.startswith(f"00-{CLIENT_TRACE}-") and sent.endswith("-00")
    assert sent != f"00-{CLIENT_TRACE}-b7ad6b7169203331-00"  # a span of ours in between


@pytest.mark.parametrize("traceparent", [
    "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # all-zero trace id
    "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # forbidden version
    "not a traceparent",
])
async def test_a_malformed_traceparent_starts_a_new_trace(
    traceparent: str, provider: FakeProvider, make_gateway: GatewayFactory, exporter: InMemorySpanExporter
) -> None:
    gw = await make_gateway(traced_config(provider.base_url))
    await chat(gw, {"traceparent": traceparent})
    spans = await finished(gw, exporter)
    [root] = [s for s in spans if s.parent is None]
    assert root.name == "POST /v1/chat/completions" and len(spans) == 5
    assert root.context is not None
    assert provider.received[0].headers["traceparent"].startswith(f"00-{root.context.trace_id:032x}-")


async def test_a_reload_turns_tracing_on_and_off(
    provider: FakeProvider, make_gateway: GatewayFactory, exporter: InMemorySpanExporter
) -> None:
    gw = await make_gateway(basic_config(provider.base_url))
    traced = traced_config(provider.base_url)
    await gw.gateway.swap(parse_config(yaml.safe_dump(traced), "test.yaml"))
    await chat(gw)
    assert len(await finished(gw, exporter)) == 5  # request, request_id, meter, router, attempt
    traced_generation = gw.gateway.generation
    assert traced_generation is not None and traced_generation.tracing is not None
    replaced = weakref.ref(traced_generation.tracing.provider)  # type: ignore[arg-type]
    del traced_generation
    traced["tracing"]["enabled"] = False
    await gw.gateway.swap(parse_config(yaml.safe_dump(traced), "test.yaml"))
    generation = gw.gateway.generation
    assert generation is not None and generation.tracing is None
    await chat(gw)
    assert provider.received[-1].headers.get("traceparent") is None
    # The replaced generation closed its tracing, and nothing keeps it alive.
    for _ in range(50):
        gc.collect()
        if replaced() is None:
            break
        await asyncio.sleep(0.05)
    assert replaced() is None


def problems(section: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_config(yaml.safe_dump({"tracing": section}), "lunos.yaml")
    return e.value.problems


def test_the_section_is_checked_strictly() -> None:
    assert problems({"enabled": True, "sample_ratio": 1.5}) == [
        "lunos.yaml: tracing.sample_ratio: expected float <= 1.0"]
    assert problems({"enabled": True, "endpiont": "http://c:4318"}) == [
        "lunos.yaml: tracing: object contains unknown field endpiont (did you mean endpoint?)"]
    assert problems({"export_timeout_seconds": 0}) == [
        "lunos.yaml: tracing.export_timeout_seconds: expected float > 0.0"]
    assert problems({"enabled": True, "endpoint": "collector:4318", "service_name": "lunos proxy",
                     "headers": {"x-tenant id": "1"}}) == [
        "lunos.yaml: tracing.endpoint: expected an http(s) URL such as http://collector:4318",
        "lunos.yaml: tracing.service_name: expected 1 to 100 letters, digits or ._:/-",
        "lunos.yaml: tracing.headers: 'x-tenant id' is not an HTTP header name",
    ]
    cfg = parse_config("tracing: {enabled: true, endpoint: 'https://otel.example/otlp/'}", "lunos.yaml")
    assert cfg.tracing.traces_url == "https://otel.example/otlp/v1/traces"
    assert parse_config("", "lunos.yaml").tracing.enabled is False
