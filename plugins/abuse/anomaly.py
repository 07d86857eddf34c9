"""Flag an account whose token rate jumps far above its own recent baseline.

Per account and per process, tokens are summed in one-minute buckets; the
baseline is an exponentially weighted moving average (EWMA) of past
buckets. An account is flagged for `flag_minutes` when its current bucket
exceeds `factor` times its baseline and at least `min_tokens_per_minute`
(so a quiet account's first real use is not an anomaly), once it has
`warmup_minutes` of history. Behind a load balancer each instance sees the
same share of an account's traffic, so the ratio holds per instance without
a store round trip.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec

from lunos_proxy.bounds import Count, PositiveNumber, Share

__all__ = ["AnomalyDetector", "AnomalyRules"]

_BUCKET = 60.0
_MAX_ACCOUNTS = 100_000


class AnomalyRules(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = True
    factor: PositiveNumber = 10.0
    min_tokens_per_minute: Count = 10_000
    # Weight of the newest minute in the baseline (0.05: ~20-minute memory).
    alpha: Share = 0.05
    warmup_minutes: Count = 5
    flag_minutes: PositiveNumber = 10.0
    # Hold a flagged account to its plan's safe_tokens_per_minute.
    throttle: bool = False
    shadow: bool = False  # throttling counted, not enforced


class _Account:
    __slots__ = ("baseline", "bucket_start", "flagged_until", "minutes", "tokens")

    def __init__(self, now: float) -> None:
        self.bucket_start = now
        self.tokens = 0
        self.baseline = 0.0
        self.minutes = 0
        self.flagged_until = 0.0


class AnomalyDetector:
    def __init__(self, rules: AnomalyRules, clock: Callable[[], float] = time.monotonic) -> None:
        self.rules = rules
        self._clock = clock
        self._accounts: dict[str, _Account] = {}

    def flagged(self, account: str) -> bool:
        a = self._accounts.get(account)
        return a is not None and a.flagged_until > self._clock()

    def observe(self, account: str, tokens: int) -> bool:
        """Add an answer's tokens; True when this call newly flags the account."""
        now = self._clock()
        a = self._accounts.get(account)
        if a is None:
            if len(self._accounts) >= _MAX_ACCOUNTS:
                self._forget(now)
            a = self._accounts[account] = _Account(now)
        if now - a.bucket_start >= _BUCKET:
            self._roll(a, now)
        a.tokens += tokens
        r = self.rules
        if (
            a.minutes >= r.warmup_minutes
            and a.tokens >= r.min_tokens_per_minute
            and a.tokens > r.factor * a.baseline
            and a.flagged_until <= now
        ):
            a.flagged_until = now + r.flag_minutes * 60.0
            return True
        return False

    def _roll(self, a: _Account, now: float) -> None:
        elapsed = int((now - a.bucket_start) // _BUCKET)
        if elapsed <= 0:
            return
        alpha = self.rules.alpha
        # The finished bucket, then one empty minute per further minute passed.
        a.baseline = alpha * a.tokens + (1 - alpha) * a.baseline if a.minutes else float(a.tokens)
        a.baseline *= (1 - alpha) ** min(elapsed - 1, 10_000)
        a.minutes += elapsed
        a.tokens = 0
        a.bucket_start += elapsed * _BUCKET

    def _forget(self, now: float) -> None:
        idle = [k for k, a in self._accounts.items() if now - a.bucket_start > 3600.0]
        for k in idle or list(self._accounts)[: _MAX_ACCOUNTS // 10]:
            del self._accounts[k]
