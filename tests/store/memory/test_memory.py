"""What only the embedded store promises: its data file."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import msgspec
import pytest

from lunos_proxy.store import Limit, SpendDelta, StoreError, UsageRow
from lunos_proxy.store.memory import MemoryStore
from tests.records.test_contract import event as records_event
from tests.store.backends import FakeClock
from tests.store.samples import delta, ledger, make_account, make_key, row


async def test_records_survive_close_and_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "data" / "store.json")
    store = MemoryStore(path)
    await store.start()
    await store.put_account(make_account("a-1", "ix-1"))
    await store.put_key(make_key("key-1", "h1", account_id="a-1"))
    await store.add_usage([delta("a-1", "key-1", "gpt-4o", "2025-03-01", 2)])
    await store.close()

    reopened = MemoryStore(path)
    await reopened.start()
    assert await reopened.account_by_index("ix-1") == make_account("a-1", "ix-1")
    assert await reopened.key_by_hash("h1") == make_key("key-1", "h1", account_id="a-1")
    assert await reopened.keys_of("a-1") == [make_key("key-1", "h1", account_id="a-1")]
    assert await reopened.usage("a-1", "2025-03-01", "2025-03-01") == [
        row("key-1", "gpt-4o", "2025-03-01", 2)
    ]
    await reopened.close()


async def test_keys_and_accounts_are_on_disk_when_put_returns(tmp_path: Path) -> None:
    path = str(tmp_path / "store.json")
    store = MemoryStore(path, flush_interval=3600)
    await store.put_key(make_key("key-1", "h1"))
    await store.put_account(make_account("a-1"))
    # A second process reading the file, while the first never closed.
    other = MemoryStore(path)
    assert await other.key_by_id("key-1") == make_key("key-1", "h1")
    assert await other.account("a-1") == make_account("a-1")
    await store.delete_key("key-1")
    assert await MemoryStore(path).key_by_id("key-1") is None


async def test_usage_is_written_behind(tmp_path: Path) -> None:
    path = str(tmp_path / "store.json")
    store = MemoryStore(path, flush_interval=0.05)
    await store.add_usage([delta("a-1", "k-1", "m", "2025-03-01")])
    assert not (tmp_path / "store.json").exists()
    await asyncio.sleep(0.3)
    other = MemoryStore(path)
    assert await other.usage("a-1", "2025-03-01", "2025-03-01") == [
        row("k-1", "m", "2025-03-01", 1)
    ]
    await store.close()


async def test_pending_usage_is_written_on_close(tmp_path: Path) -> None:
    path = str(tmp_path / "store.json")
    store = MemoryStore(path, flush_interval=3600)
    await store.add_usage([delta("a-1", "k-1", "m", "2025-03-01")])
    assert await store.delete_usage("nobody") == 0
    await store.close()
    assert await MemoryStore(path).usage("a-1", "2025-03-01", "2025-03-01") == [
        UsageRow(
            key_id="k-1",
            model="m",
            day="2025-03-01",
            requests=1,
            input_tokens=100,
            output_tokens=10,
            cached_input_tokens=1,
            cost_micros=1_000_000_007,
        )
    ]
    assert os.listdir(tmp_path) == ["store.json"]  # no temp file left behind


async def test_limit_counters_and_bans_start_afresh_after_a_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "store.json")
    store, limit = MemoryStore(path), Limit("rpm", 1, 60)
    assert (await store.hit("t", [limit])).allowed
    await store.ban("t", "ip:x", 60)
    assert not (await store.hit("t", [limit])).allowed
    await store.close()
    assert (await MemoryStore(path).hit("t", [limit], bans=["ip:x"])).allowed


async def test_an_unreadable_data_file_is_refused_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "store.json"
    path.write_text('{"accounts": [{"id": 5}]}')
    with pytest.raises(StoreError, match="not a valid snapshot"):
        MemoryStore(str(path))
    assert path.read_text() == '{"accounts": [{"id": 5}]}'


async def test_a_failed_write_raises_store_error_and_is_retried_on_close(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "data"
    path = str(blocker / "store.json")
    store = MemoryStore(path)
    blocker.write_text("a file where the data directory should be")
    with pytest.raises(StoreError, match="cannot write"):
        await store.put_account(make_account("a-1"))
    blocker.unlink()
    await store.close()
    assert await MemoryStore(path).account("a-1") == make_account("a-1")


async def test_without_a_path_nothing_is_written(tmp_path: Path) -> None:
    store = MemoryStore(None)
    await store.put_account(make_account("a-1"))
    await store.add_usage([delta("a-1", "k", "m", "d")])
    await store.close()
    assert store.path is None
    assert os.listdir(tmp_path) == []


async def test_sweeping_drained_counters_keeps_the_ones_still_draining() -> None:
    clock = FakeClock()
    store = MemoryStore(None, clock=clock)
    slow, fast = Limit("day", 2, 86_400), Limit("sec", 1, 1)
    assert (await store.hit("slow", [slow])).allowed
    clock.now += 3_600
    for i in range(9_998):
        await store.hit(f"t{i}", [fast])
    clock.now += 2
    await store.hit("last", [fast])  # the 10,000th write: a sweep
    assert len(store._counters) == 2  # "slow" and "last"; the drained ones went
    state = (await store.hit("slow", [Limit("day", 2, 86_400, cost=0)])).states[0]
    assert state.remaining == 1
    assert state.reset == 86_400 / 2 - 3_602


async def test_expired_spend_and_claims_leave_memory_and_the_data_file(tmp_path: Path) -> None:
    clock = FakeClock()
    path = str(tmp_path / "store.json")
    store = MemoryStore(path, clock=clock, flush_interval=3600)
    await store.add_spend([SpendDelta(subject="key:k-1", period="d:2025-03-01", micros=5, ttl=100)])
    await store.add_spend([SpendDelta(subject="key:k-1", period="total", micros=7, ttl=0)])
    assert await store.claim("alert:a-1:d", 100) and await store.claim("alert:a-2:m", 10_000)
    clock.now += 101
    await store.add_spend([SpendDelta(subject="key:k-2", period="total", micros=1)])  # a sweep
    assert list(store._spend) == [("key:k-1", "total"), ("key:k-2", "total")]
    assert list(store._claims) == ["alert:a-2:m"]
    await store.close()
    written = (tmp_path / "store.json").read_bytes()
    assert b"d:2025-03-01" not in written
    other = MemoryStore(path, clock=clock)
    assert await other.spend("key:k-1", ["total"]) == [7]


async def test_a_data_file_from_before_the_records_database_keeps_its_ledger_and_events(
    tmp_path: Path,
) -> None:
    """Billing lines and events an older version kept in the file stay there
    (events until their retention ends): an upgrade loses nothing."""
    from lunos_proxy.store.memory.file import EventDay, Snapshot

    clock = FakeClock()
    path = tmp_path / "store.json"
    old = Snapshot(billing=[ledger("b-1", "a-1", 10.0)], events=[
        EventDay(account_id="a-1", day="2025-03-01", expires=clock.now + 100,
                 events=[records_event(1, account="a-1", day="2025-03-01")]),
        EventDay(account_id="a-2", day="2025-03-01", expires=clock.now + 10_000,
                 events=[records_event(2, account="a-2", day="2025-03-01")]),
    ])
    path.write_bytes(msgspec.json.encode(old))
    store = MemoryStore(str(path), clock=clock, flush_interval=3600)
    clock.now += 101
    await store.add_usage([delta("a-1", "k-1", "m", "2025-03-01")])
    await store.close()
    kept = msgspec.json.decode(path.read_bytes(), type=Snapshot)
    assert kept.billing == [ledger("b-1", "a-1", 10.0)]
    assert [e.request_id for day in kept.events for e in day.events] == ["req-2"]
