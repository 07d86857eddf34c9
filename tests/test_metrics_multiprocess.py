"""`lunos-proxy serve --workers 2`: both workers serve, /metrics sums them."""

from __future__ import annotations

import asyncio
import glob
import json
import os
import signal
import sys
from pathlib import Path

import aiohttp
import yaml
from prometheus_client.mmap_dict import MmapedDict

from tests.conftest import basic_config, free_port
from tests.fakes import FakeProvider
from tests.test_metrics import samples, value

REQUESTS = 40
SERIES = dict(model="gpt-test", provider="fake", status_class="2xx", error_type="none")


def requests_by_worker(directory: Path) -> dict[int, float]:
    """lunos_requests_total as each worker's own file holds it."""
    counts: dict[int, float] = {}
    for path in glob.glob(str(directory / "counter_*.db")):
        pid = int(Path(path).stem.split("_")[1])
        for key, val, _, _ in MmapedDict.read_all_values_from_file(path):
            if json.loads(key)[1] == "lunos_requests_total":
                counts[pid] = counts.get(pid, 0.0) + val
    return counts


async def test_two_workers_share_the_port_and_metrics_sum_across_them(
    provider: FakeProvider, tmp_path: Path, redis_url: str
) -> None:
    config = basic_config(
        provider.base_url,
        store={"url": redis_url},
        pipeline=[{"name": "request_id"}, {"name": "logger"}],
        server={"shutdown_grace_seconds": 5},
    )
    config["metrics"] = {"plugin_time_share": 1.0}  # every request's plugins timed
    path = tmp_path / "lunos.yaml"
    path.write_text(yaml.safe_dump(config))
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"stale")  # left by an earlier run: removed
    port, admin_port = free_port(), free_port()
    out = (tmp_path / "out.log").open("w")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lunos_proxy", "serve", "--config", str(path), "--workers", "2",
        "--port", str(port), "--admin-port", str(admin_port),
        stdout=out, stderr=out,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
    )
    url, admin = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}"
    try:
        # A new connection for every request, so the kernel spreads them.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
            for _ in range(400):  # until both workers have bound the ports
                if (tmp_path / "out.log").read_text().count('"event":"listening"') == 2:
                    break
                await asyncio.sleep(0.05)
            for _ in range(REQUESTS):
                async with s.post(url + "/v1/chat/completions", json={"model": "gpt-test", "messages": []}) as r:
                    assert r.status == 200
            scrapes = []
            for _ in range(6):
                async with s.get(admin + "/metrics") as r:
                    scrapes.append(await r.text())
        per_worker = requests_by_worker(metrics_dir)
        assert len(per_worker) == 2 and all(n > 0 for n in per_worker.values()), per_worker
        assert sum(per_worker.values()) == REQUESTS
        for text in scrapes:  # whichever worker answered, it reports all of them
            assert value(text, "lunos_requests_total", **SERIES) == REQUESTS
            assert value(text, "lunos_request_duration_seconds_count", model="gpt-test", provider="fake") == REQUESTS
            assert value(text, "lunos_plugin_duration_seconds_count", plugin="logger") == REQUESTS
            assert value(text, "lunos_requests_in_flight") == 0
            # Each worker's store answered (no /readyz was asked); a series
            # no event touched is there from start, at 0.
            assert value(text, "lunos_store_up") == 1
            assert samples(text)[("lunos_config_reloads_total", frozenset({("result", "applied")}))] == 0
            assert ("lunos_event_loop_lag_seconds_count", frozenset()) in samples(text)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), timeout=20)
        out.close()
    assert code == 0
    lines = [json.loads(line) for line in (tmp_path / "out.log").read_text().splitlines()]
    started = next(line for line in lines if line["event"] == "workers_started")
    assert len(started["pids"]) == 2
    assert sum(1 for line in lines if line["event"] == "request") == REQUESTS
    assert glob.glob(str(metrics_dir / "*.db")) == []  # cleaned when the last worker left


async def test_workers_refuse_the_embedded_store_file(tmp_path: Path, provider: FakeProvider) -> None:
    path = tmp_path / "lunos.yaml"
    path.write_text(yaml.safe_dump(basic_config(provider.base_url, store={"url": f"memory://{tmp_path}/data.json"})))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lunos_proxy", "serve", "--config", str(path), "--workers", "2",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), timeout=20)
    assert proc.returncode == 2
    assert b"the embedded store's data file belongs to one process" in err
