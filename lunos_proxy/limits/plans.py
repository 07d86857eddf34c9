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

from dataclasses import dataclass, field

import msgspec

from ..store import Limit, Slot

__all__ = ["Charge", "Plan", "ScopeLimits", "Tokens"]

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

    requests_per_second: int | None = None
    requests_per_minute: int | None = None
    requests_per_day: int | None = None
    tokens_per_minute: int | None = None
    tokens_per_day: int | None = None
    concurrent: int | None = None
    concurrent_streams: int | None = None
    shadow: bool = False


class Plan(_Strict):
    key: ScopeLimits = msgspec.field(default_factory=ScopeLimits)
    account: ScopeLimits = msgspec.field(default_factory=ScopeLimits)
    account_model: ScopeLimits = msgspec.field(default_factory=ScopeLimits)
    # Tokens per minute an account flagged as anomalous is held to (when
    # the anomaly rule throttles); None: flag only.
    safe_tokens_per_minute: int | None = None


class Tokens(_Strict):
    """How a request's tokens are reserved before the answer is known."""

    # Reserved for the output when the request names no max_tokens.
    default_max_tokens: int = 4096
    # Prompt estimate: body bytes per token. 1 never under-reserves text
    # (a token is at least a byte); 4 is typical for English.
    bytes_per_token: float = 4.0


@dataclass(slots=True)
class Charge:
    """What one request is checked and charged against, and how to settle it."""

    tag: str
    limits: list[Limit] = field(default_factory=list)
    slots: list[Slot] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)  # "requests" | "tokens", per limit
    reserved: int = 0  # tokens charged to each token limit

    def add_scope(
        self, prefix: str, scope: ScopeLimits, reserve: int, stream: bool, ttl: float
    ) -> None:
        for attr, short, window, kind in _WINDOWS:
            limit = getattr(scope, attr)
            if limit is None:
                continue
            cost = 1 if kind == "requests" else reserve
            self.limits.append(Limit(f"{prefix}{short}", limit, window, cost, scope.shadow))
            self.kinds.append(kind)
        if scope.concurrent is not None:
            self.slots.append(Slot(f"{prefix}conc", scope.concurrent, ttl, scope.shadow))
        if stream and scope.concurrent_streams is not None:
            self.slots.append(Slot(f"{prefix}streams", scope.concurrent_streams, ttl, scope.shadow))

    def settlement(self, used: int, admitted: list[bool]) -> list[Limit]:
        """Charges that turn each token reservation into `used` tokens."""
        delta = used - self.reserved
        if delta == 0:
            return []
        return [
            Limit(lim.key, lim.limit, lim.window, delta)
            for lim, kind, ok in zip(self.limits, self.kinds, admitted, strict=True)
            if kind == "tokens" and ok and lim.cost
        ]
