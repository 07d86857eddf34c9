"""Usage counters, spend counters and once-only claims in memory (`Accounting`).

Mixed into `MemoryStore`, which holds the tables declared here, keeps the
counters in its data file (written behind: `_save_soon`) and drops spend
counters and claims whose time is up (`_expire_due`, as Redis expires
their keys). Claims and `once` markers live only in memory.
"""

from __future__ import annotations

import abc
from collections import defaultdict
from collections.abc import Callable, Sequence

from ..accounting import Accounting, SpendDelta, UsageCounts, UsageDelta, UsageRow

__all__ = ["MemoryAccounting", "UsageTable"]

# (day, key_id, model) -> counters, per account
UsageTable = defaultdict[str, dict[tuple[str, str, str], UsageCounts]]

# Seconds a `once` id is remembered: a retried batch comes back within it.
_ONCE_SECONDS = 604_800
# `once` markers past which the expired ones are swept.
_ONCE_SWEEP = 100_000


class MemoryAccounting(Accounting):
    _clock: Callable[[], float]
    _usage: UsageTable
    _spend: dict[tuple[str, str], tuple[int, float]]  # micros, expires (0: never)
    _claims: dict[str, float]  # name -> expires
    _once: dict[tuple[str, str], float]  # (operation, once id) -> expires

    @abc.abstractmethod
    def _save_soon(self) -> None: ...

    @abc.abstractmethod
    def _expire_due(self) -> float:
        """The time now, having dropped what expired if a sweep is due."""

    # -- usage counters -------------------------------------------------------
    async def add_usage(self, deltas: Sequence[UsageDelta], *, once: str = "") -> None:
        if not self._first_time("usage", once):
            return
        for d in deltas:
            rows = self._usage[d.account_id]
            counts = rows.get((d.day, d.key_id, d.model))
            if counts is None:
                counts = rows[(d.day, d.key_id, d.model)] = UsageCounts()
            counts.add(d, d.requests)
        self._save_soon()

    async def usage(self, account_id: str, first_day: str, last_day: str) -> list[UsageRow]:
        rows = self._usage.get(account_id, {})
        return [
            counts.row(key_id, model, day)
            for (day, key_id, model), counts in sorted(rows.items())
            if first_day <= day <= last_day
        ]

    async def delete_usage(self, account_id: str) -> int:
        rows = self._usage.pop(account_id, {})
        if rows:
            self._save_soon()
        return len(rows)

    # -- spend counters, once-only claims -------------------------------------
    def _first_time(self, op: str, once: str) -> bool:
        # Repeats of a write with a `once` id are ignored for a week.
        if not once:
            return True
        now = self._clock()
        if len(self._once) > _ONCE_SWEEP:
            self._once = {k: t for k, t in self._once.items() if t > now}
        if self._once.get((op, once), 0.0) > now:
            return False
        self._once[(op, once)] = now + _ONCE_SECONDS
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
