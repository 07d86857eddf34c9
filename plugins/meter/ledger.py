"""The write-behind ledger: usage is summed in memory and written in batches.

    ledger = Ledger(store, metrics, flush_interval=1.0, records=writer)
    await ledger.start()
    ledger.record(entry)        # on the hot path: a few dict updates, no I/O
    await ledger.stop()         # writes what is pending (graceful shutdown)

Every `flush_interval` seconds what has accumulated is cut into one batch and
written to the store in two steps: daily usage counters (`add_usage`) and
spend counters (`add_spend`). A step that fails (the store is down) is
retried, from that step on, until it succeeds; meanwhile new usage keeps
summing into the next batch, so an outage costs memory in proportion to
distinct (account, key, model, day) rows, not to requests. Counters are
never dropped.

Each request's usage event and its share of the billing ledger go to the
records database instead (`records`, a `lunos_proxy.records.writer.RecordsWriter`
with a queue of its own): what grows with every request stays out of the
store, and an outage of one does not hold up the other.

Every step carries the batch's id (`once`): a write the store applied but
whose answer was lost (the connection cut between the two, as when Redis is
stopped mid-write) is retried, and the store ignores the repeat. So an outage
neither loses nor duplicates anything.

An account erased (`lunos_proxy.admin.data_rights`) is announced on
`ERASED_CHANNEL` before its data goes; every ledger that hears it drops
what it holds for the account and has not written, and ignores the
account's requests for `FORGET_SECONDS` more (those in flight when it was
erased), so no write recreates what the erasure removed.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import structlog

from lunos_proxy.keys import ERASED_CHANNEL
from lunos_proxy.logs import error_name
from lunos_proxy.metrics import Metrics
from lunos_proxy.records.writer import RecordsWriter
from lunos_proxy.store.accounting import SpendDelta, UsageCounts, UsageDelta
from lunos_proxy.store.base import Store, StoreError, UsageEvent
from lunos_proxy.store.fanout import Fanout
from lunos_proxy.write_behind import WriteBehind

from .metrics import MeterMetrics

__all__ = ["FORGET_SECONDS", "Entry", "Ledger"]

log = structlog.get_logger("lunos.meter")

FORGET_SECONDS = 3600.0


_Row = tuple[str, str, str, str]  # account, key, model, day


@dataclass(slots=True)
class Entry:
    """One request's contribution to the ledger."""

    account_id: str
    key_id: str
    model: str
    day: str
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cost_micros: int
    spend: list[tuple[str, str, int]]  # (subject, period, ttl) charged cost_micros
    event: UsageEvent | None = None


@dataclass
class _Batch:
    usage: list[UsageDelta]
    spend: list[SpendDelta]
    id: str = field(default_factory=lambda: uuid.uuid4().hex)  # makes retries idempotent
    done: int = 0  # steps written so far
    rows: int = field(default=0)


