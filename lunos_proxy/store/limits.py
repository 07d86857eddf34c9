"""Limits: check-and-consume several limits at once, settle, leases, bans.

What the abuse plugin (and the router's per-minute capacity, and the
console's sign-in throttle) needs of a store, in one round trip per call.
A backend implements `Limits` as part of `Store`; the structs here are what
the calls take and answer.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable, Sequence

import msgspec

__all__ = [
    "SLOT_RETRY",
    "BanEntry",
    "Limit",
    "LimitSet",
    "LimitState",
    "Limits",
    "Slot",
    "SlotState",
    "Verdict",
]

# Seconds a call refused by a full concurrency slot is told to wait.
SLOT_RETRY = 1.0


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


class Limits(abc.ABC):
    """Limits, leases and bans; every call one round trip on a networked backend."""

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


# Settlements running behind (`Store.settle_behind`): held so that the loop
# does not drop a task it only knows weakly.
_behind: set[asyncio.Task[None]] = set()

