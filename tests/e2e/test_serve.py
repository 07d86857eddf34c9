"""The real `lunos-proxy serve` process: health, readiness, metrics, graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import yaml

from tests.conftest import basic_config, free_port
from tests.fakes import FakeProvider


class Served:
    def __init__(self, proc: asyncio.subprocess.Process, port: int, admin_port: int) -> None:
        self.proc = proc
        self.url = f"http://127.0.0.1:{port}"
        self.admin_url = f"http://127.0.0.1:{admin_port}"


@pytest.fixture
async def served(provider: FakeProvider, tmp_path: Path) -> AsyncIterator[Served]:
    config = basic_config(provider.base_url, server={"shutdown_grace_seconds": 10})
    path = tmp_path / "lunos.yaml"
    path.write_text(yaml.safe_dump(config))
    port, admin_port = free_port(), free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lunos_proxy", "serve", "--config", str(path),
        "--port", str(port), "--admin-port", str(admin_port),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    s = Served(proc, port, admin_port)
    ready = False
    async with aiohttp.ClientSession() as session:
        for _ in range(600):  # 30 s: a loaded two-core machine starts it slowly
            if proc.returncode is not None:
                break
            try:
                async with session.get(s.url + "/healthz") as r:
                    if r.status == 200:
                        ready = True
                        break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
    if not ready:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        raise AssertionError("lunos-proxy did not start: " + (await proc.stderr.read()).decode())  # type: ignore[union-attr]
    yield s
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):  # it may end by itself meanwhile
            proc.kill()
        await proc.wait()


async def test_health_readiness_and_metrics(served: Served) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(served.url + "/healthz") as r:
            assert (r.status, await r.json()) == (200, {"status": "ok"})
        async with s.get(served.url + "/readyz") as r:
            assert (r.status, await r.json()) == (200, {"status": "ready"})
        async with s.post(served.url + "/v1/chat/completions", json={"model": "gpt-test", "messages": []}) as r:
            assert r.status == 200
        async with s.get(served.admin_url + "/metrics") as r:
            text = await r.text()
        async with s.get(served.url + "/metrics") as r:
            assert r.status == 404  # metrics only on the admin listener
    assert 'lunos_requests_total{error_type="none",model="gpt-test",provider="fake",status_class="2xx"} 1.0' in text


async def test_sigterm_lets_open_stream_finish_then_exits_zero(
    served: Served, provider: FakeProvider
) -> None:
    provider.behaviour.chunk_interval = 0.25  # the stream lasts about 2.5 s
    body = {"model": "gpt-test", "stream": True, "messages": []}
    async with aiohttp.ClientSession() as s:
        async with s.post(served.url + "/v1/chat/completions", json=body) as r:
            first = await r.content.readline()
            served.proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            # The listener is closed at once: a new connection is refused.
            async with aiohttp.ClientSession() as other:
                with pytest.raises(aiohttp.ClientConnectionError):
                    await other.get(served.url + "/healthz")
            rest = await r.read()
    assert first.startswith(b"data: ")
    assert rest.endswith(b"data: [DONE]\n\n")
    assert provider.completed_streams == 1
    code = await asyncio.wait_for(served.proc.wait(), timeout=10)
    out = (await served.proc.stdout.read()).decode()  # type: ignore[union-attr]
    assert code == 0
    assert {"event": "stopped", "level": "info"}.items() <= json.loads(out.splitlines()[-1]).items()
