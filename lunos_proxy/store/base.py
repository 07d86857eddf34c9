"""The state interface: the few operations the plugins need, not a key-value API.

`Store` is one protocol per concern, each in its own module:

    limits.py     `Limits`: check-and-consume several limits at once, settle,
                  leases, bans (the abuse plugin)
    directory.py  `Directory`: keys, accounts, admin tokens, audit
    bus.py        `Bus`: publish and subscribe across instances
    base.py       the accounting (usage counters, billing, spend, usage
                  events, once-only claims), cooldowns, and `Store` itself

A caller that needs one concern types its argument with that protocol.
Two implementations pass the same contract suites (tests/store/):
`memory.MemoryStore` (one process, a local data file) and
`redis.RedisStore` (what several proxy instances share).

To write another backend, subclass `Store` and implement every abstract
method with the semantics in its docstring; then run
`tests/store/test_contract.py` against it by adding it to the `store`
fixture's parameters. Backends register by URL scheme in `store/__init__.py`.

Errors talking to the backing service are raised as `StoreError`, nothing
else, so callers can apply their failure policy in one place.

The accounting part stays here until per-request usage events and the
billing ledger move out of the store into their own records database; it
then becomes accounting.py beside the others.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import msgspec

from .bus import Bus
from .directory import (
    AUDIT_MAX_ENTRIES,
    AccountRecord,
    AdminTokenRecord,
    AuditRecord,
    Directory,
    KeyRecord,
)
from .errors import StoreError
from .limits import (
    SLOT_RETRY,
    BanEntry,
    Limit,
    Limits,
    LimitSet,
    LimitState,
    Slot,
    SlotState,
    Verdict,
)

__all__ = [
    "AUDIT_MAX_ENTRIES",
    "SLOT_RETRY",
    "AccountRecord",
    "AdminTokenRecord",
    "AuditRecord",
    "BanEntry",
    "BillingRecord",
    "Bus",
    "Directory",
    "KeyRecord",
    "Limit",
    "LimitSet",
    "LimitState",
    "Limits",
    "Slot",
    "SlotState",
    "SpendDelta",
    "Store",
    "StoreError",
    "UsageDelta",
    "UsageEvent",
    "UsageRow",
    "Verdict",
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


class BillingRecord(msgspec.Struct, kw_only=True):
    """A line of the billing ledger (lunos_proxy/records/), kept for accounting
    after account deletion (then re-keyed to a pseudonym)."""

    id: str
    account_id: str
    period: str  # YYYY-MM-DD or YYYY-MM
    model: str
    requests: int
    input_tokens: int
    output_tokens: int
    cost_micros: int
    created: float


class SpendDelta(msgspec.Struct, kw_only=True, frozen=True):
    """Micro-units to add to the spend counter of `subject` for `period`.

    `subject` is e.g. "account:<id>" or "key:<id>"; `period` e.g. "d:2026-11-26",
    "m:2026-11", "total" or "credit". The counter expires `ttl` seconds after
    its last change (0: never)."""

    subject: str
    period: str
    micros: int
    ttl: int = 0


class UsageEvent(msgspec.Struct, kw_only=True, frozen=True):
    """One request's usage: metadata only, never content. Kept in the records
    database (lunos_proxy/records/) for the configured retention (privacy
    policy: usage logs kept for accounting)."""

    request_id: str
    account_id: str
    key_id: str
    model: str
    provider: str = ""
    time: float  # epoch seconds, when the request was received
    day: str  # YYYY-MM-DD in the billing time zone
    status: int = 0
    stream: bool = False
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_creation_tokens: int = 0
    reasoning_tokens: int = 0
    cost_micros: int = 0
    usage_source: str = "none"  # reported | estimated | none
    # The API route that served it ("chat/completions", "messages", ...):
    # one of the gateway's own routes, never a path the client sent.
    endpoint: str = ""
    # Milliseconds from the request's arrival to the answer's last byte, as
    # the gateway measured it. Events written before version 2 of the
    # records schema have neither: "" and 0.
    latency_ms: int = 0


class Store(Limits, Directory, Bus):
    """Every concern together: what a backend implements. Operations are
    each one round trip on a networked backend."""

    # -- usage and billing ----------------------------------------------------
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

    # -- routing --------------------------------------------------------------
    @abc.abstractmethod
    async def cool_down(self, subject: str, seconds: float) -> float:
        """Put `subject` (a deployment id) in cooldown for `seconds`, extending,
        never shortening, one already running. Returns the seconds now left
        (on the backend's clock, shared by all instances)."""

    @abc.abstractmethod
    async def cooldowns(self) -> dict[str, float]:
        """Every subject cooling down now, with its seconds left; ended ones
        are forgotten."""

    # -- metering: spend counters, once-only claims ---------------------------
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

    # -- lifecycle ------------------------------------------------------------
    @abc.abstractmethod
    async def ping(self) -> None:
        """Return if the backend answers; raise StoreError if not."""

    async def start(self) -> None:
        """Connect, load scripts, start background tasks."""

    async def close(self) -> None:
        """Flush what is pending and release connections."""
