"""Address checks: allow/deny lists, and auth-failure bans shared by every instance.

A ban is written to the store (under the address's tag, so the count of
failures and the ban are one atomic script) and published on the store's
`abuse:bans` channel; every instance keeps the bans it has heard of in a
local table, so checking an address on the hot path costs no round trip.
An instance that missed a publish (it started later, or its subscription
was reconnecting) still refuses the address at its next auth failure,
which reads the ban from the store.

An operator lifts a ban with `lift_ban` (``DELETE /admin/bans/{address}``):
the ban, its offence count and the address's auth-failure counter go from
the store in one script, and ``lift <subject>`` on the same channel drops it
from every instance's table (and local limiter) as soon as it is heard.
`current_bans` lists the bans in force from the store.
"""

from __future__ import annotations

import math
import time
import weakref
from collections.abc import Callable

import msgspec
import structlog
from aiohttp import web

from lunos_proxy.bounds import Count, Seconds
from lunos_proxy.errors import Forbidden, GatewayError, RateLimited
from lunos_proxy.exchange import Exchange, exchange_of
from lunos_proxy.metrics import Metrics
from lunos_proxy.store import Limit, Store, StoreError

from .addresses import AddressRules, Networks, client_address, subject
from .failover import Failover, local_store
from .metrics import AbuseMetrics

__all__ = [
    "AddressGuardImpl",
    "AuthFailureRules",
    "BanTable",
    "StoreBans",
    "ban_table",
    "current_bans",
    "lift_ban",
    "refuse",
    "too_many",
]

log = structlog.get_logger("lunos.abuse")

CHANNEL = "abuse:bans"
_LIFT = "lift"  # "lift <subject>" on CHANNEL; a ban is "<seconds> <subject>"
_TAG = "addr:"  # bans and auth-failure counts live under the tag "addr:<subject>"
_BAN = "ban"  # the ban's subject under that tag
_COUNTER = "authfail"  # the auth-failure counter's Limit.key
_ADDR = "abuse.addr"  # exchange.extra: the resolved client address
_CHECKED = "abuse.checked"


