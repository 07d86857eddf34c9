"""A large backlog of usage events (after an outage, or a second of heavy
load) is written in pieces, so that no piece keeps the event loop busy."""

from __future__ import annotations

from pathlib import Path

from lunos_proxy.metrics import Metrics
from lunos_proxy.records import open_records
from lunos_proxy.records.base import EventQuery, UsageEvent
from lunos_proxy.records.writer import RecordsWriter
from tests.loop_watch import watch_loop

EVENTS = 100_000  # max_pending_events: the most a writer holds


def event(i: int) -> UsageEvent:
    return UsageEvent(request_id=f"req_{i:024x}", account_id="acct", key_id="k", model="m",
                      provider="p", time=1.7e9 + i, day="2026-12-07", status=200,
                      input_tokens=3, output_tokens=4, cost_micros=70, usage_source="reported")


async def test_a_full_backlog_of_events_is_written_without_a_long_callback(tmp_path: Path) -> None:
    records = open_records(f"sqlite://{tmp_path}/records.db")
    await records.start()
    writer = RecordsWriter(records, Metrics(), flush_interval=3600)
    try:
        for i in range(EVENTS):
            writer.add(event(i))
        with watch_loop(0.05) as work:
            assert await writer.flush()
        assert work.slow == [], work.report()
        assert await records.count(EventQuery(account_id="acct")) == EVENTS
        [line] = await records.billing("acct")  # one ledger line for the one flush
        assert (line.requests, line.input_tokens, line.cost_micros) == (EVENTS, 3 * EVENTS, 70 * EVENTS)
        assert writer.backlog == 0
    finally:
        await writer.stop()
        await records.close()
