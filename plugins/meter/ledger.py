"""The write-behind ledger: usage is summed in memory and written in batches.

    ledger = Ledger(store, metrics, flush_interval=1.0, records=writer)
    await ledger.start()
    ledger.record(event, spend) # on the hot path: a list append, no I/O
    await ledger.stop()         # writes what is pending (graceful shutdown)

A request's usage is summed at the next tick of the write loop, with the
others of that tick, into rows and spend counters (`_sum`). Every
`flush_interval` seconds what has accumulated is cut into one batch and
written to the store in two steps: daily usage counters (`add_usage`) and
spend counters (`add_spend`). A step that fails (the store is down) is
retried, from that step on, until it succeeds; meanwhile new usage keeps
summing (at every tick) into the next batch, so an outage costs memory in proportion to
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
from collections.abc import Callable, Iterable, Sequence
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

__all__ = ["FORGET_SECONDS", "Ledger", "Spend"]

log = structlog.get_logger("lunos.meter")

FORGET_SECONDS = 3600.0
# Requests recorded and not summed yet, at most (see `Ledger._sum`).
SUM_EVERY = 10_000


_Row = tuple[str, str, str, str]  # account, key, model, day


# The spend counters a request's cost is added to: (subject, period, ttl).
Spend = Sequence[tuple[str, str, int]]


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
        # Recorded and not summed yet: each request's event and spend list.
        self._recorded: list[UsageEvent] = []
        self._spent: list[Spend] = []

    # -- the hot path ---------------------------------------------------------
    def record(self, e: UsageEvent, spend: Spend) -> None:
        """Count one request's usage, charge its cost to `spend` (a list the
        caller keeps for every request of a key and day, see `_sum`), and
        pass its event on to the records."""
        if self._erased and self._was_erased(e.account_id):
            return
        self._spent.append(spend)
        recorded = self._recorded
        recorded.append(e)
        if len(recorded) >= SUM_EVERY:
            self._sum()

    def _sum(self) -> None:
        """Add what was recorded since the last time to the rows and spend
        counters to write, and hand its events (and their sums per billing
        line) to the records.

        Runs at every tick of the write loop (whether or not the store
        answers), before anything reads the sums, and every `SUM_EVERY`
        requests. A request only appends to a list: summing a tick's
        requests in one loop costs a fraction of summing each as it comes
        (a request's cost is added to its spend list's counters once per
        list, and the records get one sum per line, not one per event)."""
        recorded, self._recorded = self._recorded, []
        spent, self._spent = self._spent, []
        if not recorded:
            return
        rows: dict[_Row, UsageCounts] = {}
        charged: dict[int, tuple[Spend, list[int]]] = {}  # by id: lists are shared
        for e, spend in zip(recorded, spent, strict=True):
            row = rows.get((e.account_id, e.key_id, e.model, e.day))
            if row is None:
                row = rows[(e.account_id, e.key_id, e.model, e.day)] = UsageCounts()
            row.add(e)
            cost = charged.get(id(spend))
            if cost is None:
                charged[id(spend)] = (spend, [e.cost_micros])
            else:
                cost[1][0] += e.cost_micros
        lines: dict[tuple[str, str, str], UsageCounts] = {}
        for (account, key, model, day), counts in rows.items():
            row = self._usage.get((account, key, model, day))
            if row is None:
                row = self._usage[(account, key, model, day)] = UsageCounts()
            row.add(counts, counts.requests)
            line = lines.get((account, day, model))
            if line is None:
                line = lines[(account, day, model)] = UsageCounts()
            line.add(counts, counts.requests)
        for spend, (micros,) in charged.values():
            for subject, period, ttl in spend:
                s = self._spend.get((subject, period))
                if s is None:
                    self._spend[(subject, period)] = [micros, ttl]
                else:
                    s[0] += micros
        if self.records is not None:
            self.records.extend(recorded, lines)
        self._gauge()

    # -- erasure ----------------------------------------------------------------
    def forget(self, account_id: str) -> None:
        """Drop what is held for `account_id` and not written yet (also in a
        batch a failed write left), and ignore its requests for
        `FORGET_SECONDS`."""
        self._sum()
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
        self._sum()
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
        self._sum()
        b = self._batch
        in_batch = 0 if b is None else b.rows
        return len(self._usage) + len(self._spend) + in_batch

    def _gauge(self) -> None:
        # Set when the backlog is summed (each tick) and written, not per request.
        self.metrics.meter_backlog.set(self.backlog)

    # -- writing ----------------------------------------------------------------
    def _collect(self) -> None:
        self._sum()

    def _cut(self) -> _Batch | None:
        self._sum()
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
