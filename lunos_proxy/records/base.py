"""The usage-records store: per-request usage events and the billing ledger.

What grows with every request and is kept for months lives here, in a
database built for it, not in the state store (Redis holds only bounded,
hot state: limits, spend counters, daily aggregates).

    records = open_records("postgresql://lunos@db/lunos")   # or sqlite://data/records.db
    await records.start()                  # connect, check (or, embedded, create) the schema
    await records.add(batch_id, events, billing)   # once per batch id, all or nothing
    page = await records.events(EventQuery(account_id="acct_1", first_day="2026-12-01"))
    await records.close()

To write another backend, subclass `Records` and implement every abstract
method with the semantics in its docstring, then add it to the `records`
fixture of tests/records/test_contract.py. Backends register by URL scheme
in `records/__init__.py`. Errors talking to the database are raised as
`RecordsError`, nothing else.
"""

from __future__ import annotations

import abc
import base64
import math
from collections.abc import AsyncIterator, Sequence

import msgspec

from ..store import BillingRecord, UsageEvent, UsageRow

__all__ = [
    "MAX_PAGE",
    "BillingRecord",
    "EventPage",
    "EventQuery",
    "Records",
    "RecordsError",
    "SchemaError",
    "UsageEvent",
    "UsageRow",
]

# The most events one `events` call returns.
MAX_PAGE = 10_000
# How long a batch id is remembered (a retry of the batch after a lost reply
# must come sooner; the write-behind queue retries every few seconds).
BATCH_MEMORY_DAYS = 7


class RecordsError(Exception):
    """The database failed or could not be reached."""


class SchemaError(RecordsError):
    """The database answers but its schema is missing or older than this
    version expects: run `lunos-proxy db migrate`."""


class EventQuery(msgspec.Struct, kw_only=True, frozen=True):
    """Which events to read: one account's, for days in [first_day,
    last_day], optionally of one key, one model, one endpoint and statuses in
    [status_from, status_to); oldest first (by time, then arrival) or
    `newest_first`. `after` is a cursor (a page's `next` or `first`):
    only events past it in this order are read."""

    account_id: str
    first_day: str = "0000-01-01"
    last_day: str = "9999-12-31"
    key_id: str | None = None
    model: str | None = None
    endpoint: str | None = None
    status_from: int = 0
    status_to: int = 1000
    newest_first: bool = False
    after: str = ""
    limit: int = 1000


class EventPage(msgspec.Struct, kw_only=True):
    """Events in the query's order; `next` reads the page after this one
    ("" when there is none); `first` is the position of the first event
    (the same query, reversed, with `after=first` reads the page before)."""

    events: list[UsageEvent]
    next: str = ""
    first: str = ""


def cursor(time: float, seq: int) -> str:
    """The opaque position after an event (its time and arrival number)."""
    return base64.urlsafe_b64encode(msgspec.json.encode((time, seq))).decode()


def parse_cursor(text: str) -> tuple[float, int]:
    """The (time, seq) of `cursor`; ValueError if it is not one."""
    try:
        raw = base64.urlsafe_b64decode(text.encode())
        time, seq = msgspec.json.decode(raw, type=tuple[float, int])
    except (ValueError, TypeError) as e:  # DecodeError and binascii.Error are ValueErrors
        raise ValueError("not a cursor") from e
    # Only what `cursor` makes: a finite time and a sequence number a 64-bit
    # column holds (a forged one would overflow the database's integer).
    if not (math.isfinite(time) and 0 <= seq < 2**63):
        raise ValueError("not a cursor")
    return time, seq


def page_size(query: EventQuery) -> int:
    return max(1, min(query.limit, MAX_PAGE))


class Records(abc.ABC):
    """Operations on the usage records; each is one transaction."""

    @abc.abstractmethod
    async def add(
        self, batch: str, events: Sequence[UsageEvent], billing: Sequence[BillingRecord]
    ) -> bool:
        """Append `events` and add `billing` to the ledger, all or nothing.

        `batch` is a unique id of this write: a repeat of it (a retry after
        a lost reply) changes nothing and returns False. Billing lines are
        summed per (account_id, period, model): the ledger keeps one line per
        account, day and model, whose `id` and `created` are those of the
        first write to it."""

    @abc.abstractmethod
    async def events(self, query: EventQuery) -> EventPage:
        """One page of the events `query` selects (at most `MAX_PAGE`)."""

    @abc.abstractmethod
    async def count(self, query: EventQuery) -> int:
        """How many events `query` selects in all (its `after` and `limit` aside)."""

    async def all_events(self, query: EventQuery) -> AsyncIterator[UsageEvent]:
        """Every event `query` selects, page after page (an export)."""
        while True:
            page = await self.events(query)
            for event in page.events:
                yield event
            if not page.next:
                return
            query = msgspec.structs.replace(query, after=page.next)

    @abc.abstractmethod
    async def summary(
        self, account_id: str, first_day: str, last_day: str
    ) -> list[UsageRow]:
        """An account's events for days in [first_day, last_day] summed per
        (day, key_id, model), sorted by them."""

    @abc.abstractmethod
    async def billing(self, account_id: str) -> list[BillingRecord]:
        """The ledger lines of `account_id`, by (period, model)."""

    @abc.abstractmethod
    async def erase(self, account_id: str, pseudonym: str) -> tuple[int, int]:
        """Delete every event of `account_id` and move its ledger lines to
        `pseudonym`, in one transaction; returns (events deleted, lines moved)."""

    @abc.abstractmethod
    async def expire(self, events_before: str, billing_before: str = "") -> int:
        """Drop the events of days before `events_before` (YYYY-MM-DD) and,
        if given, the ledger lines of periods before `billing_before`; forget
        batch ids older than `BATCH_MEMORY_DAYS`. Returns how many days of
        events went (PostgreSQL drops each day's partition whole)."""

    @abc.abstractmethod
    async def migrate(self) -> list[str]:
        """Create or upgrade the schema; returns the steps applied (none if
        it was current). Safe to run from several processes at once."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Return if the database answers; raise RecordsError if not."""

    async def start(self) -> None:  # noqa: B027 - optional hook, not abstract
        """Connect and check the schema (`SchemaError` if it is not current).
        A database that does not answer yet is not an error: calls fail with
        `RecordsError` until it does."""

    async def close(self) -> None:  # noqa: B027 - optional hook, not abstract
        """Release connections."""
