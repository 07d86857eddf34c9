"""The limit store with a policy for when it is unreachable.

    fail_open    serve, counting against a local per-process limiter holding
                 `local_share` of every limit (e.g. 0.5 with two instances)
    fail_closed  refuse with 503 until the store answers again

After a failure the store is not asked again for `retry_interval` seconds
(so a dead Redis costs no timeout per request); the next call after that
tries it, and the first success switches back. Transitions are logged once
and exported as `lunos_limits_store_degraded`.

A reservation is settled on the backend that took it: settling on a store
that went down in between is dropped (its counters drain, its leases expire).
"""

from __future__ import annotations

import asyncio
import math
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Literal

import structlog

from lunos_proxy.errors import ServiceUnavailable
from lunos_proxy.logs import error_name
from lunos_proxy.metrics import Metrics
from lunos_proxy.store import Limit, Slot, Store, StoreError, Verdict
from lunos_proxy.store.limits import Limits
from lunos_proxy.store.memory import MemoryLimits

from .metrics import AbuseMetrics

__all__ = ["Failover", "failover_for"]

log = structlog.get_logger("lunos.limits")

Policy = Literal["fail_open", "fail_closed"]


class Failover:
    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.local: Limits = MemoryLimits()
        self.metrics = metrics
        self.policy: Policy = "fail_open"
        self.share = 1.0
        self.retry_interval = 1.0
        self._clock = clock
        self._down_until = 0.0
        self.degraded = False
        self._settle_seconds = metrics.store_duration.labels("settle")
        self._settle_errors = metrics.store_errors.labels("settle")

    def configure(self, policy: Policy, share: float, retry_interval: float) -> None:
        self.policy, self.share, self.retry_interval = policy, share, retry_interval

    async def hit(
        self, tag: str, limits: Sequence[Limit], bans: Sequence[str], slots: Sequence[Slot],
        lease: str,
    ) -> tuple[Verdict, Limits]:
        """The verdict, and the backend that gave it (settle there)."""
        if not self.degraded or self._clock() >= self._down_until:
            try:
                verdict = await self.store.hit(tag, limits, bans, slots, lease)
            except StoreError as e:
                self._down(e)
            else:
                if self.degraded:
                    self._up()
                return verdict, self.store
        if self.policy == "fail_closed":
            raise ServiceUnavailable(
                "Rate limiting is unavailable; please retry shortly.",
                headers={"Retry-After": "1"},
            )
        scaled = self.scaled(limits)
        local_slots = [Slot(s.key, self._scale(s.limit), s.ttl, s.shadow) for s in slots]
        # Bans are enforced from the local ban table meanwhile (see bans.py).
        return await self.local.hit(tag, scaled, (), local_slots, lease), self.local

    def scaled(self, limits: Sequence[Limit]) -> list[Limit]:
        """`limits` as the local limiter applies them: each at `share`."""
        return [
            Limit(lim.key, self._scale(lim.limit), lim.window, lim.cost, lim.shadow)
            for lim in limits
        ]

    def _scale(self, limit: int) -> int:
        return max(1, math.floor(limit * self.share)) if limit > 0 else 0

    def settle_behind(
        self, backend: Limits, tag: str, charges: Sequence[Limit], slots: Sequence[str], lease: str
    ) -> None:
        """Settle on `backend` without waiting (`Store.settle_behind`), timed
        and counted as the store's "settle" operation."""
        if backend is self.local:
            charges = self.scaled(charges)
        started = time.perf_counter()
        health = self.metrics.store_health

        def done(error: BaseException | None) -> None:
            self._settle_seconds.observe(time.perf_counter() - started)
            if error is None:
                if not health.up and backend is not self.local:
                    health.ok()
            elif isinstance(error, StoreError):
                self._settle_errors.inc()
                health.failed()
                self._down(error)
            elif not isinstance(error, asyncio.CancelledError):
                log.error("settle_failed", exc_info=error)

        backend.settle_behind(tag, charges, slots, lease, done)

    async def renew(self, backend: Limits, tag: str, slots: Sequence[Slot], lease: str) -> None:
        try:
            await backend.renew(tag, slots, lease)
        except StoreError as e:
            self._down(e)

    def _down(self, error: StoreError) -> None:
        self._down_until = self._clock() + self.retry_interval
        if not self.degraded:
            self.degraded = True
            self.metrics.add(AbuseMetrics).limits_store_degraded.set(1)
            log.warning("limits_store_down", policy=self.policy, error=error_name(error))

    def _up(self) -> None:
        if self.degraded:
            self.degraded = False
            self.metrics.add(AbuseMetrics).limits_store_degraded.set(0)
            log.warning("limits_store_up", policy=self.policy)


_failovers: weakref.WeakKeyDictionary[Store, Failover] = weakref.WeakKeyDictionary()


def local_store(store: Store) -> Limits | None:
    """The local limiter standing in for `store` while it is down, if one was made."""
    failover = _failovers.get(store)
    return None if failover is None else failover.local


def failover_for(store: Store, metrics: Metrics) -> Failover:
    """The store's failover state: one per store, so a reload keeps it."""
    failover = _failovers.get(store)
    if failover is None:
        failover = _failovers[store] = Failover(store, metrics)
    return failover
