"""The write-behind ledger: usage is summed in memory and written in batches.

    ledger = Ledger(store, metrics, flush_interval=1.0, retention=400 * 86400)
    await ledger.start()
    ledger.record(entry)        # on the hot path: a few dict updates, no I/O
    await ledger.stop()         # writes what is pending (graceful shutdown)

Every `flush_interval` seconds what has accumulated is cut into one batch and
written in four steps: usage counters (`add_usage`), billing lines
(`add_billing`), spend counters (`add_spend`) and usage events
(`add_usage_events`). A step that fails (the store is down) is retried, from
that step on, until it succeeds; meanwhile new usage keeps summing into the
next batch, so an outage costs memory in proportion to distinct
(account, key, model, day) rows, not to requests. Events are the one part
that grows with requests: past `max_pending_events` the oldest are dropped
and counted in `lunos_meter_dropped{what="events"}`. Counters are never dropped.

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

import asyncio
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import structlog

from ..logs import error_name
from ..metrics import Metrics
from ..store.base import BillingRecord, SpendDelta, Store, StoreError, UsageDelta, UsageEvent
from ..store.fanout import Fanout

__all__ = ["ERASED_CHANNEL", "FORGET_SECONDS", "Entry", "Ledger"]

log = structlog.get_logger("lunos.meter")

ERASED_CHANNEL = "accounts:erased"  # message: the account id
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
    billing: list[BillingRecord]
    spend: list[SpendDelta]
    events: list[UsageEvent]
    id: str = field(default_factory=lambda: uuid.uuid4().hex)  # makes retries idempotent
    done: int = 0  # steps written so far
    rows: int = field(default=0)


class Ledger:
    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        *,
        flush_interval: float = 1.0,
        retention: int = 400 * 86_400,
        max_pending_events: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.flush_interval = flush_interval
        self.retention = retention
        self.max_pending_events = max_pending_events
        self.clock = clock
        self._usage: dict[_Row, list[int]] = {}
        self._spend: dict[tuple[str, str], list[int]] = {}  # micros, ttl
        self._events: list[UsageEvent] = []
        self._batch: _Batch | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._failing = False
        self._stopping = False
        self._lock = asyncio.Lock()
        # Called with the subjects whose spend just reached the store.
        self.on_written: list[Callable[[set[str]], None]] = []
        self._erased: dict[str, float] = {}  # account id -> ignored until

    # -- the hot path ---------------------------------------------------------
    def record(self, e: Entry) -> None:
        if self._erased and self._was_erased(e.account_id):
            return
        row = self._usage.get((e.account_id, e.key_id, e.model, e.day))
        if row is None:
            row = self._usage[(e.account_id, e.key_id, e.model, e.day)] = [0, 0, 0, 0, 0]
        row[0] += 1
        row[1] += e.input_tokens
        row[2] += e.output_tokens
        row[3] += e.cached_input_tokens
        row[4] += e.cost_micros
        for subject, period, ttl in e.spend:
            s = self._spend.get((subject, period))
            if s is None:
                self._spend[(subject, period)] = [e.cost_micros, ttl]
            else:
                s[0] += e.cost_micros
        if e.event is not None:
            if len(self._events) >= self.max_pending_events:
                del self._events[0]
                self.metrics.meter_dropped.labels("events").inc()
            self._events.append(e.event)
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
        keys |= {e.key_id for e in self._events if e.account_id == account_id}
        if b is not None:
            keys |= {d.key_id for d in b.usage if d.account_id == account_id}
            keys |= {e.key_id for e in b.events if e.account_id == account_id}
        subjects = {f"account:{account_id}", *(f"key:{k}" for k in keys)}
        self._usage = {row: c for row, c in self._usage.items() if row[0] != account_id}
        self._spend = {sp: v for sp, v in self._spend.items() if sp[0] not in subjects}
        self._events = [e for e in self._events if e.account_id != account_id]
        if b is not None:
            b.usage = [d for d in b.usage if d.account_id != account_id]
            b.billing = [r for r in b.billing if r.account_id != account_id]
            b.spend = [d for d in b.spend if d.subject not in subjects]
            b.events = [e for e in b.events if e.account_id != account_id]
            b.rows = len(b.usage) + len(b.spend) + len(b.events)
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
        if b is not None and b.done < 3:
            total += sum(d.micros for d in b.spend if d.subject == subject and d.period == period)
        return total

    @property
    def backlog(self) -> int:
        b = self._batch
        in_batch = 0 if b is None else b.rows
        return len(self._usage) + len(self._spend) + len(self._events) + in_batch

    def _gauge(self) -> None:
        self.metrics.meter_backlog.set(self.backlog)

    # -- writing ----------------------------------------------------------------
    def _cut(self) -> _Batch | None:
        if not (self._usage or self._spend or self._events):
            return None
        now = self.clock()
        usage = [
            UsageDelta(
                account_id=a,
                key_id=k,
                model=m,
                day=d,
                requests=c[0],
                input_tokens=c[1],
                output_tokens=c[2],
                cached_input_tokens=c[3],
                cost_micros=c[4],
            )
            for (a, k, m, d), c in self._usage.items()
        ]
        lines: dict[tuple[str, str, str], list[int]] = {}
        for (a, _k, m, d), c in self._usage.items():
            line = lines.setdefault((a, m, d), [0, 0, 0, 0])
            line[0] += c[0]
            line[1] += c[1]
            line[2] += c[2]
            line[3] += c[4]
        billing = [
            BillingRecord(
                id=uuid.uuid4().hex,
                account_id=a,
                period=d,
                model=m,
                requests=c[0],
                input_tokens=c[1],
                output_tokens=c[2],
                cost_micros=c[3],
                created=now,
            )
            for (a, m, d), c in lines.items()
        ]
        spend = [
            SpendDelta(subject=s, period=p, micros=v[0], ttl=v[1])
            for (s, p), v in self._spend.items()
            if v[0]
        ]
        batch = _Batch(usage, billing, spend, self._events)
        batch.rows = len(usage) + len(spend) + len(self._events)
        self._usage, self._spend, self._events = {}, {}, []
        return batch

    async def flush(self) -> bool:
        """Write everything recorded so far; False if the store failed (kept for later)."""
        async with self._lock:
            return await self._flush()

    async def _flush(self) -> bool:
        while True:
            if self._batch is None:
                self._batch = self._cut()
                if self._batch is None:
                    return True
            if not await self._write(self._batch):
                return False
            self._batch = None
            self._gauge()

    async def _write(self, b: _Batch) -> bool:
        steps = (
            lambda: self.store.add_usage(b.usage, once=b.id),
            lambda: self.store.add_billing(b.billing, once=b.id),
            lambda: self.store.add_spend(b.spend, once=b.id),
            lambda: self.store.add_usage_events(b.events, self.retention, once=b.id),
        )
        lists: tuple[Iterable[object], ...] = (b.usage, b.billing, b.spend, b.events)
        while b.done < len(steps):
            if lists[b.done]:
                try:
                    await steps[b.done]()
                except StoreError as e:
                    self.metrics.meter_write_failures.inc()
                    if not self._failing:
                        log.warning("usage_write_failed", error=error_name(e), backlog=self.backlog)
                    self._failing = True
                    return False
            b.done += 1
            if b.done == 3:
                subjects = {d.subject for d in b.spend}
                for callback in self.on_written:
                    callback(subjects)
        if self._failing:
            log.warning("usage_write_recovered")
        self._failing = False
        return True

    async def _run(self) -> None:
        delay = self.flush_interval
        while not self._stopping:
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
            except TimeoutError:
                pass
            self._wake.clear()
            ok = await self.flush()
            # Back off while the store is down, but not for long: the
            # backlog should drain soon after it returns.
            delay = self.flush_interval if ok else min(delay * 2, 2.0)

    def wake(self) -> None:
        """Write now rather than at the next interval."""
        self._wake.set()

    async def start(self) -> None:
        if self._task is None:
            await self._listen()
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self, attempts: int = 3) -> None:
        # Not cancelled: a write cut off halfway could be applied and then
        # written again. The loop finishes its current flush and exits.
        self._stopping = True
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
        for i in range(attempts):
            if await self.flush():
                return
            await asyncio.sleep(0.2 * (i + 1))
        lost = self.backlog
        self.metrics.meter_dropped.labels("shutdown").inc(lost)
        log.error("usage_lost_at_shutdown", rows=lost)


# The ledgers that hear erasures: one subscription per store, shared by the
# generations a reload makes.
_ERASURES = Fanout(ERASED_CHANNEL, Ledger.forget)
