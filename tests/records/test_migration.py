"""A records database made by the previous version (schema 1, events without
endpoint and latency) upgrades in place: its events are kept and read with
`endpoint` "" and `latency_ms` 0, new ones carry both."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import asyncpg
import pytest

from lunos_proxy.cli import main
from lunos_proxy.records import EventQuery, SchemaError, open_records
from lunos_proxy.records import postgres as pg_backend
from lunos_proxy.records import sqlite as sqlite_backend
from tests.records.test_cli import config_for
from tests.records.test_contract import event

# What version 1 wrote: every event column but the two version 2 added.
V1_COLUMNS = (
    "day, time, request_id, account_id, key_id, model, provider, status, stream, input_tokens, "
    "output_tokens, cached_input_tokens, cache_creation_tokens, reasoning_tokens, cost_micros, "
    "usage_source"
)
OLD = ("2026-12-01", 1_764_547_200.5, "req-old", "acct_a", "key_1", "m1", "p", 200, False,
       7, 9, 0, 0, 0, 42, "reported")


async def test_an_sqlite_file_of_schema_1_upgrades_at_start_keeping_its_events(
    tmp_path: Path,
) -> None:
    path = tmp_path / "records.db"
    db = sqlite3.connect(path)
    db.executescript(sqlite_backend._STEPS[0])
    db.execute(f"INSERT INTO events ({V1_COLUMNS}) VALUES ({', '.join('?' * len(OLD))})", OLD)
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()

    records = open_records(f"sqlite://{path}")
    await records.start()
    try:
        assert await records.migrate() == []  # start did it
        assert await records.add("b", [event(1, endpoint="messages")], [])
        page = await records.events(EventQuery(account_id="acct_a"))
        assert [(e.request_id, e.endpoint, e.latency_ms, e.cost_micros) for e in page.events] == [
            ("req-old", "", 0, 42), ("req-1", "messages", 1001, 10)]
        found = await records.events(EventQuery(account_id="acct_a", endpoint="messages"))
        assert [e.request_id for e in found.events] == ["req-1"]
        assert await records.erase("acct_a", "gone") == (2, 0)
    finally:
        await records.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    db.close()


async def test_a_postgresql_database_of_schema_1_is_refused_until_db_migrate_upgrades_it(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute("CREATE TABLE lunos_schema (version integer NOT NULL);"
                           "INSERT INTO lunos_schema (version) VALUES (1)")
        await conn.execute(pg_backend._STEPS[0])
        await conn.execute("CREATE TABLE lunos_events_20261201 PARTITION OF lunos_events "
                           "FOR VALUES FROM ('2026-12-01') TO ('2026-12-02')")
        await conn.execute(f"INSERT INTO lunos_events ({V1_COLUMNS}) VALUES "
                           f"({', '.join(f'${i + 1}' for i in range(len(OLD)))})", *OLD)
    finally:
        await conn.close()

    config = config_for(tmp_path, pg_url)
    assert await asyncio.to_thread(main, ["db", "check", "--config", config]) == 1
    assert capsys.readouterr().err == (
        "db check: records schema is version 1, this proxy needs 2: "
        "run `lunos-proxy db migrate`\n")
    records = open_records(pg_url)
    try:
        with pytest.raises(SchemaError, match="version 1, this proxy needs 2"):
            await records.start()
    finally:
        await records.close()

    assert await asyncio.to_thread(main, ["db", "migrate", "--config", config]) == 0
    assert capsys.readouterr().out == "applied schema 1 -> 2\nrecords schema is current\n"
    assert await asyncio.to_thread(main, ["db", "check", "--config", config]) == 0

    records = open_records(pg_url)
    await records.start()
    try:
        # Into the partition that existed before the upgrade, and a new one.
        assert await records.add("b", [event(1, endpoint="embeddings"),
                                       event(2, day="2026-12-02", endpoint="responses")], [])
        page = await records.events(EventQuery(account_id="acct_a"))
        assert [(e.request_id, e.endpoint, e.latency_ms, e.cost_micros) for e in page.events] == [
            ("req-old", "", 0, 42), ("req-1", "embeddings", 1001, 10),
            ("req-2", "responses", 1002, 10)]
        found = await records.events(EventQuery(account_id="acct_a", endpoint="responses"))
        assert [e.request_id for e in found.events] == ["req-2"]
    finally:
        await records.close()
