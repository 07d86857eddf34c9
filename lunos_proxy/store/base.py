"""The state interface: the few operations the plugins need, not a key-value API.

Two implementations pass the same contract suite (tests/store/):
`memory.MemoryStore` (one process, a local data file) and
`redis.RedisStore` (what several proxy instances share).

To write another backend, subclass `Store` and implement every abstract
method with the semantics in its docstring; then run
`tests/store/test_contract.py` against it by adding it to the `store`
fixture's parameters. Backends register by URL scheme in `store/__init__.py`.

Errors talking to the backing service are raised as `StoreError`, nothing
else, so callers can apply their failure policy in one place.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Awaitable, Callable, Sequence

import msgspec

__all__ = [
    "AUDIT_MAX_ENTRIES",
    "AccountRecord",
    "AdminTokenRecord",
    "AuditRecord",
    "BillingRecord",
    "KeyRecord",
    "Limit",
    "LimitState",
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


# Seconds a call refused by a full concurrency slot is told to wait.
SLOT_RETRY = 1.0


class StoreError(Exception):
    """The backing service failed or could not be reached."""


class KeyRecord(msgspec.Struct, kw_only=True):
    """An API key's metadata. The key itself is never stored: only `hash`,
    a keyed hash (HMAC-SHA-256) of it, and a short display `prefix`."""

    id: str
    hash: str
    prefix: str
    account_id: str
    name: str = ""
    created: float = 0.0
    expires: float | None = None
    revoked: bool = False
    allowed_models: list[str] | None = None
    plan: str | None = None
    budget_micros: int | None = None


class AccountRecord(msgspec.Struct, kw_only=True):
    """An account. `name` and `email` hold ciphertext (encrypted at rest);
    `email_index` is a keyed blind index for lookup by email."""

    id: str
    name: str = ""
    email: str = ""
    email_index: str = ""
    plan: str | None = None
    allowed_regions: list[str] | None = None
    allowed_providers: list[str] | None = None
    # Fractions of a budget at which the account holder wants a notice (set
    # in the console); None: the operator's thresholds from the meter's config.
    alert_thresholds: list[float] | None = None
    created: float = 0.0
    updated: float = 0.0


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


class AdminTokenRecord(msgspec.Struct, kw_only=True):
    """An admin API token: like a key, only its keyed `hash` and a `prefix` are kept.
    `scope` is "read", "operator" or "full"."""

    id: str
    hash: str
    prefix: str
    name: str
    scope: str
    created: float


class AuditRecord(msgspec.Struct, kw_only=True):
    """One admin API call: who, what, on which target, when, with what result.
    Content-free: ids and names of actions only, never a body or a secret."""

    id: str
    time: float
    actor: str  # admin token id, "config" for a configured token, "anonymous"
    action: str  # e.g. "accounts.create"
    target: str = ""  # the id acted on (account, key, token), if any
    account_id: str = ""  # the account concerned, if any
    status: int = 0  # the HTTP status answered
    result: str = ""  # "ok" | "denied" | "error"


# The audit log keeps this many newest records; older ones are dropped.
AUDIT_MAX_ENTRIES = 100_000
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


class Limit(msgspec.Struct, frozen=True, gc=False):
    """One limit to check and charge: at most `limit` units per `window` seconds
    under the counter `key`; this request costs `cost` units (0 = only look)."""

    key: str
    limit: int
    window: float
    cost: int = 1
    # Shadow: evaluated and charged as if enforced, but never refuses the call.
    shadow: bool = False


class LimitSet(tuple[Limit, ...]):
    """Limits that differ from every other set of the same `family` in their
    costs only (same keys, limits, windows and shadow flags, in order).

    A plain sequence of limits works everywhere; a store may key what it
    derives from the unchanging parts on `family`, and skip deriving them
    again (the abuse plugin builds its limits this way).
    """

    family: object

    def __new__(cls, limits: Sequence[Limit], family: object) -> LimitSet:
        self = super().__new__(cls, limits)
        self.family = family
        return self


# The verdict's structs are arrays when encoded: the Redis store reads them
# as hit.lua packs them (cmsgpack), without field names. Limits, slots and
# verdicts hold no reference back to themselves, so the cycle collector
# need not track them (gc=False): a limited request makes about twenty.
class LimitState(msgspec.Struct, array_like=True, gc=False):
    remaining: int  # units that could still be taken right now
    reset: float  # seconds until the counter is back to full
    admitted: bool = True  # this limit alone would admit the call's cost


class Slot(msgspec.Struct, frozen=True, gc=False):
    """A concurrency limit: at most `limit` leases held at once under `key`.

    A lease that is not renewed (`Store.renew`) expires `ttl` seconds after
    it was taken or last renewed, so a crashed instance's slots come back."""

    key: str
    limit: int
    ttl: float = 60.0
    shadow: bool = False  # never refuses the call; a lease is taken if there is room


