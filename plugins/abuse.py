"""Rate limits, concurrency, size limits, bans and anomaly flags.

Before forwarding, every limit that applies to the request (key, account,
account x model; or the client address when there is no principal) is
checked and charged in ONE store call (`Store.hit`: one Lua script on
Redis). Tokens are reserved (prompt estimate + max_tokens) and settled
with the real usage after the response, in one more call that also gives
back the concurrency leases. See the README section "Rate limits" for the
algorithm and the worst-case overshoot.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from typing import Literal

import msgspec
from aiohttp import web

from lunos_proxy.abuse_hooks import ADDRESS_GUARD
from lunos_proxy.errors import BadRequest, BodyTooLarge
from lunos_proxy.exchange import Exchange, exchange_of
from lunos_proxy.limits.addresses import AddressRules
from lunos_proxy.limits.anomaly import AnomalyDetector, AnomalyRules
from lunos_proxy.limits.failover import failover_for
from lunos_proxy.limits.guard import (
    AddressGuardImpl,
    AuthFailureRules,
    ban_table,
    refuse,
    too_many,
)
from lunos_proxy.limits.headers import rate_limit_headers
from lunos_proxy.limits.plans import Charge, Plan, ScopeLimits, Tokens
from lunos_proxy.parse import read_request
from lunos_proxy.plugin import Handler, Plugin, Services
from lunos_proxy.store import Slot, Store, StoreError, Verdict

__all__ = ["Abuse"]

log = logging.getLogger("lunos.abuse")

# Endpoints whose answer has no output tokens to reserve.
_NO_OUTPUT = frozenset({"embeddings", "messages/count_tokens", "models"})


class Sizes(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    max_body_bytes: int | None = None  # below server.max_body_bytes, for API requests
    max_headers: int | None = 100
    max_header_bytes: int | None = 32_768  # names and values of all headers
    max_messages: int | None = None  # entries of `messages`
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
        concurrency_ttl: float = 60.0
        auth_failures: AuthFailureRules = msgspec.field(default_factory=AuthFailureRules)
        addresses: AddressRules = msgspec.field(default_factory=AddressRules)
        sizes: Sizes = msgspec.field(default_factory=Sizes)
        anomaly: AnomalyRules = msgspec.field(default_factory=AnomalyRules)
        # While the store is unreachable; None: the store section's on_failure.
        on_store_failure: Literal["fail_open", "fail_closed"] | None = None
        local_share: float = 1.0  # of each limit, per process, when failing open
        retry_store_after: float = 1.0  # seconds between tries while it is down

        def __post_init__(self) -> None:
            if self.default_plan is not None and self.default_plan not in self.plans:
                raise ValueError(f"default_plan {self.default_plan!r} is not in plans")
            if not 0 < self.local_share <= 1:
                raise ValueError("local_share must be in (0, 1]")
            if self.concurrency_ttl < 3:
                raise ValueError("concurrency_ttl must be at least 3 seconds")
            if self.tokens.bytes_per_token <= 0:
                raise ValueError("tokens.bytes_per_token must be greater than 0")

    settings: Settings

    def __init__(self, settings: Settings, services: Services) -> None:
        super().__init__(settings, services)
        s, store, metrics = settings, services.store, services.metrics
        self.failover = failover_for(store, metrics)
        self.bans = ban_table(store)
        self.guard = AddressGuardImpl(s.addresses, s.auth_failures, self.bans, self.failover,
                                      metrics)
        self.anomaly = AnomalyDetector(s.anomaly)
        self._tasks: set[asyncio.Task[None]] = set()
        services.shared[ADDRESS_GUARD] = self.guard

    async def start(self) -> None:
        s = self.settings
        policy = s.on_store_failure or self.services.config.store.on_failure
        self.failover.configure(policy, s.local_share, s.retry_store_after)
        try:
            await self.bans.listen(self.services.store)
        except StoreError:
            log.warning("cannot hear bans from other instances yet",
                        extra={"event": "ban_listen_failed"})

    async def stop(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        await self.guard.check_address(request)
        sizes = self.settings.sizes
        exchange = exchange_of(request)
        self._check_headers(request)
        if sizes.max_body_bytes is not None and not sizes.shadow:
            exchange.body_limit = min(exchange.body_limit, sizes.max_body_bytes)
        try:
            exchange = await read_request(request)
        except BodyTooLarge:
            self.services.metrics.abuse_refusals.labels("size", "enforced").inc()
            raise
        self._check_body(exchange)
        charge, bans = self._charge(exchange, request)
        if not charge.limits and not charge.slots:
            # Nothing to count: bans were checked from the local table above,
            # and need no round trip of their own.
            response = await handler(request)
            self._observe(exchange, _used(exchange, charge.reserved))
            return response
        lease = os.urandom(9).hex() if charge.slots else ""
        verdict, backend = await self.failover.hit(
            charge.tag, charge.limits, bans, charge.slots, lease
        )
        self._judge(exchange, charge, verdict, backend)
        renewal = _Renewal(self, backend, charge.tag, charge.slots, lease)
        try:
            return await handler(request)
        finally:
            renewal.cancel()
            settle = asyncio.get_running_loop().create_task(
                self._settle(exchange, charge, verdict, backend, lease)
            )
            self._tasks.add(settle)
            settle.add_done_callback(self._tasks.discard)
            # Shielded: a client that went away must still get its slot given back.
            await asyncio.shield(settle)

    # -- before ---------------------------------------------------------------
    def _check_headers(self, request: web.Request) -> None:
        sizes = self.settings.sizes
        headers = request.raw_headers
        if sizes.max_headers is not None and len(headers) > sizes.max_headers:
            err = BadRequest(f"Too many request headers (limit {sizes.max_headers}).",
                             code="too_many_headers")
            refuse(self.services.metrics, "size", err, sizes.shadow)
        if sizes.max_header_bytes is not None:
            size = sum(len(k) + len(v) for k, v in headers)
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

    def _charge(self, exchange: Exchange, request: web.Request) -> tuple[Charge, list[str]]:
        s, ttl = self.settings, self.settings.concurrency_ttl
        reserve = self._reserve(exchange)
        principal = exchange.principal
        if principal is None:
            charge = Charge(tag=f"addr:{self.guard.address(request)}", reserved=reserve)
            charge.add_scope("ip:", s.address, reserve, exchange.stream, ttl)
            return charge, ["ban"]
        charge = Charge(tag=f"acct:{principal.account_id}", reserved=reserve)
        plan = s.plans.get(principal.plan or "") or s.plans.get(s.default_plan or "")
        if plan is None:
            return charge, []
        found = self.services.config.resolve_model(exchange.model)
        model = found[0] if found is not None else "unknown"  # never a client-chosen key
        charge.add_scope(f"k:{principal.key_id}:", plan.key, reserve, exchange.stream, ttl)
        charge.add_scope("a:", plan.account, reserve, exchange.stream, ttl)
        charge.add_scope(f"m:{model}:", plan.account_model, reserve, False, ttl)
        a = s.anomaly
        safe = plan.safe_tokens_per_minute
        if a.enabled and a.throttle and safe and self.anomaly.flagged(principal.account_id):
            charge.add_scope("a:safe:", ScopeLimits(tokens_per_minute=safe, shadow=a.shadow),
                             reserve, False, ttl)
        return charge, []

    def _judge(self, exchange: Exchange, charge: Charge, verdict: Verdict, backend: Store) -> None:
        """Headers for every response, shadow counts, and the refusal if any."""
        metrics = self.services.metrics
        exchange.token_estimate = charge.reserved
        applied = charge.limits
        if backend is self.failover.local:
            applied = self.failover.scaled(applied)
        rate_limit_headers(exchange.wire, applied, charge.kinds, verdict.states,
                           exchange.response_headers)
        refused_by, scope = "", ""
        for lim, kind, st in zip(charge.limits, charge.kinds, verdict.states, strict=True):
            if not st.admitted:
                rule = "anomaly" if lim.key.startswith("a:safe:") else kind
                if lim.shadow:
                    metrics.abuse_refusals.labels(rule, "shadow").inc()
                elif not refused_by:
                    refused_by, scope = rule, _SCOPES[lim.key.partition(":")[0]]
        for slot, sst in zip(charge.slots, verdict.slots, strict=True):
            if not sst.admitted:
                rule = "streams" if slot.key.endswith("streams") else "concurrency"
                if slot.shadow:
                    metrics.abuse_refusals.labels(rule, "shadow").inc()
                elif not refused_by:
                    refused_by, scope = rule, "concurrency"
        if verdict.allowed:
            return
        if verdict.banned > 0:
            self.bans.add(exchange.client_addr, verdict.banned)
            refused_by, scope = "ban", "ban"
        exchange.extra["limit_scope"] = scope or "other"
        metrics.abuse_refusals.labels(refused_by or "requests", "enforced").inc()
        raise too_many(_MESSAGES.get(refused_by, _MESSAGES["requests"]), verdict.retry_after,
                       exchange.response_headers)

    # -- after ----------------------------------------------------------------
    async def _settle(
        self, exchange: Exchange, charge: Charge, verdict: Verdict, backend: Store, lease: str
    ) -> None:
        used = _used(exchange, charge.reserved)
        charges = charge.settlement(used, [st.admitted for st in verdict.states])
        slots = [slot.key for slot in charge.slots]
        if charges or slots:
            await self.failover.settle(backend, charge.tag, charges, slots, lease)
        self._observe(exchange, used)

    def _observe(self, exchange: Exchange, used: int) -> None:
        principal = exchange.principal
        if principal is not None and used and self.settings.anomaly.enabled:
            if self.anomaly.observe(principal.account_id, used):
                self.services.metrics.abuse_anomalies.inc()
                log.warning(
                    "account token rate far above its baseline",
                    extra={"event": "anomaly_flagged", "account_id": principal.account_id},
                )


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


class _Renewal:
    """Keeps a long request's concurrency leases alive while it runs."""

    __slots__ = ("_backend", "_handle", "_lease", "_plugin", "_slots", "_tag", "_task")

    def __init__(
        self, plugin: Abuse, backend: Store, tag: str, slots: list[Slot], lease: str
    ) -> None:
        self._plugin, self._backend, self._tag = plugin, backend, tag
        self._slots, self._lease = slots, lease
        self._task: asyncio.Task[None] | None = None
        self._handle = (
            asyncio.get_running_loop().call_later(self._every(), self._fire) if slots else None
        )

    def _every(self) -> float:
        return self._plugin.settings.concurrency_ttl / 3

    def _fire(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._plugin.failover.renew(self._backend, self._tag, self._slots, self._lease)
        )
        self._handle = asyncio.get_running_loop().call_later(self._every(), self._fire)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
