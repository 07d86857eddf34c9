"""Event-write throughput of the records database: how fast the meter's
write-behind queue can empty into SQLite or PostgreSQL.

    .venv/bin/python bench/records.py                          # SQLite in a temp dir, 10 s
    .venv/bin/python bench/records.py --pg --duration 5        # a PostgreSQL cluster of its own
    .venv/bin/python bench/records.py --url postgresql://lunos@db/lunos --batch 5000

Batches of `--batch` events (one account per 100 events, a few keys and
models, as a busy gateway writes them) go through `Records.add`, one after
another, each with its billing lines, for `--duration` seconds after a short
warmup. Printed: events per second, batches per second, the median and p99
time of one batch, and the database's bytes per event (file size for SQLite,
the events table's size for PostgreSQL, indexes included). `--pg` starts a
throwaway cluster with initdb (tests/pg_servers.py; as the `postgres` user
when run as root). Nothing here touches a shared server.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lunos_proxy.records import Records, open_records  # noqa: E402
from lunos_proxy.store.base import BillingRecord, UsageEvent  # noqa: E402


def batch_of(n: int, start: int, now: float) -> tuple[list[UsageEvent], list[BillingRecord]]:
    day = time.strftime("%Y-%m-%d", time.gmtime(now))
    events = [
        UsageEvent(
            request_id=f"req_{uuid.uuid4().hex}", account_id=f"acct_{(start + i) // 100 % 500}",
            key_id=f"key_{(start + i) % 7}", model=("gpt-4o-mini", "claude-3-5-haiku")[i % 2],
            provider="openai", time=now + i / 1000, day=day, status=200, stream=bool(i % 3),
            input_tokens=200 + i % 900, output_tokens=50 + i % 300, cached_input_tokens=i % 64,
            cost_micros=900 + i % 500, usage_source="reported",
            endpoint=("chat/completions", "messages")[i % 2], latency_ms=300 + i % 4000,
        )
        for i in range(n)
    ]
    lines: dict[tuple[str, str], list[int]] = {}
    for e in events:
        line = lines.setdefault((e.account_id, e.model), [0, 0, 0, 0])
        line[0] += 1
        line[1] += e.input_tokens
        line[2] += e.output_tokens
        line[3] += e.cost_micros
    billing = [
        BillingRecord(id=uuid.uuid4().hex, account_id=a, period=day, model=m, requests=c[0],
                      input_tokens=c[1], output_tokens=c[2], cost_micros=c[3], created=now)
        for (a, m), c in lines.items()
    ]
    return events, billing


async def size_of(records: Records, url: str, path: Path | None) -> int:
    if path is not None:
        return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'lunos_events'::regclass"))
    finally:
        await conn.close()


async def run(url: str, path: Path | None, duration: float, batch: int) -> None:
    records = open_records(url)
    await records.migrate()
    await records.start()
    now, written, times = time.time(), 0, []
    try:
        warm_until = time.monotonic() + min(1.0, duration / 5)
        while time.monotonic() < warm_until:
            events, billing = batch_of(batch, written, now)
            await records.add(uuid.uuid4().hex, events, billing)
            written += batch
        base, started = written, time.monotonic()
        while time.monotonic() - started < duration:
            events, billing = batch_of(batch, written, now)
            t = time.perf_counter()
            await records.add(uuid.uuid4().hex, events, billing)
            times.append(time.perf_counter() - t)
            written += batch
        elapsed = time.monotonic() - started
        measured = written - base
        size = await size_of(records, url, path)
    finally:
        await records.close()
    times.sort()
    print(f"backend        {url.split(':')[0]}")
    print(f"batch          {batch} events")
    print(f"events/s       {measured / elapsed:,.0f}")
    print(f"batches/s      {len(times) / elapsed:,.1f}")
    print(f"batch p50 ms   {statistics.median(times) * 1000:.1f}")
    print(f"batch p99 ms   {times[min(len(times) - 1, int(len(times) * 0.99))] * 1000:.1f}")
    print(f"bytes/event    {size / written:,.0f}  ({written:,} events, indexes included)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", help="records URL (default: SQLite in a temp dir)")
    p.add_argument("--pg", action="store_true", help="start a PostgreSQL cluster of its own")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    p.add_argument("--batch", type=int, default=1000, help="events per batch")
    args = p.parse_args()
    if args.pg:
        from tests.pg_servers import PgServer

        server = PgServer().start()
        try:
            asyncio.run(run(server.create_database(), None, args.duration, args.batch))
        finally:
            server.remove()
        return 0
    if args.url:
        sqlite = args.url.startswith("sqlite://") and len(args.url) > len("sqlite://")
        path = Path(args.url.removeprefix("sqlite://")) if sqlite else None
        asyncio.run(run(args.url, path, args.duration, args.batch))
        return 0
    with tempfile.TemporaryDirectory(prefix="lunos-records-bench-") as tmp:
        path = Path(tmp) / "records.db"
        asyncio.run(run(f"sqlite://{path}", path, args.duration, args.batch))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
