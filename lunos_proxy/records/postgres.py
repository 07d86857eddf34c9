"""The records store on PostgreSQL (asyncpg): what deployments use.

    records = PostgresRecords("postgresql://lunos:secret@db:5432/lunos", max_connections=10)
    await records.start()     # SchemaError unless `lunos-proxy db migrate` has run

Tables (all named lunos_*, in the connection's default schema):

    lunos_events              partitioned by RANGE (day): one partition per day,
    lunos_events_YYYYMMDD     made by the first write of that day's events;
                              retention drops whole partitions (no row deletes,
                              no vacuum debt). Indexes serve the usage API and
                              the request log: (account_id, day, time, seq) and
                              (key_id, day, time, seq).
    lunos_billing             the ledger: one line per (account_id, period,
                              model), summed by upsert; kept for accounting,
                              re-keyed to a pseudonym when an account is erased
    lunos_batches             ids of applied batches (a retried write is a
                              no-op), forgotten after BATCH_MEMORY_DAYS
    lunos_schema              the schema's version

A batch is one transaction: its id into lunos_batches (a repeat stops
there), its events by binary COPY, its ledger lines by upsert.

The schema is created and upgraded only by `migrate` (`lunos-proxy db
migrate`), never by a serving instance: `start` checks it and refuses a
missing or older one. A database that does not answer at start is not
fatal: the meter's write-behind queue keeps usage until it does.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncpg

from .base import (
    BATCH_MEMORY_DAYS,
    BillingRecord,
    EventPage,
    EventQuery,
    Records,
    RecordsError,
    SchemaError,
    UsageEvent,
    UsageRow,
)
from .sql import (
    EVENT_COLUMNS,
    billing_rows,
    count_select,
    event_row,
    event_select,
    page,
    summary_select,
    summed,
)

__all__ = ["PostgresRecords"]

_T = TypeVar("_T")


def _n(n: int) -> str:
    return f"${n}"
_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_PARTITION = re.compile(r"^lunos_events_(\d{4})(\d{2})(\d{2})$")
# pg_advisory_xact_lock key of `migrate` (any constant; "lunos" in ASCII).
_MIGRATE_LOCK = 0x6C756E6F73

# Each step takes the schema from version i to i + 1; never edit a shipped one.
_STEPS: tuple[str, ...] = (
    """
    CREATE TABLE lunos_events (
        seq bigserial NOT NULL,
        day text COLLATE "C" NOT NULL,
        time double precision NOT NULL,
        request_id text NOT NULL,
        account_id text NOT NULL,
        key_id text NOT NULL,
        model text NOT NULL,
        provider text NOT NULL,
        status integer NOT NULL,
        stream boolean NOT NULL,
        input_tokens bigint NOT NULL,
        output_tokens bigint NOT NULL,
        cached_input_tokens bigint NOT NULL,
        cache_creation_tokens bigint NOT NULL,
        reasoning_tokens bigint NOT NULL,
        cost_micros bigint NOT NULL,
        usage_source text NOT NULL
    ) PARTITION BY RANGE (day);
    CREATE INDEX lunos_events_account ON lunos_events (account_id, day, time, seq);
    CREATE INDEX lunos_events_key ON lunos_events (key_id, day, time, seq);
    CREATE TABLE lunos_billing (
        account_id text NOT NULL,
        period text COLLATE "C" NOT NULL,
        model text NOT NULL,
        id text NOT NULL,
        requests bigint NOT NULL,
        input_tokens bigint NOT NULL,
        output_tokens bigint NOT NULL,
        cost_micros bigint NOT NULL,
        created double precision NOT NULL,
        PRIMARY KEY (account_id, period, model)
    );
    CREATE TABLE lunos_batches (id text PRIMARY KEY, at double precision NOT NULL);
    CREATE INDEX lunos_batches_at ON lunos_batches (at);
    """,
    # 1 -> 2: the route and the latency of each request. A constant default
    # is a catalogue change (no partition is rewritten); older rows read ""
    # and 0.
    """
    ALTER TABLE lunos_events ADD COLUMN endpoint text NOT NULL DEFAULT '';
    ALTER TABLE lunos_events ADD COLUMN latency_ms integer NOT NULL DEFAULT 0;
    """,
)

_BILLING_UPSERT = """
    INSERT INTO lunos_billing (account_id, period, model, id, requests, input_tokens,
                               output_tokens, cost_micros, created)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[],
                         $6::bigint[], $7::bigint[], $8::bigint[], $9::float8[])
    ON CONFLICT (account_id, period, model) DO UPDATE SET
        requests = lunos_billing.requests + excluded.requests,
        input_tokens = lunos_billing.input_tokens + excluded.input_tokens,
        output_tokens = lunos_billing.output_tokens + excluded.output_tokens,
        cost_micros = lunos_billing.cost_micros + excluded.cost_micros
