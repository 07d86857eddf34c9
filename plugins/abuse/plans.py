"""Named plans and the limits one request is charged against.

A plan sets limits per scope. Every scope's counters of an authenticated
request live under one store tag, the account's, so all of them are checked
and charged by one atomic `Store.hit` (one Lua script, one Cluster slot):

    scope           counters (under tag "acct:<account>")
    key             k:<key id>:<kind>      + slots k:<key id>:conc, k:<key id>:streams
    account         a:<kind>               + slot  a:conc
    account_model   m:<model>:<kind>
    address         ip:<kind> under tag "addr:<address>" (requests with no principal)

Kinds: requests per second / minute / day, tokens per minute / day,
concurrent requests and concurrent streams. Which plan applies is the
principal's (`Principal.plan`: auth resolves a key's own plan over its
account's), else `default_plan`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import msgspec

from lunos_proxy.bounds import Count, PositiveNumber
from lunos_proxy.store import Limit, LimitSet, LimitState, Slot

from .headers import Headers

__all__ = ["Charge", "Plan", "ScopeLimits", "Shape", "Tokens"]

_WINDOWS = (
    ("requests_per_second", "rps", 1.0, "requests"),
    ("requests_per_minute", "rpm", 60.0, "requests"),
    ("requests_per_day", "rpd", 86_400.0, "requests"),
    ("tokens_per_minute", "tpm", 60.0, "tokens"),
    ("tokens_per_day", "tpd", 86_400.0, "tokens"),
)


class _Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class ScopeLimits(_Strict):
    """Limits of one scope; None means unlimited. `shadow`: counted, not enforced."""

    requests_per_second: Count | None = None
    requests_per_minute: Count | None = None
    requests_per_day: Count | None = None
    tokens_per_minute: Count | None = None
    tokens_per_day: Count | None = None
    concurrent: Count | None = None
    concurrent_streams: Count | None = None
    shadow: bool = False


class Plan(_Strict):
    key: ScopeLimits = msgspec.field(default_factory=ScopeLimits)
    account: ScopeLimits = msgspec.field(default_factory=ScopeLimits)
    account_model: ScopeLimits = msgspec.field(default_factory=ScopeLimits)
    # Tokens per minute an account flagged as anomalous is held to (when
    # the anomaly rule throttles); None: flag only.
    safe_tokens_per_minute: Count | None = None


class Tokens(_Strict):
    """How a request's tokens are reserved before the answer is known."""

    # Reserved for the output when the request names no max_tokens.
    default_max_tokens: Count = 4096
    # Prompt estimate: body bytes per token. 1 never under-reserves text
    # (a token is at least a byte); 4 is typical for English.
    bytes_per_token: PositiveNumber = 4.0


class Shape:
    """The limits and slots a plan sets for one kind of request (one key,
    model and stream flag), built once and shared by every such request.

    Only token limits cost differently per request (the reservation):
    `limits(reserve)` gives them that cost, reusing the last tuple when the
    reservation repeats (and `charge` the last Charge, when its tag does
    too). Request limits and slots are the same objects every time, so the
    store can reuse what it derives from them.
    """

    __slots__ = (
        "_charge", "_last", "_reserve", "headers", "kinds", "protos", "shadowed", "slot_keys",
        "slots", "tokens",
    )

    def __init__(self, scopes: Iterable[tuple[str, ScopeLimits, bool]], ttl: float) -> None:
        protos: list[Limit] = []
        kinds: list[str] = []
        slots: list[Slot] = []
        for prefix, scope, stream in scopes:
            for attr, short, window, kind in _WINDOWS:
                limit = getattr(scope, attr)
                if limit is not None:
                    protos.append(Limit(f"{prefix}{short}", limit, window, 1, scope.shadow))
                    kinds.append(kind)
            if scope.concurrent is not None:
                slots.append(Slot(f"{prefix}conc", scope.concurrent, ttl, scope.shadow))
            if stream and scope.concurrent_streams is not None:
                slots.append(
                    Slot(f"{prefix}streams", scope.concurrent_streams, ttl, scope.shadow)
                )
        self.protos = LimitSet(protos, self)
        self.kinds = tuple(kinds)  # "requests" | "tokens", per limit
        self.slots = tuple(slots)
        self.slot_keys = tuple(slot.key for slot in slots)
        self.tokens = tuple(i for i, kind in enumerate(kinds) if kind == "tokens")
        self.headers = Headers(protos, kinds)
        # Any shadow rule: the verdict's per-limit states need a closer look.
        self.shadowed = any(lim.shadow for lim in protos) or any(s.shadow for s in slots)
        self._reserve = 1
        self._last = self.protos
        self._charge: Charge | None = None

    def limits(self, reserve: int) -> LimitSet:
        """Every limit, token limits costing `reserve`."""
        if reserve != self._reserve:
            out = list(self.protos)
            for i in self.tokens:
                p = out[i]
                out[i] = Limit(p.key, p.limit, p.window, reserve, p.shadow)
            self._reserve, self._last = reserve, LimitSet(out, self)
        return self._last

    def charge(self, tag: str, reserve: int) -> Charge:
        last = self._charge
        if last is not None and last.reserved == reserve and last.tag == tag:
            return last
        self._charge = last = Charge(tag, self.limits(reserve), self.slots, self.kinds, reserve,
                                     self.tokens, self.shadowed, self.headers, self.slot_keys)
        return last


_NO_HEADERS = Headers((), ())


@dataclass(slots=True, frozen=True)
class Charge:
    """What one request is checked and charged against, and how to settle it
    (the same object for requests alike: `Shape.charge`)."""

    tag: str
    limits: Sequence[Limit] = ()
    slots: Sequence[Slot] = ()
    kinds: Sequence[str] = ()  # "requests" | "tokens", per limit
    reserved: int = 0  # tokens charged to each token limit
    tokens: Sequence[int] = ()  # indices of the token limits
    shadowed: bool = False  # some limit or slot is a shadow rule
    headers: Headers = _NO_HEADERS  # Headers(limits, kinds)
    slot_keys: Sequence[str] = ()  # the keys of `slots`

    def settlement(self, used: int, states: Sequence[LimitState]) -> list[Limit]:
        """Charges that turn each token reservation into `used` tokens (of
        the token limits that took it: admitted, with a cost)."""
        delta = used - self.reserved
        if delta == 0:
            return []
        limits, charges = self.limits, []
        for i in self.tokens:
            lim = limits[i]
            if lim.cost and states[i].admitted:
                charges.append(Limit(lim.key, lim.limit, lim.window, delta))
        return charges