class Ledger(WriteBehind[_Batch]):
    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        *,
        flush_interval: float = 1.0,
        records: RecordsWriter | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(flush_interval)
        self.store = store
        self.metrics = metrics.add(MeterMetrics)
        self.records = records
        self.clock = clock
        self._usage: dict[_Row, UsageCounts] = {}
        self._spend: dict[tuple[str, str], list[int]] = {}  # micros, ttl
        # Called with the subjects whose spend just reached the store.
        self.on_written: list[Callable[[set[str]], None]] = []
        self._erased: dict[str, float] = {}  # account id -> ignored until

    # -- the hot path ---------------------------------------------------------
    def record(self, e: Entry) -> None:
        if self._erased and self._was_erased(e.account_id):
            return
        row = self._usage.get((e.account_id, e.key_id, e.model, e.day))
        if row is None:
            row = self._usage[(e.account_id, e.key_id, e.model, e.day)] = UsageCounts()
        row.add(e)
        for subject, period, ttl in e.spend:
            s = self._spend.get((subject, period))
            if s is None:
                self._spend[(subject, period)] = [e.cost_micros, ttl]
            else:
                s[0] += e.cost_micros
        if e.event is not None and self.records is not None:
            self.records.add(e.event)
        self._gauge()

    # -- erasure ----------------------------------------------------------------
    def forget(self, account_id: str) -> None:
        """Drop what is held for `account_id` and not written yet (also in a
        batch a failed write left), and ignore its requests for
        `FORGET_SECONDS`."""
        now = self.clock()
        self._erased = {a: t for a, t in self._erased.items() if t > now}
        self._erased[account_id] = now + FORGET_SECONDS
        b = self._batch
        keys = {row[1] for row in self._usage if row[0] == account_id}
        if b is not None:
            keys |= {d.key_id for d in b.usage if d.account_id == account_id}
        subjects = {f"account:{account_id}", *(f"key:{k}" for k in keys)}
        self._usage = {row: c for row, c in self._usage.items() if row[0] != account_id}
        self._spend = {sp: v for sp, v in self._spend.items() if sp[0] not in subjects}
        if b is not None:
            b.usage = [d for d in b.usage if d.account_id != account_id]
            b.spend = [d for d in b.spend if d.subject not in subjects]
            b.rows = len(b.usage) + len(b.spend)
        if self.records is not None:
            self.records.forget(account_id)
        self._gauge()

    def _was_erased(self, account_id: str) -> bool:
        until = self._erased.get(account_id)
        if until is None:
            return False
        if until > self.clock():
            return True
        del self._erased[account_id]
        return False

    async def _listen(self) -> None:
        if not await _ERASURES.join(self.store, self):
            log.warning("erasure_listen_failed")  # the store keeps trying

    def unwritten_spend(self, subject: str, period: str) -> int:
        """Spend recorded here that the store does not hold yet."""
        total = 0
        s = self._spend.get((subject, period))
        if s is not None:
            total += s[0]
        b = self._batch
        if b is not None and b.done < 2:
            total += sum(d.micros for d in b.spend if d.subject == subject and d.period == period)
        return total

    @property
    def backlog(self) -> int:
        b = self._batch
        in_batch = 0 if b is None else b.rows
        return len(self._usage) + len(self._spend) + in_batch

    def _gauge(self) -> None:
        self.metrics.meter_backlog.set(self.backlog)

    # -- writing ----------------------------------------------------------------
    def _cut(self) -> _Batch | None:
        if not (self._usage or self._spend):
            return None
        usage = [c.delta(a, k, m, d) for (a, k, m, d), c in self._usage.items()]
        spend = [
            SpendDelta(subject=s, period=p, micros=v[0], ttl=v[1])
            for (s, p), v in self._spend.items()
            if v[0]
        ]
        batch = _Batch(usage, spend)
        batch.rows = len(usage) + len(spend)
        self._usage, self._spend = {}, {}
        return batch

    async def _write(self, b: _Batch) -> bool:
        steps = (
            lambda: self.store.add_usage(b.usage, once=b.id),
            lambda: self.store.add_spend(b.spend, once=b.id),
        )
        lists: tuple[Iterable[object], ...] = (b.usage, b.spend)
        while b.done < len(steps):
            if lists[b.done]:
                try:
                    await steps[b.done]()
                except StoreError as e:
                    self.metrics.meter_write_failures.inc()
                    if self.failed():
                        log.warning("usage_write_failed", error=error_name(e), backlog=self.backlog)
                    return False
            b.done += 1
            if b.done == 2:
                subjects = {d.subject for d in b.spend}
                for callback in self.on_written:
                    callback(subjects)
        if self.recovered():
            log.warning("usage_write_recovered")
        return True

    async def start(self) -> None:
        if self._task is None:
            await self._listen()
            await super().start()

    async def stop(self, attempts: int = 3) -> None:
        lost = await self.drain(attempts)
        if lost:
            self.metrics.meter_dropped.labels("shutdown").inc(lost)
            log.error("usage_lost_at_shutdown", rows=lost)


# The ledgers that hear erasures: one subscription per store, shared by the
# generations a reload makes.
_ERASURES = Fanout(ERASED_CHANNEL, Ledger.forget)
