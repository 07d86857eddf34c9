"""What only the PostgreSQL backend does: partitions, the migrated schema, outages."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from lunos_proxy.records import EventQuery, RecordsError, SchemaError, open_records
from tests.auth_support import admin
from tests.conftest import GatewayFactory
from tests.fakes import FakeProvider
from tests.meter_support import meter_config
from tests.pg_servers import PgServer
from tests.records.test_contract import event


async def partitions(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'lunos_events'::regclass ORDER BY 1")
        return [r[0] for r in rows]
    finally:
        await conn.close()


async def test_events_go_to_one_partition_per_day_and_retention_drops_it(pg_url: str) -> None:
    records = open_records(pg_url)
    await records.migrate()
    await records.start()
    try:
        await records.add("b", [event(1, day="2026-11-30"), event(2, day="2026-12-01"),
                                event(3, day="2026-12-01")], [])
        assert await partitions(pg_url) == ["lunos_events_20261130", "lunos_events_20261201"]
        assert await records.expire("2026-12-01") == 1
        assert await partitions(pg_url) == ["lunos_events_20261201"]
        page = await records.events(EventQuery(account_id="acct_a"))
        assert [e.request_id for e in page.events] == ["req-2", "req-3"]
    finally:
        await records.close()


async def test_a_proxy_refuses_a_database_without_the_schema(pg_url: str) -> None:
    records = open_records(pg_url)
    try:
        with pytest.raises(SchemaError, match="lunos-proxy db migrate"):
            await records.start()
        assert await records.migrate() == ["schema 0 -> 1", "schema 1 -> 2"]
        await records.start()
    finally:
        await records.close()


async def test_a_database_down_at_start_is_written_to_once_it_answers(
    pg_server: PgServer,
) -> None:
    url = pg_server.create_database()
    first = open_records(url)
    await first.migrate()
    await first.close()
    await asyncio.to_thread(pg_server.stop)
    records = open_records(url, connect_timeout=1.0)
    try:
        await records.start()  # not fatal: the writers retry
        with pytest.raises(RecordsError):
            await records.add("b", [event(1)], [])
        await asyncio.to_thread(pg_server.start)
        assert await records.add("b", [event(1)], [])
        assert len((await records.events(EventQuery(account_id="acct_a"))).events) == 1
    finally:
        await records.close()


async def test_admin_and_console_readers_answer_503_while_the_database_is_down(
    pg_server: PgServer, provider: FakeProvider, make_gateway: GatewayFactory, tmp_path: Path,
) -> None:
    url = pg_server.create_database()
    first = open_records(url)
    await first.migrate()
    await first.close()
    config = meter_config(provider.base_url, tmp_path,
                          records={"url": url, "connect_timeout_seconds": 0.5})
    gw = await make_gateway(config)
    await asyncio.to_thread(pg_server.stop)
    status, body = await admin(gw, "GET", "/admin/usage/acct-a/events")
    assert (status, body["error"]["message"]) == (503, "the records database is unreachable; retry")
    await asyncio.to_thread(pg_server.start)
    status, body = await admin(gw, "GET", "/admin/usage/acct-a/events")
    assert (status, body["events"]) == (200, [])
