"""Choose the deployment for each request, and recover from provider trouble.

For the requested model (or alias) the router takes the deployments the
caller may use (allowed models, regions and providers on the Exchange's
principal) that speak the client's wire format, skips those cooling down,
with an open breaker or at capacity, and lets the model's strategy pick
one in the best priority tier. It sets exchange.provider / upstream_model /
region / deployment and calls the rest of the pipeline.

An `UpstreamError` marked retryable (connect error, timeout before the
first byte, 429, 5xx; raised only while nothing has reached the client)
sends the request to the next deployment, then to the fallback models,
within `max_attempts` and `deadline_seconds`. A provider's Retry-After on
429/503 cools that deployment down on every instance. When every option
fails, the client gets the last provider error's status with our message.

The decision itself touches the store only for deployments with
per-minute capacity limits; cooldowns are read from a local copy kept in
step over pub/sub (state.py says how).

One module past 400 lines: picking, attempting, retrying and the health
bookkeeping share one request's attempt state; the parts with a life of
their own are routes.py, strategies.py, breaker.py and state.py.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence

import msgspec
from aiohttp import web

from lunos_proxy.bounds import AtLeastOne, Fraction, Seconds, SecondsOrZero, Share
from lunos_proxy.config import Timeouts
from lunos_proxy.errors import (
    BadRequest,
    Forbidden,
    ModelNotFound,
    UpstreamError,
    UpstreamStatus,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from lunos_proxy.exchange import Exchange, model_allowed
from lunos_proxy.parse import read_request
from lunos_proxy.plugin import Handler, Plugin, Services
from lunos_proxy.providers.listing import models_response
from lunos_proxy.store.base import Limit, StoreError
from lunos_proxy.views import PRICES, ROUTING

from .breaker import BreakerSettings, BreakerState
from .metrics import RouterMetrics
from .routes import (
    ROUTE_KEYS,
    Route,
    build_routes,
    candidates_for,
    qualifies,
    route_key,
)
from .state import REGISTRY, Candidate, Registry


def _outcome(e: UpstreamError) -> str:
    if isinstance(e, UpstreamUnreachable):
        return "unreachable"
    if isinstance(e, UpstreamTimeout):
        return "timeout"
    if e.status == 429:
        return "rate_limited"
    return "server_error" if e.status >= 500 else "client_error"


class Router(Plugin):
    name = "router"

    class Settings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
        # Upstream attempts per request, across deployments and fallbacks.
        max_attempts: AtLeastOne = 3
        # No attempt starts after this, and an attempt's first-byte wait is
        # cut to what is left of it.
        deadline_seconds: Seconds = 120.0
        # A provider's Retry-After is honoured up to this long.
        max_cooldown_seconds: SecondsOrZero = 300.0
        breaker: BreakerSettings = msgspec.field(default_factory=BreakerSettings)
        # Weight of the newest time-to-first-byte sample in lowest_latency's average.
        latency_alpha: Share = 0.3
        # How often lowest_latency picks at random to re-measure the others.
        explore: Fraction = 0.05
        # Longest a local copy of the shared cooldowns may go unrefreshed.
        sync_seconds: Seconds = 2.0
        # Seed for the random choices (tests, benchmarks); None: from the OS.
        seed: int | None = None

    def __init__(self, settings: Settings, services: Services) -> None:
        super().__init__(settings, services)
        s = self.settings
        registry = services.lasting.get(REGISTRY)
        if registry is None:
            registry = Registry(services.store, s.breaker, s.sync_seconds)
            services.lasting[REGISTRY] = registry
        # A reloaded config's breaker settings apply in start(): a reload
        # refused while its plugins are built changes nothing.
        self.registry: Registry = registry
        self.metrics = services.metrics.add(RouterMetrics)
        self.routes, self.names = build_routes(
            services.config,
            registry,
            random.Random(s.seed),
            s.explore,
            services.views.get(PRICES),
        )
        services.views[ROUTING] = registry
        # Per model and client wire format (see route_key), the plan of a
        # caller with no restrictions: its deployments, then its fallbacks'.
        self.plans: dict[str, dict[str, list[tuple[Route, Sequence[Candidate]]]]] = {}
        for public, route in self.routes.items():
            chain = [route] + [self.routes[name] for name in route.fallbacks]
            self.plans[public] = {
                key: [(r, r.by_wire[key]) for r in chain if key in r.by_wire] for key in ROUTE_KEYS
            }
        self.served_by: dict[str, list[tuple[str, str]]] = {}
        m = self.metrics
        for route in self.routes.values():
            for c in route.candidates:
                self.served_by.setdefault(c.id, []).append((route.public, c.provider))
                c.metered = (
                    m.deployment_attempts.labels(route.public, c.id, "ok"),
                    m.deployment_ttfb.labels(c.id),
                )

    async def start(self) -> None:
        services = self.services
        self.metrics.prepare(services.config, services.metrics.multiprocess_dir is not None)
        self.registry.configure(self.settings.breaker, self.settings.sync_seconds)
        cooldowns = self.registry.cooldowns
        if not cooldowns.started:
            await cooldowns.start()

    async def stop(self) -> None:
        await self.registry.cooldowns.drain()

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        exchange = await read_request(request)
        if exchange.endpoint == "models":
            return self.list_models(exchange, request)
        sent = exchange.model
        public = self.names.get(sent)
        if public is None:
            raise ModelNotFound()  # never names it: the name is the client's
        exchange.model = public
        principal = exchange.principal
        if principal is None or (
            principal.allowed_models is None
            and principal.allowed_regions is None
            and principal.allowed_providers is None
        ):
            # built once per config
            plan = self.plans[public].get(route_key(exchange.wire, exchange.endpoint))
        else:
            plan = self._plan_for(public, sent, exchange)
        if not plan:
            raise self._nothing_qualifies(exchange, public)
        return await self._attempts(request, handler, exchange, plan)

    def _plan_for(
        self, public: str, sent: str, exchange: Exchange
    ) -> list[tuple[Route, Sequence[Candidate]]]:
        """The models to try, with the deployments this caller may use. A key
        may be allowed the model by the name it sent (an alias) or by its
        public name; the refusal names neither (one would tell what an alias
        stands for)."""
        principal = exchange.principal
        if not model_allowed(principal, sent, public):
            raise Forbidden("Your API key may not use this model.", param="model")
        plan: list[tuple[Route, Sequence[Candidate]]] = []
        for name in (public, *self.routes[public].fallbacks):
            if name == public or model_allowed(principal, name):
                route = self.routes[name]
                found = candidates_for(
                    route, route_key(exchange.wire, exchange.endpoint), principal
                )
                if found:
                    plan.append((route, found))
        return plan

    def _nothing_qualifies(self, exchange: Exchange, public: str) -> Exception:
        route = self.routes[public]
        if route_key(exchange.wire, exchange.endpoint) not in route.by_wire:
            return BadRequest(
                f"This model is not served over the {exchange.wire} API.", param="model"
            )
        return Forbidden(
            "No deployment of this model is in a region or with a provider "
            "your account may use."
        )

    async def _attempts(
        self,
        request: web.Request,
        handler: Handler,
        exchange: Exchange,
        plan: list[tuple[Route, Sequence[Candidate]]],
    ) -> web.StreamResponse:
        s = self.settings
        metrics = self.metrics
        first = plan[0][0].public
        # Counted from when the request came in, not from here.
        waited = time.perf_counter() - exchange.timings.received
        deadline = time.monotonic() + s.deadline_seconds - waited
        last: UpstreamError | None = None
        wait = math.inf  # soonest a skipped deployment is usable again
        for step, (route, candidates) in enumerate(plan):
            if exchange.attempts >= s.max_attempts or time.monotonic() >= deadline:
                break
            if step > 0:
                exchange.fallbacks += 1
                metrics.route_fallbacks.labels(first, route.public).inc()
            tried: set[int] = set()
            while exchange.attempts < s.max_attempts:
                now = time.monotonic()
                if now >= deadline:
                    break
                chosen, soonest = self._pick(route, candidates, tried, self.registry.clock())
                wait = min(wait, soonest)
                if chosen is None:
                    break
                tried.add(chosen.index)
                charged = 0
                if chosen.limits:
                    # The deployment's slot (and a half-open breaker's probe)
                    # is held while the store answers, or every request
                    # picked meanwhile would pass the same checks.
                    state = chosen.state
                    probe = state.breaker.begin(self.registry.clock())
                    state.in_flight += 1
                    try:
                        charged, retry_after = await self._take_capacity(chosen, exchange)
                    finally:
                        state.in_flight -= 1
                        state.breaker.release(probe)
                    if retry_after:
                        metrics.route_skips.labels(chosen.id, "capacity").inc()
                        wait = min(wait, retry_after)
                        continue
                if exchange.attempts:
                    metrics.route_retries.labels(first).inc()
                try:
                    return await self._attempt(
                        request, handler, exchange, route, chosen, deadline - now, charged
                    )
                except UpstreamError as e:
                    if not e.retryable:
                        raise
                    last = e
        if last is not None:
            if exchange.attempts > 1:
                last.message = f"{last.message[:-1]}; {exchange.attempts} attempts failed."
            if last.retry_after:  # the provider's, bounded as its cooldown is
                seconds = min(last.retry_after, self.settings.max_cooldown_seconds)
                if seconds > 0:
                    last.headers.setdefault("Retry-After", str(math.ceil(seconds)))
            raise last
        if wait < math.inf:
            raise UpstreamError(
                f"Every deployment of the model '{first}' is cooling down, failing or at "
                "capacity; try again later.",
                status=503,
                code="all_deployments_down",
                retryable=False,
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        raise UpstreamTimeout("The request's deadline passed before a provider answered.")

    def _pick(
        self, route: Route, candidates: Sequence[Candidate], tried: set[int], now: float
    ) -> tuple[Candidate | None, float]:
        """The strategy's choice among the usable candidates of the best tier,
        and the soonest a skipped one is usable again."""
        cooldowns = self.registry.cooldowns
        cooldowns.maybe_sync(now)
        if (
            not tried
            and candidates is route.candidates
            and not cooldowns.active
            and not self.registry.unhealthy
            and not route.capped
        ):
            # Nothing is impaired and the caller is not restricted: the best
            # tier as configured, without looking at each deployment.
            return route.strategy.choose(route.first_tier), math.inf
        usable: list[Candidate] = []
        soonest = math.inf
        for c in candidates:
            if c.index in tried:
                continue
            left = cooldowns.left(c.id, now)
            if left:
                soonest = min(soonest, left)
                if not tried:
                    self.metrics.route_skips.labels(c.id, "cooldown").inc()
                continue
            breaker = c.state.breaker
            if not breaker.available(now):
                soonest = min(soonest, max(breaker.opened_until - now, 0.001))
                if not tried:
                    self.metrics.route_skips.labels(c.id, "breaker").inc()
                continue
            if c.max_concurrent is not None and c.state.in_flight >= c.max_concurrent:
                soonest = min(soonest, 1.0)
                if not tried:
                    self.metrics.route_skips.labels(c.id, "capacity").inc()
                continue
            usable.append(c)
        if not usable:
            return None, soonest
        if route.tiered:
            tier = min(c.priority for c in usable)
            usable = [c for c in usable if c.priority == tier]
        return route.strategy.choose(usable), soonest

    async def _take_capacity(self, c: Candidate, exchange: Exchange) -> tuple[int, float]:
        """Charge the deployment's per-minute limits; (tokens charged, retry after)."""
        tokens = exchange.token_estimate or (len(exchange.body) // 4 + (exchange.max_tokens or 0))
        limits = c.store_limits(tokens)
        try:
            verdict = await self.services.store.hit(c.tag, limits)
        except StoreError:
            return 0, 0.0  # capacity protects providers; an unknown count lets the call go
        if not verdict.allowed:
            return 0, max(verdict.retry_after, 0.001)
        return (limits[-1].cost if c.tpm else 0), 0.0

    async def _attempt(
        self,
        request: web.Request,
        handler: Handler,
        exchange: Exchange,
        route: Route,
        c: Candidate,
        time_left: float,
        charged: int,
    ) -> web.StreamResponse:
        if exchange.attempts:
            _reset(exchange)
        exchange.provider = c.provider
        exchange.upstream_model = c.deployment.model
        exchange.served_public = route.public  # a fallback's own name (the meter prices it)
        exchange.region = c.region
        exchange.deployment = c.id
        exchange.deployments_tried.append(c.id)
        t = c.timeouts
        if time_left < t.first_byte:
            t = Timeouts(connect=min(t.connect, time_left), first_byte=time_left, idle=t.idle)
        exchange.upstream_timeouts = t
        state = c.state
        breaker = state.breaker
        before = breaker.state
        clock = self.registry.clock
        probe = breaker.begin(clock())
        state.in_flight += 1
        verdict: bool | None = None
        outcome = ""
        try:
            response = await handler(request)
            verdict = exchange.error_type != "provider"  # False: the stream broke mid-way
            outcome = "ok" if verdict else "stream_broken"
            timings = exchange.timings
            if timings.first_byte and timings.upstream_start:
                ttfb = timings.first_byte - timings.upstream_start
                state.observe_latency(ttfb, self.settings.latency_alpha)
                c.metered[1].observe(ttfb)
            if charged:
                await self._settle_tokens(c, exchange, charged)
            return response
        except UpstreamError as e:
            outcome = _outcome(e)
            verdict = False if e.retryable else None
            if e.retry_after and isinstance(e, UpstreamStatus) and e.status in (429, 503):
                seconds = min(e.retry_after, self.settings.max_cooldown_seconds)
                self.registry.cooldowns.cool(c.id, seconds)
            if charged and c.tpm is not None:
                # No answer, no tokens: the estimate goes back to the deployment.
                await self._adjust_tokens(c, -charged)
            raise
        finally:
            state.in_flight -= 1
            if verdict is None:
                breaker.release(probe)
            else:
                breaker.record(clock(), verdict, probe)
                if outcome == "ok":
                    c.metered[0].inc()
                else:
                    self.metrics.deployment_attempts.labels(route.public, c.id, outcome).inc()
            if breaker.state != before:
                closed = breaker.state is BreakerState.CLOSED
                if closed:
                    self.registry.unhealthy.discard(c.id)
                else:
                    self.registry.unhealthy.add(c.id)
                self._show_breaker(c.id, not closed)

    def _show_breaker(self, deployment_id: str, open_: bool) -> None:
        """Set `lunos_breaker_open` for every model the deployment serves
        (half-open counts as open: it takes probes only)."""
        for public, provider in self.served_by.get(deployment_id, ()):
            self.metrics.breaker_open.labels(public, deployment_id, provider).set(int(open_))

    async def _settle_tokens(self, c: Candidate, exchange: Exchange, charged: int) -> None:
        usage = exchange.usage
        if usage.source == "none" or c.tpm is None:
            return
        diff = usage.input_tokens + usage.output_tokens - charged
        if diff:
            await self._adjust_tokens(c, diff)

    async def _adjust_tokens(self, c: Candidate, tokens: int) -> None:
        assert c.tpm is not None
        try:
            await self.services.store.adjust(c.tag, Limit("tpm", c.tpm, 60.0, tokens))
        except StoreError:
            pass  # the estimate stands; the counter drains within a minute

    def list_models(self, exchange: Exchange, request: web.Request) -> web.Response:
        """The models the caller may use, in the listing shape of its SDK."""
        principal = exchange.principal
        names = [
            public
            for public, route in self.routes.items()
            if any(qualifies(c, principal) for c in route.candidates)
        ]
        return models_response(exchange, names, request, self.names.get)


def _reset(exchange: Exchange) -> None:
    """Forget what a failed attempt left on the Exchange."""
    exchange.status = 0
    exchange.error_type = exchange.error_code = ""
    exchange.bytes_out = 0
    t = exchange.timings
    t.upstream_start = t.first_byte = t.last_byte = 0.0
