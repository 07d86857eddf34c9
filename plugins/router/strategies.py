"""How the router picks one deployment among those available now.

A strategy sees only the candidates of one priority tier that are usable
right now (not cooling down, breaker not open, under capacity, not yet tried
for this request) and returns one of them. It must be cheap: it runs on
every request. Writing one:

    class FirstListed:
        def choose(self, candidates: Sequence[Candidate]) -> Candidate:
            return candidates[0]

and add it to `STRATEGIES` under the name a model's `strategy:` uses.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Callable, Sequence
from itertools import accumulate
from typing import Protocol

from .state import Candidate

__all__ = [
    "STRATEGIES",
    "LeastInFlight",
    "LowestLatency",
    "LowestPrice",
    "Priority",
    "Strategy",
    "WeightedRandom",
    "make_strategy",
]


class Strategy(Protocol):
    def choose(self, candidates: Sequence[Candidate]) -> Candidate:
        """One of `candidates` (never empty); may use their live state."""
        ...


class WeightedRandom:
    """Each candidate in proportion to its `weight` (the default).

    The cumulative weights of the last list seen are kept, so the usual
    case (the same tier list on every request) is one bisection."""

    __slots__ = ("_cumulative", "_pool", "rng")

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self._pool: Sequence[Candidate] = ()
        self._cumulative: list[float] = []

    def choose(self, candidates: Sequence[Candidate]) -> Candidate:
        if len(candidates) == 1:
            return candidates[0]
        if candidates is not self._pool:
            self._pool = candidates
            self._cumulative = list(accumulate(c.weight for c in candidates))
        cumulative = self._cumulative
        i = bisect_right(cumulative, self.rng.random() * cumulative[-1])
        return candidates[min(i, len(candidates) - 1)]  # min: float rounding at the end


def _least(
    candidates: Sequence[Candidate], rng: random.Random, key: Callable[[Candidate], float]
) -> Candidate:
    """The candidate with the lowest key; ties broken at random so equals share load."""
    best = min(key(c) for c in candidates)
    tied = [c for c in candidates if key(c) == best]
    return tied[0] if len(tied) == 1 else tied[int(rng.random() * len(tied))]


class LeastInFlight:
    """The one with the fewest requests running on this instance."""

    __slots__ = ("rng",)

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def choose(self, candidates: Sequence[Candidate]) -> Candidate:
        return _least(candidates, self.rng, lambda c: c.state.in_flight)


class LowestLatency:
    """The lowest moving average of time to first byte.

    A deployment with no sample yet counts as fastest, so it gets measured.
    With probability `explore` a candidate is picked uniformly instead, so a
    deployment that was slow (or failing) is tried again and can win back
    its traffic once it has recovered."""

    __slots__ = ("explore", "rng")

    def __init__(self, rng: random.Random, explore: float = 0.05) -> None:
        self.rng = rng
        self.explore = explore

    def choose(self, candidates: Sequence[Candidate]) -> Candidate:
        if len(candidates) > 1 and self.rng.random() < self.explore:
            return candidates[int(self.rng.random() * len(candidates))]
        return _least(candidates, self.rng, lambda c: c.state.latency)


class LowestPrice:
    """The cheapest by `Candidate.price`; unpriced deployments come last."""

    __slots__ = ("rng",)

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def choose(self, candidates: Sequence[Candidate]) -> Candidate:
        return _least(candidates, self.rng, lambda c: float("inf") if c.price is None else c.price)


class Priority:
    """The first listed: plain failover in the order of the config."""

    __slots__ = ()

    def choose(self, candidates: Sequence[Candidate]) -> Candidate:
        return min(candidates, key=lambda c: c.index)


STRATEGIES: dict[str, Callable[[random.Random, float], Strategy]] = {
    "weighted": lambda rng, explore: WeightedRandom(rng),
    "least_in_flight": lambda rng, explore: LeastInFlight(rng),
    "lowest_latency": LowestLatency,
    "lowest_price": lambda rng, explore: LowestPrice(rng),
    "priority": lambda rng, explore: Priority(),
}


def make_strategy(name: str, rng: random.Random, explore: float = 0.05) -> Strategy:
    return STRATEGIES[name](rng, explore)
