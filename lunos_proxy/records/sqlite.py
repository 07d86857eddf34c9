"""The embedded records store: one SQLite file (standard library), WAL mode.

    records = SqliteRecords("data/lunos-records.db")   # "" or ":memory:": nothing kept
    await records.start()                              # creates or upgrades the schema

Every call runs on one thread of its own, so the event loop never waits
for the disk; calls are queued there one after another (one connection:
SQLite serialises writers anyway). The schema is created at start: the
embedded store needs no `lunos-proxy db migrate`.

Retention deletes a day's rows (SQLite has no partitions); the index on
(day) makes that a range delete.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from .base import (
    BATCH_MEMORY_DAYS,
    BillingRecord,
    EventPage,
    EventQuery,
    Records,
    RecordsError,
    UsageEvent,
    UsageRow,
)
from .sql import (
    EVENT_COLUMNS,
    billing_rows,
    count_select,
    event_select,
    page,
    summary_select,
    summed,
)

__all__ = ["SqliteRecords"]

_T = TypeVar("_T")


def _q(n: int) -> str:
    return "?"

# Each step takes the schema from version i to i + 1; never edit a shipped one.
_STEPS: tuple[str, ...] = (
    """
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY,
        day TEXT NOT NULL,
        time REAL NOT NULL,
        request_id TEXT NOT NULL,
        account_id TEXT NOT NULL,
        key_id TEXT NOT NULL,
        model TEXT NOT NULL,
        provider TEXT NOT NULL,
        status INTEGER NOT NULL,
        stream INTEGER NOT NULL,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        cached_input_tokens INTEGER NOT NULL,
        cache_creation_tokens INTEGER NOT NULL,
        reasoning_tokens INTEGER NOT NULL,
        cost_micros INTEGER NOT NULL,
        usage_source TEXT NOT NULL
    );
    CREATE INDEX events_account ON events (account_id, day, time, seq);
    CREATE INDEX events_key ON events (key_id, day, time, seq);
    CREATE INDEX events_day ON events (day);
    CREATE TABLE billing (
        account_id TEXT NOT NULL,
        period TEXT NOT NULL,
        model TEXT NOT NULL,
        id TEXT NOT NULL,
        requests INTEGER NOT NULL,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        cost_micros INTEGER NOT NULL,
        created REAL NOT NULL,
        PRIMARY KEY (account_id, period, model)
    );
    CREATE TABLE batches (id TEXT PRIMARY KEY, at REAL NOT NULL);
    CREATE INDEX batches_at ON batches (at);
    """,
    # 1 -> 2: the route and the latency of each request (older rows: "" and 0).
    """
    ALTER TABLE events ADD COLUMN endpoint TEXT NOT NULL DEFAULT '';
    ALTER TABLE events ADD COLUMN latency_ms INTEGER NOT NULL DEFAULT 0;
    """,
)


def _event_insert(rows: int) -> str:
    row = f"({', '.join('?' for _ in EVENT_COLUMNS)})"
    return f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) VALUES {', '.join([row] * rows)}"


# Events go in by statements of many rows: within one statement the table's
# and the indexes' cursors stay where the last row went, so a row that
# follows it (a later time of the same account, key and day: most of them)
# is put there without a search from each index's root, and the statement
# is stepped and reset once, not once a row. A batch is written in
# statements of 64 rows, then one each of 32, 16, ... 1 for the rest: seven
# statement texts, all kept prepared in the connection's cache.
_EVENT_INSERTS = tuple((n, _event_insert(n)) for n in (64, 32, 16, 8, 4, 2, 1))
_BILLING_UPSERT = (
    "INSERT INTO billing (account_id, period, model, id, requests, input_tokens, "
    "output_tokens, cost_micros, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (account_id, period, model) DO UPDATE SET "
    "requests = requests + excluded.requests, "
    "input_tokens = input_tokens + excluded.input_tokens, "
    "output_tokens = output_tokens + excluded.output_tokens, "
    "cost_micros = cost_micros + excluded.cost_micros"
)


def _event_values(events: Sequence[UsageEvent]) -> list[object]:
    """The events' values in `EVENT_COLUMNS` order, one event after another:
    `event_row`'s, but `stream` as the 0 or 1 SQLite keeps. The sqlite3
    module binds a bool as an int too, only after looking for an adapter for
    it (two AttributeErrors raised and cleared): several times the cost."""
    values: list[object] = []
    for e in events:
        values += (e.day, e.time, e.request_id, e.account_id, e.key_id, e.model, e.provider,
                   e.status, 1 if e.stream else 0, e.input_tokens, e.output_tokens,
                   e.cached_input_tokens, e.cache_creation_tokens, e.reasoning_tokens,
                   e.cost_micros, e.usage_source, e.endpoint, e.latency_ms)
    return values


class SqliteRecords(Records):
    def __init__(self, path: str = "", *, busy_timeout: float = 5.0) -> None:
        self.path = path or ":memory:"
        self.busy_timeout = busy_timeout
        self._db: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="records-sqlite")

    async def _call(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """`fn` on the records thread, with the connection."""

        def run() -> _T:
            try:
                return fn(self._db if self._db is not None else self._open())
            except sqlite3.Error as e:
                raise RecordsError(f"sqlite: {e}") from e

        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, run)
        except RuntimeError as e:  # the thread was shut down: closed
            raise RecordsError("sqlite: the records store is closed") from e

    async def _transaction(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """`fn` in one write transaction, on the records thread."""

        def run(db: sqlite3.Connection) -> _T:
            db.execute("BEGIN IMMEDIATE")
            try:
                out = fn(db)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return out

        return await self._call(run)

    def _open(self) -> sqlite3.Connection:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            # Made readable by its owner only, as every file in data/ is (SQLite
            # gives its -wal and -shm files the database's mode); a file that
            # exists keeps the mode its operator gave it.
            with contextlib.suppress(FileExistsError):
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        db = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None,
                             check_same_thread=False)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        self._db = db
        return db

    # -- lifecycle ------------------------------------------------------------
    async def start(self) -> None:
        await self.migrate()

    async def close(self) -> None:
        def shut(db: sqlite3.Connection) -> None:
            db.close()
            self._db = None

        if self._db is not None:
            await self._call(shut)
        self._thread.shutdown(wait=True)

    async def ping(self) -> None:
        await self._call(lambda db: db.execute("SELECT 1").fetchone())

    async def migrate(self) -> list[str]:
        def run(db: sqlite3.Connection) -> list[str]:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            applied = []
            for i in range(version, len(_STEPS)):
                for statement in _STEPS[i].split(";"):
                    if statement.strip():
                        db.execute(statement)
                applied.append(f"schema {i} -> {i + 1}")
            db.execute(f"PRAGMA user_version = {len(_STEPS)}")
            return applied

        return await self._transaction(run)

    # -- writing --------------------------------------------------------------
    async def add(
        self, batch: str, events: Sequence[UsageEvent], billing: Sequence[BillingRecord]
    ) -> bool:
        now = time.time()

        def run(db: sqlite3.Connection) -> bool:
            # Rows are made here, on the records thread, not on the event loop.
            values = _event_values(events)
            lines = billing_rows(billing)
            fresh = db.execute(
                "INSERT INTO batches (id, at) VALUES (?, ?) ON CONFLICT DO NOTHING", (batch, now)
            ).rowcount
            if fresh:
                width, at = len(EVENT_COLUMNS), 0
                for rows, sql in _EVENT_INSERTS:
                    while len(events) - at >= rows:
                        db.execute(sql, values[at * width : (at + rows) * width])
                        at += rows
                db.executemany(_BILLING_UPSERT, lines)
            return bool(fresh)

        return await self._transaction(run)

    # -- reading --------------------------------------------------------------
    async def events(self, query: EventQuery) -> EventPage:
        sql, args = event_select("events", query, _q)
        return page(query, await self._call(lambda db: db.execute(sql, args).fetchall()))

    async def count(self, query: EventQuery) -> int:
        sql, args = count_select("events", query, _q)
        return int(await self._call(lambda db: db.execute(sql, args).fetchone()[0]))

    async def summary(self, account_id: str, first_day: str, last_day: str) -> list[UsageRow]:
        sql = summary_select("events", _q)
        return summed(await self._call(
            lambda db: db.execute(sql, (account_id, first_day, last_day)).fetchall()
        ))

    async def billing(self, account_id: str) -> list[BillingRecord]:
        sql = ("SELECT account_id, period, model, id, requests, input_tokens, output_tokens, "
               "cost_micros, created FROM billing WHERE account_id = ? ORDER BY period, model")
        rows = await self._call(lambda db: db.execute(sql, (account_id,)).fetchall())
        return [BillingRecord(**dict(r)) for r in rows]

    # -- erasure and retention --------------------------------------------------
    async def erase(self, account_id: str, pseudonym: str) -> tuple[int, int]:
        def run(db: sqlite3.Connection) -> tuple[int, int]:
            events = db.execute("DELETE FROM events WHERE account_id = ?", (account_id,)).rowcount
            lines = db.execute("UPDATE billing SET account_id = ? WHERE account_id = ?",
                               (pseudonym, account_id)).rowcount
            return events, lines

        return await self._transaction(run)

    async def expire(self, events_before: str, billing_before: str = "") -> int:
        forget_before = time.time() - BATCH_MEMORY_DAYS * 86_400

        def run(db: sqlite3.Connection) -> int:
            days = db.execute("SELECT count(DISTINCT day) FROM events WHERE day < ?",
                              (events_before,)).fetchone()[0]
            db.execute("DELETE FROM events WHERE day < ?", (events_before,))
            if billing_before:
                db.execute("DELETE FROM billing WHERE period < ?", (billing_before,))
            db.execute("DELETE FROM batches WHERE at < ?", (forget_before,))
            return int(days)

        return await self._transaction(run)
