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
tokens and audit in directory.py, usage and spend counters and claims in
accounting.py, publish and subscribe and cooldowns in bus.py, the data
file's format in file.py; this module composes them and keeps the data
file up to date.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable

import msgspec
import structlog

from ..base import (
    AUDIT_MAX_ENTRIES,
    AccountRecord,
    AdminTokenRecord,
    AuditRecord,
    BillingRecord,
    KeyRecord,
    Store,
)
from .accounting import MemoryAccounting, UsageTable
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

_Callback = Callable[[str], Awaitable[None]]

# Seconds between sweeps of expired usage events and spend counters.
_EXPIRE_EVERY = 60.0


class MemoryStore(MemoryLimits, MemoryDirectory, MemoryAccounting, MemoryBus, Store):
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
        self._usage: UsageTable = defaultdict(dict)
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
            self._usage[u.account_id][(u.day, u.key_id, u.model)] = u.counters
        self._legacy_billing = snapshot.billing
        for t in snapshot.admin_tokens:
            self._admin_tokens[t.id] = t
        self._audit.extend(snapshot.audit)
        for entry in snapshot.spend:
            self._spend[(entry.subject, entry.period)] = (entry.micros, entry.expires)
        self._legacy_events = snapshot.events
