"""Spans reach a real OTLP/HTTP receiver on loopback, and a collector that
stalls never holds up a request (exports run on the processor's thread)."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.conftest import GatewayFactory, Running, free_port
from tests.fakes import FakeProvider
from tests.serve_support import serve_process, until_ready
from tests.tracing.conftest import traced_config


class Collector:
    """An OTLP/HTTP trace receiver: keeps each export's headers and request."""

    def __init__(self) -> None:
        self.exports: list[tuple[dict[str, str], ExportTraceServiceRequest]] = []
        self.stall = 0.0
        self.port = free_port()

    async def receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.stall:
            await asyncio.sleep(self.stall)
        message = ExportTraceServiceRequest()
        message.ParseFromString(body)
        self.exports.append(({k.lower(): v for k, v in request.headers.items()}, message))
        return web.Response(body=b"", content_type="application/x-protobuf")

    def span_names(self) -> list[str]:
        return [span.name for _, m in self.exports for rs in m.resource_spans
                for ss in rs.scope_spans for span in ss.spans]


@pytest.fixture
async def collector() -> AsyncIterator[Collector]:
    c = Collector()
    app = web.Application()
    app.router.add_post("/otlp/v1/traces", c.receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", c.port).start()
    yield c
    await runner.cleanup()


async def flush(gw: Running) -> None:
    generation = gw.gateway.generation
    assert generation is not None and generation.tracing is not None
    provider = generation.tracing.provider
    assert provider is not None
    await asyncio.to_thread(provider.force_flush)


async def test_spans_are_exported_over_otlp_http_with_the_configured_headers_and_service_name(
    provider: FakeProvider, make_gateway: GatewayFactory, collector: Collector
) -> None:
    gw = await make_gateway(traced_config(
        provider.base_url, endpoint=f"http://127.0.0.1:{collector.port}/otlp",
        service_name="lunos-eu-1", headers={"Authorization": "Bearer collector-token"}))
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.v1 + "/chat/completions", json={"model": "gpt-test", "messages": []}) as r:
            assert r.status == 200
    await flush(gw)
    assert sorted(collector.span_names()) == sorted([
        "POST /v1/chat/completions", "plugin request_id", "plugin meter", "plugin router", "chat gpt-upstream"])
    headers, message = collector.exports[0]
    assert headers["authorization"] == "Bearer collector-token"
    assert headers["content-type"] == "application/x-protobuf"
    resource = {a.key: a.value.string_value for a in message.resource_spans[0].resource.attributes}
    assert resource["service.name"] == "lunos-eu-1"


async def test_a_stalled_collector_does_not_slow_requests(
    provider: FakeProvider, make_gateway: GatewayFactory, collector: Collector
) -> None:
    collector.stall = 2.0
    cfg = traced_config(provider.base_url, endpoint=f"http://127.0.0.1:{collector.port}/otlp",
                        export_timeout_seconds=4.0)
    gw = await make_gateway(cfg)
    slowest = 0.0
    async with aiohttp.ClientSession() as s:
        for i in range(30):
            if i == 1:
                # The first request's spans are on their way to the stalled collector.
                generation = gw.gateway.generation
                assert generation is not None and generation.tracing is not None
                assert generation.tracing.provider is not None
                flushing = asyncio.create_task(asyncio.to_thread(generation.tracing.provider.force_flush))
                await asyncio.sleep(0.2)
            started = time.perf_counter()
            async with s.post(gw.v1 + "/chat/completions", json={"model": "gpt-test", "messages": []}) as r:
                assert r.status == 200
            slowest = max(slowest, time.perf_counter() - started)
    assert not flushing.done()  # the export is still stuck while every request was answered
    assert slowest < 1.0
    await flushing
    assert len(collector.exports) >= 1


@pytest.mark.parametrize("workers", [1, 2])
async def test_serve_exports_every_requests_spans_before_it_exits_on_sigterm(
    workers: int, tmp_path: Path, provider: FakeProvider, collector: Collector
) -> None:
    cfg = traced_config(provider.base_url, endpoint=f"http://127.0.0.1:{collector.port}/otlp")
    cfg["pipeline"] = [{"name": "request_id"}, {"name": "router"}]
    path = tmp_path / "lunos.yaml"
    path.write_text(yaml.safe_dump(cfg))
    port, admin_port = free_port(), free_port()
    proc = await serve_process(path, port, admin_port, *(["--workers", "2"] if workers > 1 else []))
    started: list[bytes] = []
    try:
        await until_ready(f"http://127.0.0.1:{port}", proc)
        # Every worker listening (one answering /readyz is not all of them).
        assert proc.stdout is not None
        while sum(b'"event":"listening"' in line for line in started) < workers:
            started.append(await asyncio.wait_for(proc.stdout.readline(), 30))
        async with aiohttp.ClientSession() as s:
            for _ in range(8):  # fresh connections: with two workers, both take some
                async with s.post(f"http://127.0.0.1:{port}/v1/chat/completions",
                                  json={"model": "gpt-test", "messages": []},
                                  headers={"Connection": "close"}) as r:
                    assert r.status == 200
        # The batch processor would wait 5 s before exporting; SIGTERM must not lose them.
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, b"".join([*started, out, err]).decode()[-3000:]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    names = collector.span_names()
    assert names.count("POST /v1/chat/completions") == 8
    assert names.count("chat gpt-upstream") == 8 and names.count("plugin router") == 8
