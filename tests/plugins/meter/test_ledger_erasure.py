"""An erased account's usage held by a ledger is never written after the erasure."""

from __future__ import annotations

from lunos_proxy.metrics import Metrics
from lunos_proxy.records import EventQuery, open_records
from lunos_proxy.records.writer import RecordsWriter
from lunos_proxy.store import open_store
from lunos_proxy.store.base import UsageEvent
from plugins.meter.ledger import Ledger
from tests.redis_servers import RedisServer


def event(account: str) -> UsageEvent:
    return UsageEvent(request_id=f"req-{account}", account_id=account, key_id=f"k-{account}",
                      model="m", time=1.0, day="2026-11-30", status=200, input_tokens=3,
                      output_tokens=4, cost_micros=70)


def spend(account: str) -> list[tuple[str, str, int]]:
    return [(f"account:{account}", "total", 0), (f"key:k-{account}", "m:2026-11", 3600)]


async def test_a_batch_left_by_a_failed_write_loses_the_erased_account_and_keeps_the_rest(
    redis_server: RedisServer,
) -> None:
    store = open_store(redis_server.url, timeout=0.3)
    await store.start()
    records = open_records("sqlite://")
    await records.start()
    writer = RecordsWriter(records, Metrics(), flush_interval=3600)
    ledger = Ledger(store, Metrics(), flush_interval=3600, records=writer)
    await ledger.start()
    ledger.record(event("gone"), spend("gone"))
    ledger.record(event("kept"), spend("kept"))
    redis_server.stop()
    assert not await ledger.flush()  # the batch is cut and waits for the store
    redis_server.restart()
    ledger.forget("gone")  # what hearing the erasure does (the e2e test has the message)
    assert ledger.backlog == 3  # the kept account's row and two spend counters
    assert writer.backlog == 2  # its event and ledger line
    ledger.record(event("gone"), spend("gone"))  # a request in flight at the erasure: ignored
    assert await ledger.flush() and await writer.flush()
    assert await store.usage("gone", "0", "9") == [] and await records.billing("gone") == []
    assert (await records.events(EventQuery(account_id="gone"))).events == []
    assert await store.spend_counters("account:gone") == {}
    assert await store.spend_counters("key:k-gone") == {}
    assert [(r.requests, r.cost_micros) for r in await store.usage("kept", "0", "9")] == [(1, 70)]
    assert [b.cost_micros for b in await records.billing("kept")] == [70]
    kept = (await records.events(EventQuery(account_id="kept"))).events
    assert [e.request_id for e in kept] == ["req-kept"]
    assert await store.spend_counters("key:k-kept") == {"m:2026-11": 70}
    await ledger.stop()
    await records.close()
    await store.close()


async def test_an_erased_account_is_metered_again_after_the_forget_window(
    redis_server: RedisServer,
) -> None:
    clock = [1000.0]
    store = open_store(redis_server.url)
    await store.start()
    ledger = Ledger(store, Metrics(), flush_interval=3600, clock=lambda: clock[0])
    ledger.forget("acct")
    ledger.record(event("acct"), spend("acct"))
    assert ledger.backlog == 0
    clock[0] += 3601  # an account id is never reused; the window only bounds the memory
    ledger.record(event("acct"), spend("acct"))
    assert ledger.backlog == 3  # a row, two spend counters
    await store.close()
