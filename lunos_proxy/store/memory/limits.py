"""Limits in one process's memory: `Limits` for the embedded store, and on
its own the local limiter the abuse plugin counts with while a shared store
is down. Counters, leases and bans live only in memory (never in the data
file): what Redis would expire, a periodic sweep drops.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

from .. import gcra
from ..limits import SLOT_RETRY, BanEntry, Limit, Limits, Slot, SlotState, Verdict

__all__ = ["MemoryLimits"]

# Counter writes between sweeps of drained counters and ended bans.
_SWEEP_EVERY = 10_000


class MemoryLimits(Limits):
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        # (tag, key) -> level, stamp, and when it will have drained to empty
        self._counters: dict[tuple[str, str], tuple[float, float, float]] = {}
        self._bans: dict[tuple[str, str], float] = {}  # until
        self._offences: dict[tuple[str, str], tuple[int, float]] = {}  # count, last
        self._slots: dict[tuple[str, str], dict[str, float]] = {}  # lease -> until
        self._touched_since_sweep = 0

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
