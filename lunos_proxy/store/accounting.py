"""Accounting: usage counters, spend counters and once-only claims.

What the meter writes after each request (behind, in batches) and what the
admin API and the console read back: per (account, key, model, day) usage
counters, per (subject, period) spend counters the budgets check, and
"do this once" claims (a budget webhook sent by one instance only).

Everything here is bounded: it grows with accounts, keys, models and days,
never with requests. Per-request usage events and the billing ledger are
not the store's: they live in the records database (lunos_proxy/records/).

`UsageCounts` is the five counters of a usage row, and their arithmetic:
the memory store, the meter's ledger and the records writer all sum with it.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Protocol

import msgspec

__all__ = [
    "Accounting",
    "Metered",
    "SpendDelta",
    "UsageCounts",
    "UsageDelta",
    "UsageRow",
]


class UsageDelta(msgspec.Struct, kw_only=True, frozen=True):
    """Usage to add to the counters of (account, key, model, day)."""

    account_id: str
    key_id: str
    model: str
    day: str  # YYYY-MM-DD in the configured billing time zone
    requests: int = 1
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cost_micros: int = 0


class UsageRow(msgspec.Struct, kw_only=True):
    """Summed counters for one (key, model, day) of an account."""

    key_id: str
    model: str
    day: str
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cost_micros: int = 0


class Metered(Protocol):
    """What `UsageCounts.add` reads of a request's or a batch's usage
    (`UsageDelta`, `UsageEvent`)."""

    @property
    def input_tokens(self) -> int: ...

    @property
    def output_tokens(self) -> int: ...

    @property
    def cached_input_tokens(self) -> int: ...

    @property
    def cost_micros(self) -> int: ...


class UsageCounts(msgspec.Struct, array_like=True, gc=False):
    """The five counters of one usage row, summed in place.

    Encoded as an array ``[requests, input, output, cached input, cost]``:
    the memory store's data file has kept its rows this way from the start.
    Holds only ints, so the cycle collector need not track it (gc=False):
    the meter keeps one per (account, key, model, day) waiting to be written."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cost_micros: int = 0

    def add(self, usage: Metered, requests: int = 1) -> None:
        """Count `usage` as `requests` more requests (one, unless a batch's)."""
        self.requests += requests
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens
        self.cached_input_tokens += usage.cached_input_tokens
        self.cost_micros += usage.cost_micros

    def delta(self, account_id: str, key_id: str, model: str, day: str) -> UsageDelta:
        """These counts, to add to the store's row of (account, key, model, day)."""
        return UsageDelta(
            account_id=account_id, key_id=key_id, model=model, day=day, **self._counts()
        )

    def row(self, key_id: str, model: str, day: str) -> UsageRow:
        """These counts as an account's row of (key, model, day)."""
        return UsageRow(key_id=key_id, model=model, day=day, **self._counts())

    def _counts(self) -> dict[str, int]:
        """The five counters by name: UsageDelta and UsageRow name theirs alike."""
        return msgspec.structs.asdict(self)


class SpendDelta(msgspec.Struct, kw_only=True, frozen=True):
    """Micro-units to add to the spend counter of `subject` for `period`.

    `subject` is e.g. "account:<id>" or "key:<id>"; `period` e.g. "d:2026-11-26",
    "m:2026-11", "total" or "credit". The counter expires `ttl` seconds after
    its last change (0: never)."""

    subject: str
    period: str
    micros: int
    ttl: int = 0


class Accounting(abc.ABC):
    """Usage counters, spend counters and once-only claims; every call one
    round trip on a networked backend."""

    # -- usage counters -------------------------------------------------------
    @abc.abstractmethod
    async def add_usage(self, deltas: Sequence[UsageDelta], *, once: str = "") -> None:
        """Add a batch to the counters, all or nothing.

        With `once` (a unique id of this batch), repeating the call (a retry
        after a lost reply) changes nothing: the batch is applied at most once
        (markers last a week). The same holds for `once` on `add_spend`.

        Per-request usage events and the billing ledger are not the store's:
        they grow with every request and live in the records database
        (lunos_proxy/records/)."""

    @abc.abstractmethod
    async def usage(self, account_id: str, first_day: str, last_day: str) -> list[UsageRow]:
        """Counters of an account for days in [first_day, last_day], sorted by
        (day, key_id, model)."""

    @abc.abstractmethod
    async def delete_usage(self, account_id: str) -> int:
        """Erase an account's usage counters; returns how many rows went."""

    # -- spend counters, once-only claims -------------------------------------
    @abc.abstractmethod
    async def add_spend(self, deltas: Sequence[SpendDelta], *, once: str = "") -> None:
        """Add to spend counters (INCRBY semantics, a counter starts at 0), all or
        nothing per subject; each touched counter's expiry is reset to its `ttl`."""

    @abc.abstractmethod
    async def spend(self, subject: str, periods: Sequence[str]) -> list[int]:
        """The counters of `subject` for each of `periods`, in order (0 if absent)."""

    @abc.abstractmethod
    async def spend_counters(self, subject: str) -> dict[str, int]:
        """Every live counter of `subject`, by period (for a data export)."""

    @abc.abstractmethod
    async def delete_spend(self, subject: str) -> int:
        """Erase every counter of `subject`; returns how many live ones went."""

    @abc.abstractmethod
    async def claim(self, name: str, ttl: int) -> bool:
        """True for the first caller (on any instance) to claim `name` within
        `ttl` seconds, False for every later one: "do this once" markers."""