class SlotState(msgspec.Struct, array_like=True, gc=False):
    held: int  # live leases before this call
    admitted: bool  # held < limit


class Verdict(msgspec.Struct, array_like=True, gc=False):
    allowed: bool
    retry_after: float  # seconds; 0.0 when allowed
    states: list[LimitState]  # one per Limit, in order
    banned: float = 0.0  # seconds left on the longest matching ban, 0.0 if none
    slots: list[SlotState] = msgspec.field(default_factory=list)  # one per Slot, in order


class BanEntry(msgspec.Struct, frozen=True):
    """A ban in force: `subject` under `tag`, for `seconds_left` more seconds."""

    tag: str
    subject: str
    seconds_left: float


class Store(abc.ABC):
    """Operations, each one round trip on a networked backend."""

    # -- limits ---------------------------------------------------------------
    @abc.abstractmethod
    async def hit(
        self,
        tag: str,
        limits: Sequence[Limit],
        bans: Sequence[str] = (),
        slots: Sequence[Slot] = (),
        lease: str = "",
    ) -> Verdict:
        """Check and consume every limit and slot atomically, and check bans.

        Algorithm: GCRA. Each counter keeps a theoretical arrival time (TAT);
        one unit takes ``window / limit`` seconds to come back, so a full
        counter admits a burst of ``limit`` units and then ``limit`` per
        ``window``, with no window edge at which a burst can double.

        Admitted only if every limit admits `cost` units and no subject in
        `bans` is banned; then every counter is charged. Otherwise nothing
        is charged and `retry_after` says when the request could pass.
        `tag` groups the counters of one call (a Redis Cluster hash tag):
        every `Limit.key` and ban subject of a call is stored under it.
        Time is the backend's clock (Redis `TIME`), shared by all instances.

        Slots: admitted only if every non-shadow slot holds fewer than
        `limit` live leases; then `lease` (unique per request) is taken in
        every slot (a shadow one only when it has room), expiring after the
        slot's `ttl`. A refusal by a full slot has `retry_after` 1 s.

        Shadow limits and slots never refuse the call: their state says
        whether they would have (`admitted`), and they are charged only
        when the call is admitted and they have room themselves.
        """

    @abc.abstractmethod
    async def settle(
        self, tag: str, charges: Sequence[Limit], slots: Sequence[str] = (), lease: str = ""
    ) -> None:
        """After a response, in one round trip: `adjust` every charge, and
        give back `lease` in every slot named in `slots` (keys of `Slot`)."""

    def settle_behind(
        self,
        tag: str,
        charges: Sequence[Limit],
        slots: Sequence[str],
        lease: str,
        done: Callable[[BaseException | None], None],
    ) -> None:
        """`settle` without waiting for it: `done(error)` is called once it has
        run (`error` is None, or the `StoreError`). Settlements of one process
        reach the store in the order they were made, ahead of its later `hit`s
        where the backend allows (Redis: they share a pipelined connection).

        This default runs `settle` in a task."""
        task = asyncio.get_running_loop().create_task(self.settle(tag, charges, slots, lease))
        _behind.add(task)

        def finished(task: asyncio.Task[None]) -> None:
            _behind.discard(task)
            done(asyncio.CancelledError() if task.cancelled() else task.exception())

        task.add_done_callback(finished)

    @abc.abstractmethod
    async def renew(self, tag: str, slots: Sequence[Slot], lease: str) -> None:
        """Push `lease`'s expiry in every slot to `ttl` seconds from now
        (a long stream keeps its slot); a lease no longer held is not re-taken."""

    @abc.abstractmethod
    async def offend(
        self, tag: str, subject: str, first: float, longest: float, memory: float
    ) -> float:
        """Ban `subject` for an escalating time and return it, in seconds.

        The n-th offence within `memory` seconds of the previous one bans
        for ``min(longest, first * 2 ** (n - 1))``; the count is forgotten
        `memory` seconds after the last offence. Extends, never shortens."""

    @abc.abstractmethod
    async def adjust(self, tag: str, limit: Limit) -> None:
        """Settle a reservation: charge `limit.cost` more units (negative refunds).

        A refund never leaves the counter fuller than full."""

    @abc.abstractmethod
    async def ban(self, tag: str, subject: str, seconds: float) -> None:
        """Ban `subject` for `seconds` (extending, never shortening, a ban)."""

    @abc.abstractmethod
    async def bans(self, tag_prefix: str) -> list[BanEntry]:
        """Every ban in force under a tag that starts with `tag_prefix` (an
        operator's listing: it may walk the keyspace, never on the hot path)."""

    @abc.abstractmethod
    async def lift_ban(self, tag: str, subject: str, counters: Sequence[str] = ()) -> bool:
        """End `subject`'s ban under `tag`, forget its offences (the next ban is
        a first one again) and empty the tag's `counters` (by `Limit.key`), in
        one step. True if a ban was in force."""

    # -- keys -----------------------------------------------------------------
    @abc.abstractmethod
    async def key_by_hash(self, key_hash: str) -> KeyRecord | None: ...

    @abc.abstractmethod
    async def key_by_id(self, key_id: str) -> KeyRecord | None: ...

    @abc.abstractmethod
    async def put_key(self, key: KeyRecord) -> None:
        """Create or replace (by `id`); the hash index follows."""

    @abc.abstractmethod
    async def delete_key(self, key_id: str) -> None: ...

    @abc.abstractmethod
    async def keys_of(self, account_id: str) -> list[KeyRecord]: ...

    # -- accounts -------------------------------------------------------------
    @abc.abstractmethod
    async def account(self, account_id: str) -> AccountRecord | None: ...

    @abc.abstractmethod
    async def account_by_index(self, email_index: str) -> AccountRecord | None: ...

    @abc.abstractmethod
    async def put_account(self, account: AccountRecord) -> None: ...

    @abc.abstractmethod
    async def update_account(self, account: AccountRecord) -> bool:
        """`put_account` for an account that exists: False, and nothing
        written, if it is gone (erased while the caller held its record)."""

    @abc.abstractmethod
    async def delete_account(self, account_id: str) -> None: ...

    @abc.abstractmethod
    async def accounts(self) -> list[AccountRecord]: ...

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

    # -- admin tokens and audit ----------------------------------------------
    @abc.abstractmethod
    async def put_admin_token(self, token: AdminTokenRecord) -> None:
        """Create or replace (by `id`)."""

    @abc.abstractmethod
    async def admin_token_by_hash(self, token_hash: str) -> AdminTokenRecord | None: ...

    @abc.abstractmethod
    async def admin_tokens(self) -> list[AdminTokenRecord]:
        """Every token, sorted by id."""

    @abc.abstractmethod
    async def delete_admin_token(self, token_id: str) -> bool:
        """Remove a token; False if there was none."""

    @abc.abstractmethod
    async def add_audit(self, record: AuditRecord) -> None:
        """Append a record; past `AUDIT_MAX_ENTRIES` the oldest are dropped."""

    @abc.abstractmethod
    async def audit(self, account_id: str | None = None, limit: int = 1000) -> list[AuditRecord]:
        """The newest `limit` records (of `account_id` only, if given), newest first."""

    @abc.abstractmethod
    async def rekey_audit(self, account_id: str, pseudonym: str) -> int:
        """Rewrite records of `account_id` (its `account_id`, and `target` where it
        is the account) to `pseudonym`; returns how many."""

    # -- invalidation ---------------------------------------------------------
    @abc.abstractmethod
    async def publish(self, channel: str, message: str) -> None: ...

    @abc.abstractmethod
    async def subscribe(self, channel: str, callback: Callable[[str], Awaitable[None]]) -> None:
        """Call `callback` with every message published on `channel` by any
        instance (this one included) from now until `close`."""

    # -- lifecycle ------------------------------------------------------------
    @abc.abstractmethod
    async def ping(self) -> None:
        """Return if the backend answers; raise StoreError if not."""

    async def start(self) -> None:  # noqa: B027 - optional hook, not abstract
        """Connect, load scripts, start background tasks."""

    async def close(self) -> None:  # noqa: B027 - optional hook, not abstract
        """Flush what is pending and release connections."""


# Settlements running behind (`Store.settle_behind`): held so that the loop
# does not drop a task it only knows weakly.
_behind: set[asyncio.Task[None]] = set()

