"""What only the embedded store promises: its data file."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from lunos_proxy.store import Limit, SpendDelta, StoreError, UsageRow
from lunos_proxy.store.memory import MemoryStore
from tests.store.backends import FakeClock
from tests.store.samples import delta, ledger, make_account, make_key, row
from tests.store.test_contract_meter import event


async def test_records_survive_close_and_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "data" / "store.json")
    store = MemoryStore(path)
    await store.start()
    await store.put_account(make_account("a-1", "ix-1"))
    await store.put_key(make_key("key-1", "h1", account_id="a-1"))
    await store.add_usage([delta("a-1", "key-1", "gpt-4o", "2025-03-01", 2)])
    await store.add_billing([ledger("b-1", "a-1", 10.0)])
    await store.close()

    reopened = MemoryStore(path)
    await reopened.start()
    assert await reopened.account_by_index("ix-1") == make_account("a-1", "ix-1")
    assert await reopened.key_by_hash("h1") == make_key("key-1", "h1", account_id="a-1")
    assert await reopened.keys_of("a-1") == [make_key("key-1", "h1", account_id="a-1")]
    assert await reopened.usage("a-1", "2025-03-01", "2025-03-01") == [
        row("key-1", "gpt-4o", "2025-03-01", 2)
    ]
    assert await reopened.billing("a-1") == [ledger("b-1", "a-1", 10.0)]
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


async def test_usage_and_billing_are_written_behind(tmp_path: Path) -> None:
    path = str(tmp_path / "store.json")
    store = MemoryStore(path, flush_interval=0.05)
    await store.add_usage([delta("a-1", "k-1", "m", "2025-03-01")])
    await store.add_billing([ledger("b-1", "a-1", 1.0)])
    assert not (tmp_path / "store.json").exists()
    await asyncio.sleep(0.3)
    other = MemoryStore(path)
    assert await other.usage("a-1", "2025-03-01", "2025-03-01") == [
        row("k-1", "m", "2025-03-01", 1)
    ]
    assert [r.id for r in await other.billing("a-1")] == ["b-1"]
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


async def test_expired_events_spend_and_claims_leave_memory_and_the_data_file(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    path = str(tmp_path / "store.json")
    store = MemoryStore(path, clock=clock, flush_interval=3600)
    await store.add_usage_events([event("gone", "2025-03-01", 1.0, "a-1")], 100)
    await store.add_usage_events([event("kept", "2025-03-01", 2.0, "a-2")], 10_000)
    await store.add_spend([SpendDelta(subject="key:k-1", period="d:2025-03-01", micros=5, ttl=100)])
    await store.add_spend([SpendDelta(subject="key:k-1", period="total", micros=7, ttl=0)])
    assert await store.claim("alert:a-1:d", 100) and await store.claim("alert:a-2:m", 10_000)
    clock.now += 101
    await store.add_spend([SpendDelta(subject="key:k-2", period="total", micros=1)])  # a sweep
    assert list(store._events) == ["a-2"]
    assert list(store._spend) == [("key:k-1", "total"), ("key:k-2", "total")]
    assert list(store._claims) == ["alert:a-2:m"]
    await store.close()
    written = (tmp_path / "store.json").read_bytes()
    assert b"kept" in written and b"gone" not in written and b"d:2025-03-01" not in written
    other = MemoryStore(path, clock=clock)
    assert [e.request_id for e in await other.usage_events("a-2")] == ["kept"]
    assert await other.spend("key:k-1", ["total"]) == [7]