class AuthFailureRules(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    limit: Count = 10  # failures per window allowed before a ban
    window: Seconds = 300.0
    ban_seconds: Seconds = 60.0  # the first ban; doubled for each repeat offence
    longest_ban_seconds: Seconds = 86_400.0
    memory_seconds: Seconds = 86_400.0  # offences are forgotten this long after the last
    shadow: bool = False


def refuse(
    metrics: Metrics, rule: str, err: GatewayError, shadow: bool, request: web.Request | None = None
) -> None:
    """Count a refusal by `rule`; raise `err` unless the rule runs in shadow mode."""
    metrics.add(AbuseMetrics).abuse_refusals.labels(rule, "shadow" if shadow else "enforced").inc()
    if not shadow:
        if request is not None and err.status == 429:
            exchange_of(request).extra["limit_scope"] = "ban"
        raise err


def too_many(message: str, seconds: float, headers: dict[str, str] | None = None) -> RateLimited:
    wait = max(seconds, 0.001)
    all_headers = dict(headers or {})
    all_headers["Retry-After"] = str(max(1, math.ceil(wait)))
    all_headers["retry-after-ms"] = str(math.ceil(wait * 1000))
    return RateLimited(message, headers=all_headers)


class BanTable:
    """Bans this instance has heard of: address -> monotonic end."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._until: dict[str, float] = {}
        self._clock = clock
        self.listening = False
        self._store: Store | None = None

    async def listen(self, store: Store) -> None:
        """Hear bans (and lifts) published by every instance (once per table)."""
        if not self.listening:
            self._store = store
            await store.subscribe(CHANNEL, self.heard)
            self.listening = True

    # Bans are kept by `subject` (an IPv6 client's /64), whatever address
    # of it is asked about.
    def left(self, address: str) -> float:
        if not self._until:
            return 0.0  # no ban heard of: the usual case, without the address's subject
        banned = subject(address)
        until = self._until.get(banned)
        if until is None:
            return 0.0
        left = until - self._clock()
        if left <= 0:
            del self._until[banned]
        return max(left, 0.0)

    def add(self, address: str, seconds: float) -> None:
        banned = subject(address)
        until = self._clock() + seconds
        if until > self._until.get(banned, 0.0):
            self._until[banned] = until

    def lift(self, address: str) -> None:
        self._until.pop(subject(address), None)

    async def heard(self, message: str) -> None:
        seconds, _, address = message.partition(" ")
        if seconds == _LIFT:
            self.lift(address)
            local = None if self._store is None else local_store(self._store)
            if local is not None:  # what it counted while the store was down
                await local.lift_ban(_TAG + subject(address), _BAN, [_COUNTER])
            return
        try:
            self.add(address, float(seconds))
        except ValueError:
            log.warning("ban_message_bad")


_tables: weakref.WeakKeyDictionary[Store, BanTable] = weakref.WeakKeyDictionary()


def ban_table(store: Store) -> BanTable:
    """The store's ban table: one per store, however often the config reloads."""
    table = _tables.get(store)
    if table is None:
        table = _tables[store] = BanTable()
    return table


async def current_bans(store: Store) -> list[tuple[str, float]]:
    """(subject, seconds left) of every auth-failure ban in force, from the store."""
    return [(b.tag[len(_TAG):], b.seconds_left)
            for b in await store.bans(_TAG) if b.subject == _BAN]


async def lift_ban(store: Store, address: str) -> bool:
    """Lift `address`'s ban (its subject's: an IPv6 client's /64) on every
    instance; True if the store held one. Raises StoreError if it is down."""
    counted = subject(address)
    lifted = await store.lift_ban(_TAG + counted, _BAN, [_COUNTER])
    await store.publish(CHANNEL, f"{_LIFT} {counted}")
    ban_table(store).lift(counted)  # here at once; the others as they hear it
    return lifted


class StoreBans:
    """`lunos_proxy.views.Bans` over the store, published by the abuse plugin."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def current(self) -> list[tuple[str, float]]:
        return await current_bans(self.store)

    async def lift(self, address: str) -> bool:
        return await lift_ban(self.store, address)


class AddressGuardImpl:
    """`lunos_proxy.views.AddressGuard`, registered by the abuse plugin."""

    def __init__(
        self,
        rules: AddressRules,
        failures: AuthFailureRules,
        bans: BanTable,
        failover: Failover,
        metrics: Metrics,
    ) -> None:
        self.rules, self.failures = rules, failures
        self.bans, self.failover, self.metrics = bans, failover, metrics
        self.allow, self.deny = Networks(rules.allow), Networks(rules.deny)
        self.trusted = Networks(rules.trusted_proxies)
        self._listed = bool(self.allow or self.deny)

    def address(self, request: web.Request, exchange: Exchange | None = None) -> str:
        if exchange is None:
            exchange = exchange_of(request)
        if not self.trusted:
            return exchange.client_addr
        addr = exchange.extra.get(_ADDR)
        if isinstance(addr, str):
            return addr
        # Every X-Forwarded-For line, as one list (RFC 9110): a proxy may
        # add its own line after the one the client sent.
        forwarded = ",".join(request.headers.getall("X-Forwarded-For", ())) or None
        addr = client_address(exchange.client_addr, forwarded, self.trusted)
        exchange.client_addr = addr
        exchange.extra[_ADDR] = addr
        return addr

    async def check_address(self, request: web.Request) -> None:
        self.check(request)

    def check(self, request: web.Request) -> None:
        """`check_address`, for a caller in no need of a coroutine (the plugin)."""
        exchange = exchange_of(request)
        extra = exchange.extra
        if _CHECKED in extra:
            return
        extra[_CHECKED] = True
        addr = self.address(request, exchange)
        if self._listed and (
            (self.allow and addr not in self.allow) or (self.deny and addr in self.deny)
        ):
            denied = Forbidden("Requests from this address are not allowed.", code="address_denied")
            refuse(self.metrics, "address", denied, self.rules.shadow)
        left = self.bans.left(addr)
        if left > 0:
            err = too_many("Too many failed authentication attempts; try again later.", left)
            refuse(self.metrics, "ban", err, self.failures.shadow, request)

    async def auth_failed(self, request: web.Request) -> None:
        addr = self.address(request)
        counted = subject(addr)  # an IPv6 client's /64
        rules, tag = self.failures, _TAG + counted
        limit = Limit(_COUNTER, rules.limit, rules.window, 1, rules.shadow)
        verdict, backend = await self.failover.hit(tag, [limit], [_BAN], (), "")
        if verdict.banned > 0:
            self.bans.add(counted, verdict.banned)
            err = too_many("Too many failed authentication attempts; try again later.",
                           verdict.banned)
            refuse(self.metrics, "ban", err, rules.shadow, request)
            return
        if verdict.states[0].admitted:
            return
        if rules.shadow:
            self.metrics.add(AbuseMetrics).abuse_refusals.labels("auth_failures", "shadow").inc()
            return
        args = (rules.ban_seconds, rules.longest_ban_seconds, rules.memory_seconds)
        try:
            seconds = await backend.offend(tag, _BAN, *args)
            shared = self.failover.store
            if backend is shared:  # (the local limiter, while the store is down, tells no one)
                await shared.publish(CHANNEL, f"{seconds!r} {counted}")
        except StoreError:
            seconds = rules.ban_seconds  # the store went away just now: ban here at least
        self.bans.add(counted, seconds)
        self.metrics.add(AbuseMetrics).abuse_bans.inc()
        log.warning("address_banned", client_addr=addr, banned=counted, seconds=seconds)
        refuse(self.metrics, "auth_failures",
               too_many("Too many failed authentication attempts; try again later.", seconds),
               False, request)
