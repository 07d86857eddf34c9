"""Redis holds only bounded state: 100,000 requests of one account add less than 1 MB.

The meter's write path is driven directly (`Ledger.record`, as the meter's
middleware calls it after each response) rather than through 100,000 HTTP
requests, which would take minutes on a shared machine: everything after the
response is the same code. Batches of 1,000 are flushed as the write-behind
timer would at 1,000 requests per second. Redis is a server of the test's own,
measured with `INFO memory`; the events and the ledger go to the records
database (SQLite here), which is where they belong.
"""

from __future__ import annotations

import time
from pathlib import Path

from lunos_proxy.metrics import Metrics
from lunos_proxy.records import EventQuery, open_records
from lunos_proxy.records.writer import RecordsWriter
from lunos_proxy.store import open_store
from lunos_proxy.store.base import UsageEvent
from plugins.meter.ledger import Ledger
from tests.redis_servers import RedisServer

REQUESTS = 100_000
BATCH = 1_000
ACCOUNT = "acct-busy"
KEYS = ("key-1", "key-2", "key-3")
MODELS = ("gpt-test", "claude-test")


def used_memory(server: RedisServer) -> int:
    info = server.command("INFO", "memory").decode()
    return int(info.split("used_memory:", 1)[1].split("\r\n", 1)[0])


def request(i: int, now: float) -> tuple[UsageEvent, list[tuple[str, str, int]]]:
    key, model = KEYS[i % len(KEYS)], MODELS[i % len(MODELS)]
    day = time.strftime("%Y-%m-%d", time.gmtime(now))
    month = day[:7]
    cost = 100 + i % 7
    event = UsageEvent(
        request_id=f"req_{i:08d}_0123456789abcdef", account_id=ACCOUNT, key_id=key,
        model=model, provider="fake", time=now, day=day, status=200, stream=bool(i % 2),
        input_tokens=20 + i % 50, output_tokens=10, cost_micros=cost, usage_source="reported")
    spend = [(f"account:{ACCOUNT}", f"d:{day}", 2 * 86_400),
             (f"account:{ACCOUNT}", f"m:{month}", 62 * 86_400),
             (f"account:{ACCOUNT}", "total", 0), (f"key:{key}", f"m:{month}", 62 * 86_400)]
    return event, spend


async def test_a_hundred_thousand_requests_grow_redis_by_less_than_a_megabyte(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    store = open_store(redis_server.url)
    await store.start()
    records = open_records(f"sqlite://{tmp_path}/records.db")
    await records.start()
    metrics = Metrics()
    writer = RecordsWriter(records, metrics, flush_interval=3600)
    ledger = Ledger(store, metrics, flush_interval=3600, records=writer)
    now = time.time()
    try:
        # The account's counters exist before the measurement starts (its first request).
        ledger.record(*request(0, now))
        assert await ledger.flush() and await writer.flush()
        before = used_memory(redis_server)
        for first in range(1, REQUESTS, BATCH):
            for i in range(first, min(first + BATCH, REQUESTS)):
                ledger.record(*request(i, now))
            assert await ledger.flush() and await writer.flush()
        grown = used_memory(redis_server) - before
        assert grown < 1_000_000, f"Redis grew by {grown} bytes for {REQUESTS} requests"

        # Everything reached the records database, and Redis holds no per-request key.
        assert await records.count(EventQuery(account_id=ACCOUNT)) == REQUESTS
        assert sum(b.requests for b in await records.billing(ACCOUNT)) == REQUESTS
        rows = await store.usage(ACCOUNT, "0000-01-01", "9999-12-31")
        assert sum(r.requests for r in rows) == REQUESTS
        keys = [k.decode() for k in await store._client.keys("*")]  # type: ignore[attr-defined]
        assert not [k for k in keys if "billing" in k or "events" in k]
        assert len(keys) < 250  # counters, spend, the day set, and one marker per batch step
    finally:
        await ledger.stop()
        await writer.stop()
        await records.close()
        await store.close()
