"""Rate limits, concurrency, size limits, bans and anomaly flags.

Before forwarding, every limit that applies to the request (key, account,
account x model; or the client address when there is no principal) is
checked and charged in ONE store call (`Store.hit`: one Lua script on
Redis). Tokens are reserved (prompt estimate + max_tokens) and settled
with the real usage after the response, in one more call that also gives
back the concurrency leases. See docs/operators.md, "Rate limits", for the
algorithm and the worst-case overshoot.

One module past 400 lines: checking, judging and settling one request's
limits share its charge and its lease; the parts with a life of their own
are plans.py, guard.py, failover.py, anomaly.py and headers.py.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import time
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import msgspec
import structlog
from aiohttp import web

from lunos_proxy.bounds import MAX_SECONDS, Count, Seconds, Share
from lunos_proxy.errors import BadRequest, BodyTooLarge
from lunos_proxy.exchange import Exchange, exchange_of
from lunos_proxy.parse import read_request
from lunos_proxy.plugin import Handler, Plugin, Services
from lunos_proxy.store import Slot, StoreError, Verdict
from lunos_proxy.store.limits import Limits
from lunos_proxy.views import ADDRESS_GUARD, BANS

from .addresses import AddressRules, subject
from .anomaly import AnomalyDetector, AnomalyRules
from .failover import Failover, failover_for
from .guard import (
    AddressGuardImpl,
    AuthFailureRules,
    StoreBans,
    ban_table,
    refuse,
    too_many,
)
from .headers import rate_limit_headers
from .metrics import AbuseMetrics
from .plans import Charge, Plan, ScopeLimits, Shape, Tokens

__all__ = ["Abuse"]

log = structlog.get_logger("lunos.abuse")

# Shapes (limits of one key, model and stream flag) kept before starting over.
_SHAPES = 10_000

# Counter key prefix of the anomaly's safe rate (a flagged account, held a while).
_SAFE_RATE = "a:safe:"

# The bans a request with no principal is checked against (its address's).
_ADDRESS_BANS = ("ban",)

# Endpoints whose answer has no output tokens to reserve.
_NO_OUTPUT = frozenset({"embeddings", "messages/count_tokens", "models"})


class Sizes(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    max_body_bytes: Count | None = None  # below server.max_body_bytes, for API requests
    max_headers: Count | None = 100
    max_header_bytes: Count | None = 32_768  # names and values of all headers
    max_messages: Count | None = None  # entries of `messages`
    shadow: bool = False


class _Messages(msgspec.Struct):
    messages: list[msgspec.Raw] | None = None


_decode_messages = msgspec.json.Decoder(_Messages).decode


class Abuse(Plugin):
    name = "abuse"

    class Settings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
        plans: dict[str, Plan] = msgspec.field(default_factory=dict)
        default_plan: str | None = None  # for principals with no (known) plan
        address: ScopeLimits = msgspec.field(default_factory=ScopeLimits)  # no principal
        tokens: Tokens = msgspec.field(default_factory=Tokens)
        # A concurrency lease not renewed for this long is freed (crashed instance).
        concurrency_ttl: Annotated[float, msgspec.Meta(ge=3, le=MAX_SECONDS)] = 60.0
        auth_failures: AuthFailureRules = msgspec.field(default_factory=AuthFailureRules)
        addresses: AddressRules = msgspec.field(default_factory=AddressRules)
        sizes: Sizes = msgspec.field(default_factory=Sizes)
        anomaly: AnomalyRules = msgspec.field(default_factory=AnomalyRules)
        # While the store is unreachable; None: the store section's on_failure.
        on_store_failure: Literal["fail_open", "fail_closed"] | None = None
        local_share: Share = 1.0  # of each limit, per process, when failing open
        retry_store_after: Seconds = 1.0  # seconds between tries while it is down

        def __post_init__(self) -> None:
            if self.default_plan is not None and self.default_plan not in self.plans:
                raise ValueError(f"default_plan {self.default_plan!r} is not in plans")

    settings: Settings

    def __init__(self, settings: Settings, services: Services) -> None:
        super().__init__(settings, services)
        s, store, metrics = settings, services.store, services.metrics
        self.metrics = metrics.add(AbuseMetrics)
        self.failover = failover_for(store, metrics)
        self.bans = ban_table(store)
        self.guard = AddressGuardImpl(s.addresses, s.auth_failures, self.bans, self.failover,
                                      metrics)
        self.anomaly = AnomalyDetector(s.anomaly)
        self._watching = s.anomaly.enabled
        self._throttling = s.anomaly.enabled and s.anomaly.throttle
        self.leases = _Leases(self.failover, s.concurrency_ttl / 3)
        self._shapes: dict[tuple[Any, ...], Shape] = {}
        # Lease ids: unique to this process (random prefix), then counted.
        self._lease_prefix = os.urandom(6).hex() + "-"
        self._leases_taken = itertools.count()
        services.views[ADDRESS_GUARD] = self.guard
        services.views[BANS] = StoreBans(services.store)

    async def start(self) -> None:
        s = self.settings
        policy = s.on_store_failure or self.services.config.store.on_failure
        self.failover.configure(policy, s.local_share, s.retry_store_after)
        try:
            await self.bans.listen(self.services.store)
        except StoreError:
            log.warning("ban_listen_failed")

    async def stop(self) -> None:
        await self.leases.close()

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.guard.check(request)
        sizes = self.settings.sizes
        exchange = exchange_of(request)
        self._check_headers(request)
        if sizes.max_body_bytes is not None and not sizes.shadow:
            exchange.body_limit = min(exchange.body_limit, sizes.max_body_bytes)
        try:
            exchange = await read_request(request)
        except BodyTooLarge:
            self.metrics.abuse_refusals.labels("size", "enforced").inc()
            raise
        self._check_body(exchange)
        charge, bans = self._charge(exchange, request)
        if not charge.limits and not charge.slots:
            # Nothing to count: bans were checked from the local table above,
            # and need no round trip of their own.
            response = await handler(request)
            self._observe(exchange, _used(exchange, charge.reserved))
            return response
        lease = f"{self._lease_prefix}{next(self._leases_taken)}" if charge.slots else ""
        try:
            verdict, backend = await self.failover.hit(
                charge.tag, charge.limits, bans, charge.slots, lease
            )
        except asyncio.CancelledError:
            # The client went away while the script was on its way: it may
            # still take the lease, so give it back behind it (on the same
            # connection, so after it). A reservation it took stays charged
            # and drains with its window: never more admitted than allowed.
            if lease:
                self.failover.settle_behind(self.failover.store, charge.tag, [], charge.slot_keys,
                                            lease)
            raise
        self._judge(exchange, charge, verdict, backend)
        if lease:
            self.leases.hold(lease, backend, charge.tag, charge.slots)
        try:
            return await handler(request)
        finally:
            # On every way out (a client that went away cancels the handler):
            # the settlement is sent before this returns, and not waited for.
            if lease:
                self.leases.drop(lease)
            self._settle(exchange, charge, verdict, backend, lease)

    # -- before ---------------------------------------------------------------
    def _check_headers(self, request: web.Request) -> None:
        sizes = self.settings.sizes
        headers = request.raw_headers
        if sizes.max_headers is not None and len(headers) > sizes.max_headers:
            err = BadRequest(f"Too many request headers (limit {sizes.max_headers}).",
                             code="too_many_headers")
            refuse(self.services.metrics, "size", err, sizes.shadow)
        if sizes.max_header_bytes is not None:
            size = 0
            for name, value in headers:  # (a loop costs less than sum() of a generator)
                size += len(name) + len(value)
            if size > sizes.max_header_bytes:
                err = BadRequest(f"Request headers exceed {sizes.max_header_bytes} bytes.",
                                 code="headers_too_large")
                refuse(self.services.metrics, "size", err, sizes.shadow)

    def _check_body(self, exchange: Exchange) -> None:
        sizes, metrics = self.settings.sizes, self.services.metrics
        if sizes.max_body_bytes is not None and exchange.bytes_in > sizes.max_body_bytes:
            limit = sizes.max_body_bytes
            err = BodyTooLarge(f"Request body is larger than the limit of {limit} bytes.")
            refuse(metrics, "size", err, sizes.shadow)
        if sizes.max_messages is not None and exchange.body:
            try:
                messages = _decode_messages(exchange.body).messages
            except msgspec.MsgspecError:
                messages = None  # not a list: the provider will say what is wrong
            if messages is not None and len(messages) > sizes.max_messages:
                too_many_messages = BadRequest(f"Too many messages (limit {sizes.max_messages}).",
                                 param="messages", code="too_many_messages")
                refuse(metrics, "size", too_many_messages, sizes.shadow)

    def _reserve(self, exchange: Exchange) -> int:
        if exchange.endpoint == "models":
            return 0
        t = self.settings.tokens
        prompt = math.ceil(exchange.bytes_in / t.bytes_per_token)
        if exchange.endpoint in _NO_OUTPUT:
            return prompt
        return prompt + (exchange.max_tokens or t.default_max_tokens)

    def _charge(self, exchange: Exchange, request: web.Request) -> tuple[Charge, Sequence[str]]:
        s = self.settings
        reserve = self._reserve(exchange)
        principal = exchange.principal
        if principal is None:
            tag = f"addr:{subject(self.guard.address(request))}"  # an IPv6 client's /64
            # (None, stream): no plan is named None, so no principal's shape is this
            return self._shape((None, exchange.stream)).charge(tag, reserve), _ADDRESS_BANS
        tag = f"acct:{principal.account_id}"
        name = principal.plan if principal.plan in s.plans else s.default_plan
        if name is None:
            return Charge(tag, reserved=reserve), ()
        model = exchange.public_model(self.services.config) or "unknown"  # never a client's
        throttled = bool(
            self._throttling and s.plans[name].safe_tokens_per_minute
            and self.anomaly.flagged(principal.account_id)
        )
        key = (name, principal.key_id, model, exchange.stream, throttled)
        shape = self._shapes.get(key) or self._shape(key)
        return shape.charge(tag, reserve), ()

    def _shape(self, shape: tuple[Any, ...]) -> Shape:
        """The limits of one kind of request, built on first use."""
        found = self._shapes.get(shape)
        if found is not None:
            return found
        s = self.settings
        if shape[0] is None:  # a request with no principal: the address scope
            scopes = [("ip:", s.address, shape[1])]
        else:
            name, key_id, model, stream, throttled = shape
            plan = s.plans[name]
            scopes = [
                (f"k:{key_id}:", plan.key, stream),
                ("a:", plan.account, stream),
                (f"m:{model}:", plan.account_model, False),
            ]
            if throttled:
                safe = ScopeLimits(tokens_per_minute=plan.safe_tokens_per_minute,
                                   shadow=s.anomaly.shadow)
                scopes.append((_SAFE_RATE, safe, False))
        if len(self._shapes) >= _SHAPES:
            self._shapes.clear()  # keys and models beyond the bound: start over
        found = self._shapes[shape] = Shape(scopes, s.concurrency_ttl)
        return found

    def _judge(self, exchange: Exchange, charge: Charge, verdict: Verdict, backend: Limits) -> None:
        """Headers for every response, shadow counts, and the refusal if any."""
        exchange.token_estimate = charge.reserved
        if backend is self.failover.local:  # the limits as the local limiter applied them
            rate_limit_headers(exchange.wire, self.failover.scaled(charge.limits), charge.kinds,
                               verdict.states, exchange.response_headers)
        else:
            charge.headers.write(exchange.wire, verdict.states, exchange.response_headers)
        if verdict.allowed and not charge.shadowed:
            return  # every rule enforced and every one admitted: nothing to count
        refused_by, scope = "", ""
        for lim, kind, st in zip(charge.limits, charge.kinds, verdict.states, strict=True):
            if not st.admitted:
                rule = "anomaly" if lim.key.startswith(_SAFE_RATE) else kind
                if lim.shadow:
                    self.metrics.abuse_refusals.labels(rule, "shadow").inc()
                elif not refused_by:
                    refused_by, scope = rule, _SCOPES[lim.key.partition(":")[0]]
        for slot, sst in zip(charge.slots, verdict.slots, strict=True):
            if not sst.admitted:
                rule = "streams" if slot.key.endswith("streams") else "concurrency"
                if slot.shadow:
                    self.metrics.abuse_refusals.labels(rule, "shadow").inc()
                elif not refused_by:
                    refused_by, scope = rule, "concurrency"
        if verdict.allowed:
            return
        if verdict.banned > 0:
            self.bans.add(exchange.client_addr, verdict.banned)
            refused_by, scope = "ban", "ban"
        exchange.extra["limit_scope"] = scope or "other"
        self.metrics.abuse_refusals.labels(refused_by or "requests", "enforced").inc()
        for lim, st in zip(charge.limits, verdict.states, strict=True):
            # A request larger than a whole token limit never fits: a 429
            # would have the client retry forever. (Not the anomaly's safe
            # rate: it holds an account only for a while.)
            if (not st.admitted and not lim.shadow and lim.cost > lim.limit
                    and not lim.key.startswith(_SAFE_RATE)):
                per = "day" if lim.window >= 86_400 else "minute"
                raise BadRequest(
                    f"Request too large: it needs {lim.cost} tokens, more than the limit "
                    f"of {lim.limit} tokens per {per}. Lower max_tokens or shorten the input.",
                    param="max_tokens",
                    code="request_too_large",
                )
        raise too_many(_MESSAGES.get(refused_by, _MESSAGES["requests"]), verdict.retry_after,
                       exchange.response_headers)

    # -- after ----------------------------------------------------------------
    def _settle(
        self, exchange: Exchange, charge: Charge, verdict: Verdict, backend: Limits, lease: str
    ) -> None:
        used = _used(exchange, charge.reserved)
        charges = charge.settlement(used, verdict.states)
        if charges or charge.slots:
            self.failover.settle_behind(backend, charge.tag, charges, charge.slot_keys, lease)
        self._observe(exchange, used)

    def _observe(self, exchange: Exchange, used: int) -> None:
        principal = exchange.principal
        if principal is not None and used and self._watching:
            if self.anomaly.observe(principal.account_id, used):
                self.metrics.abuse_anomalies.inc()
                log.warning("anomaly_flagged", account_id=principal.account_id)


def _used(exchange: Exchange, reserved: int) -> int:
    """The tokens a finished request is charged: its usage, else its reservation."""
    usage = exchange.usage
    if usage.source != "none":
        return usage.input_tokens + usage.output_tokens
    if not exchange.timings.upstream_start:
        return 0  # never reached a provider
    return reserved  # no usage known: the reservation stands


# Counter key prefix -> the scope lunos_limit_refusals counts it under.
_SCOPES = {"k": "key", "a": "account", "m": "model", "ip": "address"}

_MESSAGES = {
    "requests": "Rate limit reached for requests. Please retry after the time in Retry-After.",
    "tokens": "Rate limit reached for tokens. Please retry after the time in Retry-After.",
    "anomaly": "Token rate held to a safe level after unusual usage; please retry later.",
    "concurrency": "Too many concurrent requests. Please retry after the time in Retry-After.",
    "streams": "Too many concurrent streams. Please retry after the time in Retry-After.",
    "ban": "Too many failed authentication attempts; try again later.",
}


class _Leases:
    """The concurrency leases of this process's requests in flight, kept alive together.

    One timer for all: every `every` seconds, each lease held since the
    previous tick or longer is renewed (one store call per lease). A lease
    is renewed within 2 x `every` of being taken or last renewed; `every`
    is a third of the lease's ttl, so a long request keeps its slot while a
    crashed instance's slots still come back.
    """

    __slots__ = ("_every", "_failover", "_held", "_tasks", "_timer")

    def __init__(self, failover: Failover, every: float) -> None:
        self._failover, self._every = failover, every
        self._held: dict[str, tuple[Limits, str, Sequence[Slot], float]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def hold(self, lease: str, backend: Limits, tag: str, slots: Sequence[Slot]) -> None:
        # time.monotonic, not the loop's clock: on Python 3.11 finding the
        # running loop is a getpid() system call, here once per request.
        self._held[lease] = (backend, tag, slots, time.monotonic())
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._every, self._tick)

    def drop(self, lease: str) -> None:
        self._held.pop(lease, None)

    def _tick(self) -> None:
        self._timer = None
        if not self._held:
            return  # the next hold starts the timer again
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        for lease, (backend, tag, slots, since) in list(self._held.items()):
            if since <= now - self._every:
                self._held[lease] = (backend, tag, slots, now)
                task = loop.create_task(self._failover.renew(backend, tag, slots, lease))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        self._timer = loop.call_later(self._every, self._tick)

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
