"""Metric series are bounded by the config, not by who calls.

10,000 requests, each from its own client address (127.x.y.z) with its own
API key: every tenth key valid (each of its own account) and served by the
provider, the others unknown and sent with made-up model names. The number
of series in /metrics after them equals the number after a first small
round of the same kinds of request.
"""

from __future__ import annotations

import asyncio
import itertools
from urllib.parse import urlsplit

import aiohttp
import msgspec
import pytest

from tests.auth_support import auth_config, put_key
from tests.conftest import GatewayFactory, Running
from tests.fakes import FakeProvider
from tests.logcapture import Captured

TOTAL = 10_000
CONCURRENCY = 16
VALID_EVERY = 10


def _addresses() -> itertools.product[tuple[int, int, int]]:
    return itertools.product(range(1, 255), range(0, 256), range(1, 255))


async def _send(host: str, port: int, source: str, key: str, model: str) -> int:
    body = msgspec.json.encode({"model": model, "messages": [{"role": "user", "content": "hi"}]})
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
    writer.write(head + body)
    response = await reader.read()
    writer.close()
    return int(response.split(b" ", 2)[1])


def series(exposition: str) -> set[str]:
    return {line.rsplit(" ", 1)[0] for line in exposition.splitlines() if line and not line.startswith("#")}


async def scrape(gw: Running) -> str:
    async with aiohttp.ClientSession() as s:
        async with s.get(gw.admin_url + "/metrics") as r:
            return await r.text()


@pytest.mark.slow
async def test_series_do_not_grow_with_keys_addresses_or_model_names(
    captured_logs: Captured, provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    cfg = auth_config(provider.base_url, static=[])
    cfg["pipeline"].insert(1, {"name": "logger", "settings": {"address": "full"}})
    gw = await make_gateway(cfg)
    store = gw.gateway.store
    valid = [(await put_key(store, f"acc_{i}"))[0] for i in range(TOTAL // VALID_EVERY)]
    url = urlsplit(gw.url)
    host, port = url.hostname, url.port
    assert host is not None and port is not None
    addresses = (f"127.{a}.{b}.{c}" for a, b, c in _addresses())
    statuses: list[int] = []

    def request(i: int) -> tuple[str, str, str]:
        source = next(addresses)
        if i % VALID_EVERY == 0:
            return source, valid[i // VALID_EVERY], "gpt-test"
        return source, f"lk-unknown-{i:06d}", f"made-up-model-{i}"

    async def run(indices: range) -> None:
        queue = iter(indices)

        async def worker() -> None:
            for i in queue:
                statuses.append(await _send(host, port, *request(i)))

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))

    await run(range(0, 100))
    before = series(await scrape(gw))
    await run(range(100, TOTAL))
    after_text = await scrape(gw)
    after = series(after_text)

    assert sorted(set(statuses)) == [200, 401]
    assert statuses.count(200) == TOTAL // VALID_EVERY
    assert after == before, f"new series: {sorted(after - before)[:5]}"
    assert 'lunos_requests_total{error_type="none",model="gpt-test",provider="fake",status_class="2xx"} 1000.0' in after_text
    assert 'lunos_requests_total{error_type="caller",model="none",provider="none",status_class="4xx"} 9000.0' in after_text
    assert len(captured_logs.requests()) == TOTAL
    assert len({line["client_addr"] for line in captured_logs.requests()}) == TOTAL
