"""A circuit breaker per deployment, judged from this instance's own traffic.

    closed ──(failure rate >= threshold over the window, with >= min requests)──► open
    open ──(open_seconds passed)──► half_open: at most `probes` requests at once
    half_open ──probe succeeds──► closed (window cleared)
    half_open ──probe fails──► open again

The window is a ring of `BUCKETS` time buckets, so recording and judging
cost the same however busy the deployment is. The breaker is local on
purpose: each instance probes a recovering provider with a few requests
of its own instead of every instance sending full traffic the moment a
shared timer ends. What providers say (Retry-After) is shared instead,
as a cooldown in the store (see `state.Cooldowns`).
"""

from __future__ import annotations

import enum
from typing import Annotated

import msgspec

from ..bounds import Seconds

__all__ = ["Breaker", "BreakerSettings", "BreakerState"]

BUCKETS = 10




class BreakerSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    window_seconds: Seconds = 30.0
    # Opens when failures / requests in the window reach this...
    failure_rate: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.5
    # ...and the window holds at least this many requests.
    min_requests: Annotated[int, msgspec.Meta(ge=1)] = 10
    open_seconds: Seconds = 30.0
    # Requests let through at once while half-open (0 would never let one).
    probes: Annotated[int, msgspec.Meta(ge=1)] = 1


class BreakerState(enum.IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class Breaker:
    __slots__ = ("_buckets", "_probing", "opened_until", "settings", "state")

    def __init__(self, settings: BreakerSettings) -> None:
        self.settings = settings
        self.state = BreakerState.CLOSED
        self.opened_until = 0.0
        self._probing = 0
        # [bucket number, requests, failures]
        self._buckets: list[list[int]] = [[-1, 0, 0] for _ in range(BUCKETS)]

    def available(self, now: float) -> bool:
        """Whether a request may be sent now (no side effect)."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN and now < self.opened_until:
            return False
        return self._probing < self.settings.probes

    def begin(self, now: float) -> bool:
        """A request is being sent; returns whether it is a half-open probe."""
        if self.state is BreakerState.OPEN and now >= self.opened_until:
            self.state = BreakerState.HALF_OPEN
        if self.state is BreakerState.HALF_OPEN:
            self._probing += 1
            return True
        return False

    def record(self, now: float, ok: bool, probe: bool = False) -> None:
        """The outcome of a request started with `begin`."""
        if probe:
            self._probing = max(0, self._probing - 1)
            if self.state is BreakerState.HALF_OPEN:
                if ok:
                    self._close()
                else:
                    self._open(now)
                return
        if self.state is not BreakerState.CLOSED:
            return  # a straggler from before the breaker opened
        bucket = self._bucket(now)
        bucket[1] += 1
        if not ok:
            bucket[2] += 1
            requests, failures = self.counts(now)
            s = self.settings
            if requests >= s.min_requests and failures >= s.failure_rate * requests:
                self._open(now)

    def release(self, probe: bool) -> None:
        """A request started with `begin` ended with no verdict (the client left)."""
        if probe:
            self._probing = max(0, self._probing - 1)

    def counts(self, now: float) -> tuple[int, int]:
        """Requests and failures in the window ending now."""
        current = self._number(now)
        requests = failures = 0
        for number, r, f in self._buckets:
            if current - number < BUCKETS:
                requests += r
                failures += f
        return requests, failures

    def _number(self, now: float) -> int:
        return int(now * BUCKETS / self.settings.window_seconds)

    def _bucket(self, now: float) -> list[int]:
        number = self._number(now)
        bucket = self._buckets[number % BUCKETS]
        if bucket[0] != number:
            bucket[0], bucket[1], bucket[2] = number, 0, 0
        return bucket

    def _open(self, now: float) -> None:
        self.state = BreakerState.OPEN
        self.opened_until = now + self.settings.open_seconds
        self._clear()

    def _close(self) -> None:
        self.state = BreakerState.CLOSED
        self._clear()

    def _clear(self) -> None:
        for bucket in self._buckets:
            bucket[0], bucket[1], bucket[2] = -1, 0, 0
