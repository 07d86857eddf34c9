"""The state interface: the few operations the plugins need, not a key-value API.

`Store` is one protocol per concern, each in its own module, plus the
lifecycle (ping, start, close):

    limits.py      `Limits`: check-and-consume several limits at once, settle,
                   leases, bans (the abuse plugin, the router's capacity)
    directory.py   `Directory`: keys, accounts, admin tokens, audit
    accounting.py  `Accounting`: usage counters, spend counters, once-only
                   claims (the meter; read by the admin API and the console)
    bus.py         `Bus`: publish and subscribe across instances, and the
                   router's cooldowns

A caller that needs one concern types its argument with that protocol;
one that needs several takes a `Store`.
Two implementations pass the same contract suites (tests/store/):
`memory.MemoryStore` (one process, a local data file) and
`redis.RedisStore` (what several proxy instances share); each backend
implements the protocols in modules of the same names.

To write another backend, subclass `Store` and implement every abstract
method with the semantics in its docstring; then run the contract suites
in `tests/store/` against it by adding it to the `backend` fixture's
parameters. Backends register by URL scheme in `store/__init__.py`.

Errors talking to the backing service are raised as `StoreError`, nothing
else, so callers can apply their failure policy in one place.

This module also declares the records database's two records,
`UsageEvent` and `BillingRecord`: the store does not keep them (they grow
with every request; lunos_proxy/records/ does), but the meter makes them,
records/ writes them, and the memory store's data file from before the
records database holds them, so they sit here, below all three.
"""

from __future__ import annotations

import abc

import msgspec

from .accounting import (
    Accounting,
    Metered,
    SpendDelta,
    UsageCounts,
    UsageDelta,
    UsageRow,
)
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
    "Accounting",
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
    "Metered",
    "Slot",
    "SlotState",
    "SpendDelta",
    "Store",
    "StoreError",
    "UsageCounts",
    "UsageDelta",
    "UsageEvent",
    "UsageRow",
    "Verdict",
]


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


class UsageEvent(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    """One request's usage: metadata only, never content. Kept in the records
    database (lunos_proxy/records/) for the configured retention (privacy
    policy: usage logs kept for accounting).

    Holds only strings and numbers, so it is never part of a cycle and the
    collector need not track it (gc=False): the meter holds every event
    of the last second or so until it is written."""

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


class Store(Limits, Directory, Accounting, Bus):
    """Every concern together: what a backend implements. Operations are
    each one round trip on a networked backend."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Return if the backend answers; raise StoreError if not."""

    async def start(self) -> None:
        """Connect, load scripts, start background tasks."""

    async def close(self) -> None:
        """Flush what is pending and release connections."""
