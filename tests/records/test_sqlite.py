"""What only the SQLite backend promises: its work never holds up the event
loop, and its files are its owner's alone."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from pathlib import Path

from lunos_proxy.records import EventQuery, open_records
from tests.records.test_contract import event


async def test_a_large_write_runs_beside_the_event_loop_not_on_it(tmp_path: Path) -> None:
    records = open_records(f"sqlite://{tmp_path}/records.db")
    await records.start()
    events = [event(n) for n in range(150_000)]
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
        assert await records.count(EventQuery(account_id="acct_a")) == 150_000
    finally:
        await records.close()


async def test_a_new_database_and_its_journal_are_readable_by_their_owner_only(
    tmp_path: Path,
) -> None:
    old = os.umask(0o022)  # the usual umask, which would leave it 0644
    records = open_records(f"sqlite://{tmp_path}/data/records.db")
    await records.start()
    try:
        await records.add("one", [event(1)], [])
        made = sorted(p.name for p in (tmp_path / "data").iterdir())
        assert made == ["records.db", "records.db-shm", "records.db-wal"]
        for name in made:
            assert stat.S_IMODE((tmp_path / "data" / name).stat().st_mode) == 0o600, name
    finally:
        await records.close()
        os.umask(old)
