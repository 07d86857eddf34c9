"""GCRA arithmetic for the embedded store; `lua/hit.lua` and `lua/adjust.lua`
do the same sums inside Redis.

A counter is kept as (level, stamp): `level` units were taken at time `stamp`,
and `limit / window` units come back per second. That is GCRA with
``TAT = stamp + level * window / limit``; holding the level in units instead
of an absolute TAT in epoch seconds keeps integer bursts exact in floating
point (an epoch TAT only has ~0.2 µs of resolution, which is a whole unit
for a large token limit).
"""

from __future__ import annotations

import math

from .base import Limit, LimitState

__all__ = ["EPSILON", "drained", "state", "validate", "wait"]

# Units; absorbs rounding when a caller waits exactly `retry_after`.
EPSILON = 1e-9


def validate(limit: Limit) -> None:
    if limit.window <= 0 or limit.limit < 0:
        raise ValueError(f"limit {limit.key!r} needs window > 0 and limit >= 0")


def drained(level: float, stamp: float, limit: Limit, now: float) -> float:
    """The level at `now` of a counter that held `level` at `stamp`."""
    if level <= 0.0:
        return 0.0
    # max(): a clock that steps back (a failover to another Redis) must not refill.
    elapsed = max(0.0, now - stamp)
    return max(0.0, level - elapsed * limit.limit / limit.window)


def wait(level: float, cost: float, limit: Limit) -> float:
    """Seconds until `cost` more units fit under `limit`; 0.0 if they fit now."""
    excess = level + cost - limit.limit
    if excess <= EPSILON * max(1, limit.limit):
        return 0.0
    if limit.limit == 0:
        return limit.window
    return excess * limit.window / limit.limit


def state(level: float, limit: Limit, admitted: bool = True) -> LimitState:
    remaining = max(0, math.floor(limit.limit - level + EPSILON * max(1, limit.limit)))
    reset = level * limit.window / limit.limit if limit.limit > 0 else 0.0
    return LimitState(remaining=remaining, reset=reset, admitted=admitted)
