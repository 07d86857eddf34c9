"""What only the SQLite backend promises: its work never holds up the event loop."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from lunos_proxy.records import EventQuery, open_records
from tests.records.test_contract import event


async def test_a_large_write_runs_beside_the_event_loop_not_on_it(tmp_path: Path) -> None:
    records = open_records(f"sqlite://{tmp_path}/records.db")
    await records.start()
    events = [event(n) for n in range(50_000)]
    gaps: list[float] = []
    done = asyncio.Event()

    async def tick() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    started = time.perf_counter()
    await records.add("big", events, [])
    took = time.perf_counter() - started
    done.set()
    await ticker
    try:
        assert took > 0.2  # long enough for a stall to show
        assert max(gaps) < took / 4, (max(gaps), took)  # the loop kept turning meanwhile
        assert await records.count(EventQuery(account_id="acct_a")) == 50_000
    finally:
        await records.close()