"""


def _partition(day: str) -> tuple[str, str]:
    """The partition of `day` and the day after it (its upper bound)."""
    if not _DAY.match(day):
        raise RecordsError(f"not a day: {day!r}")
    after = (dt.date.fromisoformat(day) + dt.timedelta(days=1)).isoformat()
    return f"lunos_events_{day.replace('-', '')}", after


class PostgresRecords(Records):
    def __init__(
        self,
        url: str,
        *,
        max_connections: int = 10,
        timeout: float = 10.0,
        connect_timeout: float = 5.0,
    ) -> None:
        self.url = url
        self.max_connections = max_connections
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._pool: asyncpg.Pool | None = None
        self._closed = False
        self._partitions: set[str] = set()  # days known to have a partition

    # -- connections ------------------------------------------------------------
    async def _connected(self) -> asyncpg.Pool:
        if self._closed:
            raise RecordsError("postgresql: the records store is closed")
        if self._pool is None:
            # No connection is opened here (min_size=0): a database that is
            # down at start only fails the calls made while it is.
            self._pool = await asyncpg.create_pool(
                self.url, min_size=0, max_size=self.max_connections,
                command_timeout=self.timeout, timeout=self.connect_timeout,
            )
        return self._pool

    async def _with(self, fn: Callable[[asyncpg.Connection], Awaitable[_T]]) -> _T:
        try:
            pool = await self._connected()
            async with pool.acquire() as conn:
                return await fn(conn)
        except RecordsError:
            raise
        except asyncpg.UndefinedTableError as e:
            raise SchemaError("no records schema: run `lunos-proxy db migrate`") from e
        except _ERRORS as e:
            raise RecordsError(f"postgresql: {type(e).__name__}: {e}") from e

    async def _in_transaction(self, fn: Callable[[asyncpg.Connection], Awaitable[_T]]) -> _T:
        async def run(conn: asyncpg.Connection) -> _T:
            async with conn.transaction():
                return await fn(conn)

        return await self._with(run)

    # -- lifecycle ------------------------------------------------------------
    async def start(self) -> None:
        try:
            version = await self._with(_version)
        except SchemaError:
            raise
        except RecordsError:
            return  # not answering yet: the writers retry
        if version != len(_STEPS):
            raise SchemaError(
                f"records schema is version {version}, this proxy needs {len(_STEPS)}: "
                "run `lunos-proxy db migrate`"
            )

    async def close(self) -> None:
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            # A graceful close waits for every connection to be released; one
            # left stuck by a database that went away would hold it forever.
            # Cancelled by the timeout, asyncpg terminates the pool instead.
            try:
                await asyncio.wait_for(pool.close(), self.timeout)
            except TimeoutError:
                pass

    async def ping(self) -> None:
        await self._with(lambda conn: conn.fetchval("SELECT 1"))

    async def migrate(self) -> list[str]:
        async def run(conn: asyncpg.Connection) -> list[str]:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATE_LOCK)
            await conn.execute("CREATE TABLE IF NOT EXISTS lunos_schema (version integer NOT NULL)")
            version = await conn.fetchval("SELECT version FROM lunos_schema")
            if version is None:
                await conn.execute("INSERT INTO lunos_schema (version) VALUES (0)")
                version = 0
            applied = []
            for i in range(version, len(_STEPS)):
                await conn.execute(_STEPS[i])
                applied.append(f"schema {i} -> {i + 1}")
            await conn.execute("UPDATE lunos_schema SET version = $1", len(_STEPS))
            return applied

        return await self._in_transaction(run)

    # -- writing --------------------------------------------------------------
    async def _ensure_partitions(self, days: set[str]) -> None:
        missing = days - self._partitions
        if not missing:
            return

        async def run(conn: asyncpg.Connection) -> None:
            for day in sorted(missing):
                name, after = _partition(day)
                try:
                    await conn.execute(
                        f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF lunos_events "
                        f"FOR VALUES FROM ('{day}') TO ('{after}')"
                    )
                except (asyncpg.DuplicateTableError, asyncpg.UniqueViolationError):
                    pass  # another instance made it at the same moment
                self._partitions.add(day)

        await self._with(run)

    async def add(
        self, batch: str, events: Sequence[UsageEvent], billing: Sequence[BillingRecord]
    ) -> bool:
        await self._ensure_partitions({e.day for e in events})
        rows = [event_row(e) for e in events]
        columns: list[list[Any]] = [[] for _ in range(9)]
        for line in billing_rows(billing):
            for column, value in zip(columns, line, strict=True):
                column.append(value)

        async def run(conn: asyncpg.Connection) -> bool:
            fresh = await conn.fetchval(
                "INSERT INTO lunos_batches (id, at) VALUES ($1, $2) "
                "ON CONFLICT DO NOTHING RETURNING true",
                batch, time.time(),
            )
            if not fresh:
                return False
            if rows:
                await conn.copy_records_to_table(
                    "lunos_events", records=rows, columns=EVENT_COLUMNS
                )
            if billing:
                await conn.execute(_BILLING_UPSERT, *columns)
            return True

        try:
            return await self._in_transaction(run)
        except RecordsError:
            # A partition may have been dropped meanwhile (another instance's
            # retention run): make sure of each again on the retry.
            self._partitions.clear()
            raise

    # -- reading --------------------------------------------------------------
    async def events(self, query: EventQuery) -> EventPage:
        sql, args = event_select("lunos_events", query, _n)
        return page(query, await self._with(lambda conn: conn.fetch(sql, *args)))

    async def count(self, query: EventQuery) -> int:
        sql, args = count_select("lunos_events", query, _n)
        return int(await self._with(lambda conn: conn.fetchval(sql, *args)))

    async def summary(self, account_id: str, first_day: str, last_day: str) -> list[UsageRow]:
        sql = summary_select("lunos_events", _n)
        rows = await self._with(lambda conn: conn.fetch(sql, account_id, first_day, last_day))
        return summed(rows)

    async def billing(self, account_id: str) -> list[BillingRecord]:
        sql = ("SELECT account_id, period, model, id, requests, input_tokens, output_tokens, "
               "cost_micros, created FROM lunos_billing WHERE account_id = $1 "
               "ORDER BY period, model")
        rows = await self._with(lambda conn: conn.fetch(sql, account_id))
        return [BillingRecord(**dict(r)) for r in rows]

    # -- erasure and retention --------------------------------------------------
    async def erase(self, account_id: str, pseudonym: str) -> tuple[int, int]:
        async def run(conn: asyncpg.Connection) -> tuple[int, int]:
            events = await conn.execute("DELETE FROM lunos_events WHERE account_id = $1",
                                        account_id)
            lines = await conn.execute(
                "UPDATE lunos_billing SET account_id = $2 WHERE account_id = $1",
                account_id, pseudonym,
            )
            return _count(events), _count(lines)

        return await self._in_transaction(run)

    async def expire(self, events_before: str, billing_before: str = "") -> int:
        async def run(conn: asyncpg.Connection) -> int:
            names = await conn.fetch(
                "SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c "
                "ON c.oid = i.inhrelid WHERE i.inhparent = 'lunos_events'::regclass"
            )
            dropped = 0
            for row in names:
                m = _PARTITION.match(row["name"])
                if m and "-".join(m.groups()) < events_before:
                    await conn.execute(f"DROP TABLE IF EXISTS {row['name']}")
                    self._partitions.discard("-".join(m.groups()))
                    dropped += 1
            if billing_before:
                await conn.execute("DELETE FROM lunos_billing WHERE period < $1", billing_before)
            await conn.execute("DELETE FROM lunos_batches WHERE at < $1",
                               time.time() - BATCH_MEMORY_DAYS * 86_400)
            return dropped

        return await self._in_transaction(run)


async def _version(conn: asyncpg.Connection) -> int:
    version = await conn.fetchval("SELECT version FROM lunos_schema")
    return int(version or 0)


def _count(status: str) -> int:
    """The row count of a command status such as "DELETE 3"."""
    return int(status.rsplit(" ", 1)[-1])
