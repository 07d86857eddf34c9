"""A large backlog of usage (after an outage, or a second of heavy load) is
written in pieces, so that no piece keeps the event loop busy."""

from __future__ import annotations

from lunos_proxy.metrics import Metrics
from lunos_proxy.store import open_store
from lunos_proxy.store.base import UsageEvent
from lunos_proxy.usage.ledger import Entry, Ledger
from tests.loop_watch import watch_loop
from tests.redis_servers import RedisServer

EVENTS = 100_000  # max_pending_events: the most a ledger holds


def entry(i: int) -> Entry:
    event = UsageEvent(request_id=f"req_{i:024x}", account_id="acct", key_id="k", model="m",
                       provider="p", time=1.7e9 + i, day="2026-12-07", status=200,
                       input_tokens=3, output_tokens=4, cost_micros=70, usage_source="reported")
    return Entry(account_id="acct", key_id="k", model="m", day="2026-12-07", input_tokens=3,
                 output_tokens=4, cached_input_tokens=0, cost_micros=70,
                 spend=[("account:acct", "total", 0)], event=event)


async def test_a_full_backlog_is_written_without_a_long_callback(
    redis_server: RedisServer,
) -> None:
    store = open_store(redis_server.url, timeout=30)
    await store.start()
    ledger = Ledger(store, Metrics(), flush_interval=3600)
    try:
        for i in range(EVENTS):
            ledger.record(entry(i))
        with watch_loop(0.05) as work:
            assert await ledger.flush()
        assert work.slow == [], work.report()
        [row] = await store.usage("acct", "2026-12-07", "2026-12-07")
        assert (row.requests, row.input_tokens, row.cost_micros) == (EVENTS, 3 * EVENTS, 70 * EVENTS)
        assert len(await store.billing("acct")) == 1  # one billing line for the one flush
        assert len(await store.usage_events("acct")) == EVENTS
        assert ledger.backlog == 0
    finally:
        await ledger.stop()
        await store.close()
