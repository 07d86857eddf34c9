"""`POST /admin/reload` under `lunos-proxy serve --workers 2` reaches both workers."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from tests.conftest import ADMIN_HEADERS, basic_config, free_port
from tests.fakes import FakeProvider

REQUESTS = 30


def log_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


async def statuses(url: str, model: str) -> Counter[int]:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    # A new connection for every request, so the kernel spreads them over the workers.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        seen: Counter[int] = Counter()
        for _ in range(REQUESTS):
            async with s.post(url + "/v1/chat/completions", json=body) as r:
                seen[r.status] += 1
        return seen


async def test_reload_applies_in_every_worker_and_answers_for_each(
    provider: FakeProvider, tmp_path: Path
) -> None:
    first = basic_config(provider.base_url, pipeline=[{"name": "request_id"}, {"name": "logger"}],
                         server={"shutdown_grace_seconds": 5})
    second = copy.deepcopy(first)
    second["models"]["gpt-new"] = {"deployments": [{"provider": "fake", "model": "gpt-upstream"}]}
    path = tmp_path / "lunos.yaml"
    path.write_text(yaml.safe_dump(first))
    log = tmp_path / "out.log"
    port, admin_port = free_port(), free_port()
    with log.open("w") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "lunos_proxy", "serve", "--config", str(path), "--workers", "2",
            "--port", str(port), "--admin-port", str(admin_port), stdout=out, stderr=out,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    url, admin = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}"
    try:
        for _ in range(400):  # until both workers have bound the ports
            if log.read_text().count('"event":"listening"') == 2:
                break
            await asyncio.sleep(0.05)
        assert await statuses(url, "gpt-new") == {404: REQUESTS}
        path.write_text(yaml.safe_dump(second))
        async with aiohttp.ClientSession() as s, s.post(admin + "/admin/reload",
                                                        headers=ADMIN_HEADERS) as r:
            status, body = r.status, await r.json()
        assert status == 200, body
        # Every worker serves the new model at once: no request meets the old config.
        assert await statuses(url, "gpt-new") == {200: REQUESTS}
        assert (body["result"], body["models"]) == ("applied", 4)
        workers = body["workers"]
        assert [w["worker"] for w in workers] == [0, 1]
        assert len({w["pid"] for w in workers}) == 2
        assert all((w["result"], w["providers"], w["models"]) == ("applied", 2, 4)
                   for w in workers)

        path.write_text("models: [not, a, mapping]\n")
        async with aiohttp.ClientSession() as s, s.post(admin + "/admin/reload",
                                                        headers=ADMIN_HEADERS) as r:
            status, body = r.status, await r.json()
        assert (status, body["result"]) == (422, "rejected")
        assert [(w["worker"], w["result"]) for w in body["workers"]] == [(0, "rejected"),
                                                                          (1, "rejected")]
        assert body["problems"] == body["workers"][1]["problems"] != []
        assert await statuses(url, "gpt-new") == {200: REQUESTS}  # the old config stays
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), timeout=20)
    assert code == 0
    lines = log_lines(log)
    # Each worker's lines carry its id; both served requests.
    assert sorted(line["worker"] for line in lines if line["event"] == "listening") == [0, 1]
    assert {line["worker"] for line in lines if line["event"] == "request"} == {0, 1}
    reloads = Counter(line["worker"] for line in lines if line["event"] == "config_reloaded")
    assert reloads == {0: 1, 1: 1}
    started = next(line for line in lines if line["event"] == "workers_started")
    assert "worker" not in started  # the parent is no worker
