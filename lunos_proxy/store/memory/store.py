"""The embedded store: one process, nothing to install.

    store = MemoryStore("/var/lib/lunos/store.json")   # or None: nothing kept
    await store.start()
    ...
    await store.close()                                # writes what is pending

Accounts and keys are written to the data file before their call returns;
usage counters and spend are written behind, `flush_interval` seconds after
the first change, and on `close`. Limit counters and bans live only in memory.
Usage events and the billing ledger are not kept here but in the records
database (lunos_proxy/records/); a data file from before keeps what it held
of them (`Snapshot.billing`, `.events`) as it was.

Limits live in limits.py (`MemoryLimits`, which the abuse plugin also uses
alone as its local limiter while the shared store is down), keys, accounts,
tokens and audit in directory.py, publish and subscribe in bus.py, the data
file's format in file.py; this module has the usage counters, spend,
cooldowns and the data file's upkeep.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import msgspec
import structlog

from ..base import (
    AUDIT_MAX_ENTRIES,
    AccountRecord,
    AdminTokenRecord,
    AuditRecord,
    BillingRecord,
    KeyRecord,
    SpendDelta,
    Store,
    UsageDelta,
    UsageRow,
)
from .bus import MemoryBus
from .directory import MemoryDirectory
from .file import (
    EventDay,
    Snapshot,
    SpendEntry,
    UsageEntry,
    read_snapshot,
    write_snapshot,
)
from .limits import MemoryLimits

__all__ = ["MemoryStore"]

log = structlog.get_logger("lunos.store")

_R = TypeVar("_R", KeyRecord, AccountRecord, BillingRecord, AdminTokenRecord, AuditRecord)
_Callback = Callable[[str], Awaitable[None]]
# (day, key_id, model) -> requests, input, output, cached input, cost
_Usage = dict[tuple[str, str, str], list[int]]

# Seconds between sweeps of expired usage events and spend counters.
_EXPIRE_EVERY = 60.0


def _clone(record: _R) -> _R:
    # Callers may mutate what they get; the store's copy must not change with it.
    return msgspec.json.decode(msgspec.json.encode(record), type=type(record))


class MemoryStore(MemoryLimits, MemoryDirectory, MemoryBus, Store):
    def __init__(
        self,
        path: str | None = None,
        *,
        clock: Callable[[], float] = time.time,
        flush_interval: float = 1.0,
    ) -> None:
        MemoryLimits.__init__(self, clock)
        self._path = path
        self._flush_interval = flush_interval
        self._cooldowns: dict[str, float] = {}  # subject -> until
        self._keys: dict[str, KeyRecord] = {}
        self._key_ids_by_hash: dict[str, str] = {}
        self._accounts: dict[str, AccountRecord] = {}
        self._account_ids_by_index: dict[str, str] = {}
        self._usage: defaultdict[str, _Usage] = defaultdict(dict)
        self._admin_tokens: dict[str, AdminTokenRecord] = {}
        self._audit: deque[AuditRecord] = deque(maxlen=AUDIT_MAX_ENTRIES)  # oldest first
        self._channels: defaultdict[str, list[_Callback]] = defaultdict(list)
        self._spend: dict[tuple[str, str], tuple[int, float]] = {}  # micros, expires (0: never)
        # What a data file from before the records database held: kept as is.
        self._legacy_billing: list[BillingRecord] = []
        self._legacy_events: list[EventDay] = []
        self._claims: dict[str, float] = {}  # name -> expires
        self._once: dict[tuple[str, str], float] = {}  # (operation, once id) -> expires
        self._save_lock = asyncio.Lock()
        self._flush_task: asyncio.Task[None] | None = None
        self._dirty = False
        self._next_expiry = 0.0  # when _expire runs next
        if path is not None:
            self._load(read_snapshot(path))

    @property
    def path(self) -> str | None:
        return self._path

    # -- usage and billing ----------------------------------------------------
    async def add_usage(self, deltas: Sequence[UsageDelta], *, once: str = "") -> None:
        if not self._first_time("usage", once):
            return
        for d in deltas:
            row = self._usage[d.account_id].setdefault((d.day, d.key_id, d.model), [0] * 5)
            row[0] += d.requests
            row[1] += d.input_tokens
            row[2] += d.output_tokens
            row[3] += d.cached_input_tokens
            row[4] += d.cost_micros
        self._save_soon()

    async def usage(self, account_id: str, first_day: str, last_day: str) -> list[UsageRow]:
        rows = self._usage.get(account_id, {})
        return [
            UsageRow(
                key_id=key_id,
                model=model,
                day=day,
                requests=c[0],
                input_tokens=c[1],
                output_tokens=c[2],
                cached_input_tokens=c[3],
                cost_micros=c[4],
            )
            for (day, key_id, model), c in sorted(rows.items())
            if first_day <= day <= last_day
        ]

    async def delete_usage(self, account_id: str) -> int:
        rows = self._usage.pop(account_id, {})
        if rows:
            self._save_soon()
        return len(rows)

    # -- routing --------------------------------------------------------------
    async def cool_down(self, subject: str, seconds: float) -> float:
        now = self._clock()
        until = max(self._cooldowns.get(subject, 0.0), now + seconds)
        self._cooldowns[subject] = until
        return until - now

    async def cooldowns(self) -> dict[str, float]:
        now = self._clock()
        self._cooldowns = {s: until for s, until in self._cooldowns.items() if until > now}
        return {s: until - now for s, until in self._cooldowns.items()}

    # -- metering -------------------------------------------------------------
    def _first_time(self, op: str, once: str) -> bool:
        # Repeats of a write with a `once` id are ignored for a week.
        if not once:
            return True
        now = self._clock()
        if len(self._once) > 100_000:
            self._once = {k: t for k, t in self._once.items() if t > now}
        if self._once.get((op, once), 0.0) > now:
            return False
        self._once[(op, once)] = now + 604_800
        return True

    async def add_spend(self, deltas: Sequence[SpendDelta], *, once: str = "") -> None:
        if not self._first_time("spend", once):
            return
        now = self._expire_due()
        for d in deltas:
            value, expires = self._spend.get((d.subject, d.period), (0, 0.0))
            if expires and expires <= now:
                value = 0
            self._spend[(d.subject, d.period)] = (value + d.micros, now + d.ttl if d.ttl else 0.0)
        self._save_soon()

    async def spend(self, subject: str, periods: Sequence[str]) -> list[int]:
        now = self._clock()
        out = []
        for period in periods:
            value, expires = self._spend.get((subject, period), (0, 0.0))
            out.append(0 if expires and expires <= now else value)
        return out

    def _live_spend(self, subject: str) -> dict[str, int]:
        now = self._clock()
        return {
            period: value
            for (s, period), (value, expires) in self._spend.items()
            if s == subject and not (expires and expires <= now)
        }

    async def spend_counters(self, subject: str) -> dict[str, int]:
        return self._live_spend(subject)

    async def delete_spend(self, subject: str) -> int:
        live = self._live_spend(subject)
        self._spend = {k: v for k, v in self._spend.items() if k[0] != subject}
        self._save_soon()
        return len(live)

    async def claim(self, name: str, ttl: int) -> bool:
        now = self._expire_due()
        if self._claims.get(name, 0.0) > now:
            return False
        self._claims[name] = now + ttl
        return True

    # -- lifecycle ------------------------------------------------------------
    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._channels.clear()
        task, self._flush_task = self._flush_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._dirty:
            await self._save()

    # -- the data file ----------------------------------------------------------
    def _save_soon(self) -> None:
        if self._path is None:
            return
        self._dirty = True
        if self._flush_task is None or self._flush_task.done():
            self._flush_task = asyncio.get_running_loop().create_task(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(self._flush_interval)
        try:
            await self._save()
        except Exception:
            # Kept dirty: the next change or `close` tries again.
            log.exception("store_file_write_failed")

    async def _save(self) -> None:
        path = self._path
        if path is None:
            return
        # Encoded here, in one step of the event loop, so the file is a
        # consistent cut; the slow part (write, fsync) runs in a thread.
        self._dirty = False
        data = msgspec.json.encode(self._snapshot())
        # Shielded: a cancelled caller must not release the lock while its
        # thread still writes, or an older snapshot could land last.
        await asyncio.shield(self._write(path, data))

    async def _write(self, path: str, data: bytes) -> None:
        async with self._save_lock:
            try:
                await asyncio.to_thread(write_snapshot, path, data)
            except BaseException:
                self._dirty = True
                raise

    def _expire_due(self) -> float:
        """The time now, having swept if a sweep is due."""
        now = self._clock()
        if now >= self._next_expiry:
            self._expire(now)
        return now

    def _expire(self, now: float) -> None:
        """Drop the spend counters and claims whose time is up, as Redis drops
        their keys: neither memory nor the data file keeps them past it (by
        more than `_EXPIRE_EVERY` in memory)."""
        self._next_expiry = now + _EXPIRE_EVERY
        self._legacy_events = [d for d in self._legacy_events if d.expires > now]
        self._spend = {k: v for k, v in self._spend.items() if not v[1] or v[1] > now}
        self._claims = {name: until for name, until in self._claims.items() if until > now}

    def _snapshot(self) -> Snapshot:
        self._expire(self._clock())
        return Snapshot(
            accounts=list(self._accounts.values()),
            keys=list(self._keys.values()),
            usage=[
                UsageEntry(account_id=a, day=day, key_id=k, model=m, counters=c)
                for a, rows in self._usage.items()
                for (day, k, m), c in rows.items()
            ],
            billing=self._legacy_billing,
            admin_tokens=list(self._admin_tokens.values()),
            audit=list(self._audit),
            spend=[
                SpendEntry(subject=s, period=p, micros=v, expires=x)
                for (s, p), (v, x) in self._spend.items()
            ],
            events=self._legacy_events,
        )

    def _load(self, snapshot: Snapshot) -> None:
        for account in snapshot.accounts:
            self._accounts[account.id] = account
            if account.email_index:
                self._account_ids_by_index[account.email_index] = account.id
        for key in snapshot.keys:
            self._keys[key.id] = key
            self._key_ids_by_hash[key.hash] = key.id
        for u in snapshot.usage:
            self._usage[u.account_id][(u.day, u.key_id, u.model)] = list(u.counters)
        self._legacy_billing = snapshot.billing
        for t in snapshot.admin_tokens:
            self._admin_tokens[t.id] = t
        self._audit.extend(snapshot.audit)
        for entry in snapshot.spend:
            self._spend[(entry.subject, entry.period)] = (entry.micros, entry.expires)
        self._legacy_events = snapshot.events
