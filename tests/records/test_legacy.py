"""`lunos-proxy db import-store`: what an older version kept in the store moves
into the records database, once, however often it runs."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import pytest
import redis

from lunos_proxy.cli import main
from lunos_proxy.records import EventQuery, open_records
from lunos_proxy.store.memory.file import EventDay, Snapshot
from tests.records.test_contract import event, line
from tests.redis_servers import RedisServer


def write_config(tmp_path: Path, store_url: str) -> tuple[str, str]:
    records_url = f"sqlite://{tmp_path}/records.db"
    config = tmp_path / "lunos.yaml"
    config.write_text(f"store: {{url: '{store_url}'}}\nrecords: {{url: '{records_url}'}}\n")
    return str(config), records_url


async def _kept(records_url: str) -> tuple[list[str], list[tuple[str, str, int, int]]]:
    records = open_records(records_url)
    await records.start()
    try:
        events = [e.request_id async for e in records.all_events(EventQuery(account_id="acct_a"))]
        lines = [(b.period, b.model, b.requests, b.cost_micros)
                 for b in await records.billing("acct_a")]
        return events, lines
    finally:
        await records.close()


def kept(records_url: str) -> tuple[list[str], list[tuple[str, str, int, int]]]:
    return asyncio.run(_kept(records_url))


def test_redis_ledger_lists_and_event_lists_are_imported_once_and_removed(
    redis_server: RedisServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    r = redis.Redis.from_url(redis_server.url)
    for n, cost in ((1, 10), (2, 20)):
        old = line(requests=n, cost=cost, id=f"bill-{n}", created=float(n))
        fields = msgspec.structs.asdict(old)
        del fields["account_id"]  # the list's key says whose they are
        r.rpush("lunos:{billing}:account:acct_a", msgspec.json.encode(fields))
    r.rpush("lunos:{events:acct_a}:day:2026-12-01",
            *(msgspec.json.encode(event(n)) for n in range(3)))
    r.set("lunos:{keys}:id:k1", b"{}")  # not the importer's
    config, records_url = write_config(tmp_path, redis_server.url)

    assert main(["db", "import-store", "--config", config]) == 0
    assert capsys.readouterr().out == (
        "imported 3 events and 2 ledger lines in 2 batches (0 imported before)\n")
    assert kept(records_url) == (["req-0", "req-1", "req-2"],
                                       [("2026-12-01", "m1", 3, 30)])
    assert main(["db", "import-store", "--config", config, "--remove"]) == 0
    assert capsys.readouterr().out == (
        "imported 0 events and 0 ledger lines in 2 batches (2 imported before); removed 2 keys\n")
    assert kept(records_url) == (["req-0", "req-1", "req-2"],
                                       [("2026-12-01", "m1", 3, 30)])
    assert sorted(r.keys("*")) == [b"lunos:{keys}:id:k1"]
    r.close()


def test_an_old_data_files_sections_are_imported_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "lunos.json"
    old = Snapshot(billing=[line(cost=7)], events=[
        EventDay(account_id="acct_a", day="2026-12-01", expires=4e9, events=[event(1), event(2)])])
    data.write_bytes(msgspec.json.encode(old))
    config, records_url = write_config(tmp_path, f"memory://{data}")
    for _ in range(2):
        assert main(["db", "import-store", "--config", config]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "imported 2 events and 1 ledger lines in 2 batches (0 imported before)",
        "imported 0 events and 0 ledger lines in 2 batches (2 imported before)",
    ]
    assert kept(records_url) == (["req-1", "req-2"], [("2026-12-01", "m1", 1, 7)])
