"""The records' write-behind queue: usage events and ledger lines, written in batches.

    writer = RecordsWriter(records, metrics, flush_interval=1.0, events_retention_days=400)
    await writer.start()
    writer.add(event)            # or extend(events): a list append and a few additions each
    await writer.stop()          # writes what is pending (graceful shutdown)

Every `flush_interval` seconds what has accumulated is cut into one batch
(at most `MAX_BATCH_EVENTS` events, and every pending ledger line) with a
random id, and written in one transaction (`Records.add`). A write that
fails (the database is down) is retried with the same batch and id until
it succeeds; a write the database applied but whose answer was lost is
recognised by its id and not applied twice. Meanwhile new usage keeps
accumulating: ledger lines sum per (account, day, model), so they grow with
distinct rows, never with requests, and are never dropped; events grow with
requests, and past `max_pending_events` the oldest are dropped and counted
in `lunos_records_dropped{what="events"}`. What waits is
`lunos_records_backlog`. The meter's ledger hands its events over at each
of its ticks (`extend`), with their sums per ledger line.

Retention runs here too, every `RETENTION_EVERY` seconds on each instance
(idempotent; PostgreSQL drops the day partitions past it).
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import structlog

from ..logs import error_name
from ..metrics import Metrics
from ..store.accounting import UsageCounts
from ..write_behind import WriteBehind
from .base import BillingRecord, Records, RecordsError, UsageEvent

__all__ = ["MAX_BATCH_EVENTS", "RETENTION_EVERY", "RecordsWriter"]

log = structlog.get_logger("lunos.records")

# Events per batch: PostgreSQL's rows are encoded on the event loop (about a
# microsecond each), so a batch stays near a millisecond of it.
MAX_BATCH_EVENTS = 2_000
RETENTION_EVERY = 3600.0

_Line = tuple[str, str, str]  # account, day, model


def _sums(events: Iterable[UsageEvent]) -> dict[_Line, UsageCounts]:
    """The events' sums per (account, day, model)."""
    lines: dict[_Line, UsageCounts] = {}
    for e in events:
        line = lines.get((e.account_id, e.day, e.model))
        if line is None:
            line = lines[(e.account_id, e.day, e.model)] = UsageCounts()
        line.add(e)
    return lines


@dataclass
class _Batch:
    events: list[UsageEvent]
    billing: list[BillingRecord]
    id: str = field(default_factory=lambda: uuid.uuid4().hex)


class RecordsWriter(WriteBehind[_Batch]):
    def __init__(
        self,
        records: Records,
        metrics: Metrics,
        *,
        flush_interval: float = 1.0,
        max_pending_events: int = 100_000,
        events_retention_days: int = 400,
        billing_retention_days: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(flush_interval)
        self.records = records
        self.metrics = metrics
        self.max_pending_events = max_pending_events
        self.events_retention_days = events_retention_days
        self.billing_retention_days = billing_retention_days
        self.clock = clock
        self._events: list[UsageEvent] = []
        self._lines: dict[_Line, UsageCounts] = {}
        self._expired_at = 0.0

    # -- the hot path ---------------------------------------------------------
    def add(self, e: UsageEvent) -> None:
        self.extend((e,))

    def extend(
        self, events: Sequence[UsageEvent], lines: Mapping[_Line, UsageCounts] | None = None
    ) -> None:
        """`add` each of `events`, in order. `lines`: their sums per (account,
        day, model), from a caller that has them (the meter's ledger), which
        spares summing them again here."""
        if lines is None:
            lines = _sums(events)
        for line, counts in lines.items():
            mine = self._lines.get(line)
            if mine is None:
                mine = self._lines[line] = UsageCounts()
            mine.add(counts, counts.requests)
        self._events += events
        over = len(self._events) - self.max_pending_events
        if over > 0:
            del self._events[:over]
            self.metrics.records_dropped.labels("events").inc(over)
        self._gauge()

    def forget(self, account_id: str) -> None:
        """Drop what is held for `account_id` and not written yet (also in a
        batch a failed write left): its data is being erased."""
        self._events = [e for e in self._events if e.account_id != account_id]
        self._lines = {k: v for k, v in self._lines.items() if k[0] != account_id}
        b = self._batch
        if b is not None:
            b.events = [e for e in b.events if e.account_id != account_id]
            b.billing = [r for r in b.billing if r.account_id != account_id]
        self._gauge()

    @property
    def backlog(self) -> int:
        """Events and ledger lines not written yet."""
        b = self._batch
        in_batch = 0 if b is None else len(b.events) + len(b.billing)
        return len(self._events) + len(self._lines) + in_batch

    def _gauge(self) -> None:
        self.metrics.records_backlog.set(self.backlog)

    # -- writing ----------------------------------------------------------------
    def _pieces(self) -> int:
        return max(1, -(-len(self._events) // MAX_BATCH_EVENTS))

    def _cut(self) -> _Batch | None:
        if not (self._events or self._lines):
            return None
        now = self.clock()
        events = self._events[:MAX_BATCH_EVENTS]
        del self._events[:MAX_BATCH_EVENTS]
        billing = [
            BillingRecord(id=uuid.uuid4().hex, account_id=a, period=d, model=m,
                          requests=c.requests, input_tokens=c.input_tokens,
                          output_tokens=c.output_tokens, cost_micros=c.cost_micros, created=now)
            for (a, d, m), c in self._lines.items()
        ]
        self._lines = {}
        return _Batch(events, billing)

    async def _write(self, b: _Batch) -> bool:
        try:
            if b.events or b.billing:
                await self.records.add(b.id, b.events, b.billing)
        except RecordsError as e:
            self.metrics.records_write_failures.inc()
            if self.failed():
                log.warning("records_write_failed", error=error_name(e), backlog=self.backlog)
            return False
        if self.recovered():
            log.warning("records_write_recovered")
        return True

    async def expire(self) -> None:
        """Drop what is past retention (events by day; ledger lines if it has one)."""
        today = dt.datetime.fromtimestamp(self.clock(), dt.UTC).date()
        events_before = (today - dt.timedelta(days=self.events_retention_days)).isoformat()
        billing_before = (
            (today - dt.timedelta(days=self.billing_retention_days)).isoformat()
            if self.billing_retention_days
            else ""
        )
        try:
            days = await self.records.expire(events_before, billing_before)
        except RecordsError as e:
            log.warning("records_retention_failed", error=error_name(e))
            return
        self._expired_at = self.clock()
        if days:
            log.info("records_expired", days=days, before=events_before)

    async def _written(self) -> None:
        if self.clock() - self._expired_at >= RETENTION_EVERY:
            await self.expire()

    async def stop(self, attempts: int = 3) -> None:
        lost = await self.drain(attempts)
        if lost:
            self.metrics.records_dropped.labels("shutdown").inc(lost)
            log.error("records_lost_at_shutdown", rows=lost)
