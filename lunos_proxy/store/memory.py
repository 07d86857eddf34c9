"""The embedded store: one process, nothing to install.

    store = MemoryStore("/var/lib/lunos/store.json")   # or None: nothing kept
    await store.start()
    ...
    await store.close()                                # writes what is pending

Accounts and keys are written to the data file before their call returns;
usage and billing are written behind, `flush_interval` seconds after the first
change, and on `close`. Limit counters and bans live only in memory.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import msgspec
import structlog

from . import gcra
from .base import (
    AUDIT_MAX_ENTRIES,
    SLOT_RETRY,
    AccountRecord,
    AdminTokenRecord,
    AuditRecord,
    BanEntry,
    BillingRecord,
    KeyRecord,
    Limit,
    Slot,
    SlotState,
    SpendDelta,
    Store,
    UsageDelta,
    UsageEvent,
    UsageRow,
    Verdict,
)
from .memory_file import (
    EventDay,
    Snapshot,
    SpendEntry,
    UsageEntry,
    read_snapshot,
    write_snapshot,
)

__all__ = ["MemoryStore"]

log = structlog.get_logger("lunos.store")

_R = TypeVar("_R", KeyRecord, AccountRecord, BillingRecord, AdminTokenRecord, AuditRecord)
_Callback = Callable[[str], Awaitable[None]]
# (day, key_id, model) -> requests, input, output, cached input, cost
_Usage = dict[tuple[str, str, str], list[int]]

# Counter writes between sweeps of drained counters and ended bans.
_SWEEP_EVERY = 10_000
# Seconds between sweeps of expired usage events and spend counters.
_EXPIRE_EVERY = 60.0


def _clone(record: _R) -> _R:
    # Callers may mutate what they get; the store's copy must not change with it.
    return msgspec.json.decode(msgspec.json.encode(record), type=type(record))


class MemoryStore(Store):
    def __init__(
        self,
        path: str | None = None,
        *,
        clock: Callable[[], float] = time.time,
        flush_interval: float = 1.0,
    ) -> None:
        self._path = path
        self._clock = clock
        self._flush_interval = flush_interval
        # (tag, key) -> level, stamp, and when it will have drained to empty
        self._counters: dict[tuple[str, str], tuple[float, float, float]] = {}
        self._bans: dict[tuple[str, str], float] = {}  # until
        self._cooldowns: dict[str, float] = {}  # subject -> until
        self._offences: dict[tuple[str, str], tuple[int, float]] = {}  # count, last
        self._slots: dict[tuple[str, str], dict[str, float]] = {}  # lease -> until
        self._keys: dict[str, KeyRecord] = {}
        self._key_ids_by_hash: dict[str, str] = {}
        self._accounts: dict[str, AccountRecord] = {}
        self._account_ids_by_index: dict[str, str] = {}
        self._usage: defaultdict[str, _Usage] = defaultdict(dict)
        self._billing: defaultdict[str, list[BillingRecord]] = defaultdict(list)
        self._admin_tokens: dict[str, AdminTokenRecord] = {}
        self._audit: deque[AuditRecord] = deque(maxlen=AUDIT_MAX_ENTRIES)  # oldest first
        self._channels: defaultdict[str, list[_Callback]] = defaultdict(list)
        self._spend: dict[tuple[str, str], tuple[int, float]] = {}  # micros, expires (0: never)
        # account -> day -> (events, expires)
        self._events: defaultdict[str, dict[str, tuple[list[UsageEvent], float]]] = defaultdict(
            dict
        )
        self._claims: dict[str, float] = {}  # name -> expires
        self._once: dict[tuple[str, str], float] = {}  # (operation, once id) -> expires
        self._save_lock = asyncio.Lock()
        self._flush_task: asyncio.Task[None] | None = None
        self._dirty = False
        self._touched_since_sweep = 0
        self._next_expiry = 0.0  # when _expire runs next
        if path is not None:
            self._load(read_snapshot(path))

    @property
    def path(self) -> str | None:
        return self._path

    # -- limits ---------------------------------------------------------------
    async def hit(
        self,
        tag: str,
        limits: Sequence[Limit],
        bans: Sequence[str] = (),
        slots: Sequence[Slot] = (),
        lease: str = "",
    ) -> Verdict:
        now = self._clock()
        banned = max((self._bans.get((tag, s), now) - now for s in bans), default=0.0)
        levels: list[float] = []
        fits: list[bool] = []
        retry_after = 0.0
        for limit in limits:
            gcra.validate(limit)
            level, stamp, _ = self._counters.get((tag, limit.key), (0.0, now, now))
            levels.append(gcra.drained(level, stamp, limit, now))
            wait = gcra.wait(levels[-1], limit.cost, limit)
            fits.append(wait == 0.0)
            if not limit.shadow:
                retry_after = max(retry_after, wait)
        held = [len(self._leases(tag, slot.key, now)) for slot in slots]
        for slot, n in zip(slots, held, strict=True):
            if not slot.shadow and n >= slot.limit:
                retry_after = max(retry_after, SLOT_RETRY)
        allowed = retry_after == 0.0 and banned <= 0.0
        if allowed:
            for i, limit in enumerate(limits):
                if limit.cost and fits[i]:
                    levels[i] += limit.cost
                    self._set_counter(tag, limit, levels[i], now)
            for slot, n in zip(slots, held, strict=True):
                if n < slot.limit:
                    self._slots.setdefault((tag, slot.key), {})[lease] = now + slot.ttl
        return Verdict(
            allowed=allowed,
            retry_after=0.0 if allowed else max(retry_after, banned),
            states=[
                gcra.state(level, limit, fit)
                for limit, level, fit in zip(limits, levels, fits, strict=True)
            ],
            banned=max(banned, 0.0),
            slots=[SlotState(n, n < slot.limit) for slot, n in zip(slots, held, strict=True)],
        )

    def _leases(self, tag: str, key: str, now: float) -> dict[str, float]:
        leases = self._slots.get((tag, key))
        if leases is None:
            return {}
        for lease in [lease for lease, until in leases.items() if until <= now]:
            del leases[lease]
        if not leases:
            del self._slots[(tag, key)]
        return leases

    async def adjust(self, tag: str, limit: Limit) -> None:
        self._adjust(tag, limit)

    def _adjust(self, tag: str, limit: Limit) -> None:
        gcra.validate(limit)
        now = self._clock()
        level, stamp, _ = self._counters.get((tag, limit.key), (0.0, now, now))
        self._set_counter(tag, limit, gcra.drained(level, stamp, limit, now) + limit.cost, now)

    async def settle(
        self, tag: str, charges: Sequence[Limit], slots: Sequence[str] = (), lease: str = ""
    ) -> None:
        self._settle(tag, charges, slots, lease)

    def settle_behind(
        self,
        tag: str,
        charges: Sequence[Limit],
        slots: Sequence[str],
        lease: str,
        done: Callable[[BaseException | None], None],
    ) -> None:
        # Nothing to wait for in memory: settled before this returns.
        self._settle(tag, charges, slots, lease)
        done(None)

    def _settle(self, tag: str, charges: Sequence[Limit], slots: Sequence[str], lease: str) -> None:
        for charge in charges:
            self._adjust(tag, charge)
        for key in slots:
            leases = self._slots.get((tag, key))
            if leases is not None:
                leases.pop(lease, None)
                if not leases:
                    del self._slots[(tag, key)]

    async def renew(self, tag: str, slots: Sequence[Slot], lease: str) -> None:
        now = self._clock()
        for slot in slots:
            leases = self._leases(tag, slot.key, now)
            if lease in leases:
                leases[lease] = now + slot.ttl

    async def ban(self, tag: str, subject: str, seconds: float) -> None:
        until = self._clock() + seconds
        if until > self._bans.get((tag, subject), 0.0):
            self._bans[(tag, subject)] = until

    async def bans(self, tag_prefix: str) -> list[BanEntry]:
        now = self._clock()
        return [
            BanEntry(tag, subject, until - now)
            for (tag, subject), until in sorted(self._bans.items())
            if tag.startswith(tag_prefix) and until > now
        ]

    async def lift_ban(self, tag: str, subject: str, counters: Sequence[str] = ()) -> bool:
        until = self._bans.pop((tag, subject), 0.0)
        self._offences.pop((tag, subject), None)
        for key in counters:
            self._counters.pop((tag, key), None)
        return until > self._clock()

    async def offend(
        self, tag: str, subject: str, first: float, longest: float, memory: float
    ) -> float:
        now = self._clock()
        count, last = self._offences.get((tag, subject), (0, now))
        count = count + 1 if now - last < memory else 1
        self._offences[(tag, subject)] = (count, now)
        seconds = min(longest, first * 2.0 ** min(count - 1, 62))
        await self.ban(tag, subject, seconds)
        return seconds

    def _set_counter(self, tag: str, limit: Limit, level: float, now: float) -> None:
        if level > 0.0:
            empty = now + gcra.state(level, limit).reset if limit.limit > 0 else math.inf
            self._counters[(tag, limit.key)] = (level, now, empty)
        else:
            self._counters.pop((tag, limit.key), None)
        self._touched_since_sweep += 1
        if self._touched_since_sweep >= _SWEEP_EVERY:
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        # What Redis does with expiring keys: drop counters back to full and
        # bans that are over, so idle tags do not pile up.
        self._touched_since_sweep = 0
        self._bans = {k: until for k, until in self._bans.items() if until > now}
        self._offences = {k: v for k, v in self._offences.items() if now - v[1] < 86_400}
        for tag, key in list(self._slots):
            self._leases(tag, key, now)
        self._counters = {k: v for k, v in self._counters.items() if v[2] > now}

    # -- keys -----------------------------------------------------------------
    async def key_by_hash(self, key_hash: str) -> KeyRecord | None:
        key_id = self._key_ids_by_hash.get(key_hash)
        return None if key_id is None else _clone(self._keys[key_id])

    async def key_by_id(self, key_id: str) -> KeyRecord | None:
        key = self._keys.get(key_id)
        return None if key is None else _clone(key)

    async def put_key(self, key: KeyRecord) -> None:
        self._drop_key(key.id)
        self._keys[key.id] = _clone(key)
        self._key_ids_by_hash[key.hash] = key.id
        await self._save()

    async def delete_key(self, key_id: str) -> None:
        if self._drop_key(key_id):
            await self._save()

    def _drop_key(self, key_id: str) -> bool:
        old = self._keys.pop(key_id, None)
        if old is None:
            return False
        if self._key_ids_by_hash.get(old.hash) == key_id:
            del self._key_ids_by_hash[old.hash]
        return True

    async def keys_of(self, account_id: str) -> list[KeyRecord]:
        keys = [_clone(k) for k in self._keys.values() if k.account_id == account_id]
        return sorted(keys, key=lambda k: k.id)

    # -- accounts -------------------------------------------------------------
    async def account(self, account_id: str) -> AccountRecord | None:
        account = self._accounts.get(account_id)
        return None if account is None else _clone(account)

    async def account_by_index(self, email_index: str) -> AccountRecord | None:
        account_id = self._account_ids_by_index.get(email_index)
        return None if account_id is None else await self.account(account_id)

    async def put_account(self, account: AccountRecord) -> None:
        self._drop_account(account.id)
        self._accounts[account.id] = _clone(account)
        if account.email_index:
            self._account_ids_by_index[account.email_index] = account.id
        await self._save()

    async def update_account(self, account: AccountRecord) -> bool:
        if account.id not in self._accounts:
            return False
        await self.put_account(account)
        return True

    async def delete_account(self, account_id: str) -> None:
        if self._drop_account(account_id):
            await self._save()

    def _drop_account(self, account_id: str) -> bool:
        old = self._accounts.pop(account_id, None)
        if old is None:
            return False
        if self._account_ids_by_index.get(old.email_index) == account_id:
            del self._account_ids_by_index[old.email_index]
        return True

    async def accounts(self) -> list[AccountRecord]:
        return [_clone(self._accounts[i]) for i in sorted(self._accounts)]

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

    async def add_billing(self, records: Sequence[BillingRecord], *, once: str = "") -> None:
        if not self._first_time("billing", once):
            return
        for r in records:
            self._billing[r.account_id].append(_clone(r))
        self._save_soon()

    async def billing(self, account_id: str) -> list[BillingRecord]:
        records = self._billing.get(account_id, [])
        return [_clone(r) for r in sorted(records, key=lambda r: (r.created, r.id))]

    async def rekey_billing(self, account_id: str, pseudonym: str) -> int:
        moved = self._billing.pop(account_id, [])
        if not moved:
            return 0
        for r in moved:
            r.account_id = pseudonym
        self._billing[pseudonym].extend(moved)
        self._save_soon()
        return len(moved)

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

    async def add_usage_events(
        self, events: Sequence[UsageEvent], retention: int, *, once: str = ""
    ) -> None:
        if not self._first_time("events", once):
            return
        now = self._expire_due()
        expires = now + retention
        for e in events:
            days = self._events[e.account_id]
            kept, until = days.get(e.day, ([], 0.0))
            if until <= now:  # a day whose events expired starts afresh
                kept = []
            kept.append(e)
            days[e.day] = (kept, expires)
        self._save_soon()

    async def usage_events(
        self, account_id: str, first_day: str = "0000-01-01", last_day: str = "9999-12-31"
    ) -> list[UsageEvent]:
        now = self._clock()
        days = self._events.get(account_id, {})
        out = [
            e
            for day, (events, expires) in sorted(days.items())
            if first_day <= day <= last_day and expires > now
            for e in events
        ]
        return sorted(out, key=lambda e: (e.day, e.time))

    async def delete_usage_events(self, account_id: str) -> int:
        now = self._clock()
        days = self._events.pop(account_id, {})
        if days:
            self._save_soon()
        return sum(len(events) for events, expires in days.values() if expires > now)

    async def claim(self, name: str, ttl: int) -> bool:
        now = self._expire_due()
        if self._claims.get(name, 0.0) > now:
            return False
        self._claims[name] = now + ttl
        return True

    # -- admin tokens and audit ----------------------------------------------
    async def put_admin_token(self, token: AdminTokenRecord) -> None:
        self._admin_tokens[token.id] = _clone(token)
        await self._save()

    async def admin_token_by_hash(self, token_hash: str) -> AdminTokenRecord | None:
        for token in self._admin_tokens.values():
            if token.hash == token_hash:
                return _clone(token)
        return None

    async def admin_tokens(self) -> list[AdminTokenRecord]:
        return [_clone(self._admin_tokens[i]) for i in sorted(self._admin_tokens)]

    async def delete_admin_token(self, token_id: str) -> bool:
        if self._admin_tokens.pop(token_id, None) is None:
            return False
        await self._save()
        return True

    async def add_audit(self, record: AuditRecord) -> None:
        self._audit.append(_clone(record))
        self._save_soon()

    async def audit(self, account_id: str | None = None, limit: int = 1000) -> list[AuditRecord]:
        out: list[AuditRecord] = []
        for record in reversed(self._audit):
            if len(out) >= limit:
                break
            if account_id is None or record.account_id == account_id:
                out.append(_clone(record))
        return out

    async def rekey_audit(self, account_id: str, pseudonym: str) -> int:
        n = 0
        for record in self._audit:
            if record.account_id == account_id:
                record.account_id = pseudonym
                if record.target == account_id:
                    record.target = pseudonym
                n += 1
        if n:
            self._save_soon()
        return n

    # -- invalidation ---------------------------------------------------------
    async def publish(self, channel: str, message: str) -> None:
        for callback in list(self._channels.get(channel, ())):
            try:
                await callback(message)
            except Exception:
                # One bad subscriber must not stop the others hearing of a revocation.
                log.exception("store_subscriber_failed", channel=channel)

    async def subscribe(self, channel: str, callback: Callable[[str], Awaitable[None]]) -> None:
        self._channels[channel].append(callback)

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
        """Drop the usage-event days, spend counters and claims whose time is
        up, as Redis drops their keys: neither memory nor the data file keeps
        them past it (by more than `_EXPIRE_EVERY` in memory)."""
        self._next_expiry = now + _EXPIRE_EVERY
        for account, days in list(self._events.items()):
            for day in [day for day, (_, until) in days.items() if until <= now]:
                del days[day]
            if not days:
                del self._events[account]
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
            billing=[r for records in self._billing.values() for r in records],
            admin_tokens=list(self._admin_tokens.values()),
            audit=list(self._audit),
            spend=[
                SpendEntry(subject=s, period=p, micros=v, expires=x)
                for (s, p), (v, x) in self._spend.items()
            ],
            events=[
                EventDay(account_id=a, day=day, expires=x, events=events)
                for a, days in self._events.items()
                for day, (events, x) in days.items()
            ],
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
        for r in snapshot.billing:
            self._billing[r.account_id].append(r)
        for t in snapshot.admin_tokens:
            self._admin_tokens[t.id] = t
        self._audit.extend(snapshot.audit)
        for entry in snapshot.spend:
            self._spend[(entry.subject, entry.period)] = (entry.micros, entry.expires)
        for ed in snapshot.events:
            self._events[ed.account_id][ed.day] = (ed.events, ed.expires)
