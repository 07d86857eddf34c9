"""The meter: usage and cost of every response, a write-behind ledger, budgets.

    pipeline:
      - name: meter
        settings:
          pricing: pricing.yaml        # relative to the config file's folder;
                                       # "" (the default) = no prices, everything costs 0
          timezone: UTC                # the billing day (ledger rows, usage events)
          budgets: {accounts: {acct_1: {monthly: 100}}}
          webhook: {url: https://ops.example/hooks/budget, secret: ${LUNOS_WEBHOOK_SECRET}}

Place it inside abuse and outside the router (abuse → meter → router): it
must see the final provider response, and `exchange.usage` /
`exchange.cost_micros` are final when it returns, for abuse's settlement and
the logger. Requests are attributed to `exchange.principal` (set by auth);
without one they are metered as account and key "anonymous".

Before forwarding: budgets are checked (429 insufficient_quota), and an
OpenAI-style stream is asked for its usage (see include_usage.py).
While the answer passes: `UsageWatcher` reads the usage. After: the
request's usage event goes to the ledger (counters, spend, billing line,
the event itself) and metrics.
"""

from __future__ import annotations

import asyncio
import time
import zoneinfo
from pathlib import Path
from typing import Annotated

import msgspec
from aiohttp import web

from lunos_proxy.bounds import AtLeastOne, Seconds, SecondsOrZero
from lunos_proxy.config import Config, ConfigError
from lunos_proxy.config_files import checked_file
from lunos_proxy.exchange import Exchange, exchange_of
from lunos_proxy.parse import read_request
from lunos_proxy.plugin import Handler, Plugin, Services
from lunos_proxy.records.writer import RecordsWriter
from lunos_proxy.store.base import UsageEvent
from lunos_proxy.views import METER, PRICES

from .budgets import BudgetSettings, Calendar, Guard, Limit, Rules
from .estimate import encoding_for, preload
from .include_usage import (
    STREAM_USAGE_ENDPOINTS,
    UsageChunkFilter,
    ask_for_usage,
)
from .ledger import Ledger
from .metrics import MeterMetrics
from .pricing import Price, PriceTable, PricingError, TablePrices, load_pricing
from .watch import UsageWatcher
from .webhooks import Notifier

# Endpoints that consume tokens; /v1/models and count_tokens are not billed.
METERED = frozenset({"chat/completions", "completions", "embeddings", "responses", "messages"})
ANONYMOUS = "anonymous"
_SPEND_REMEMBERED = 10_000  # (account, key, day) entries kept
_PRICES_REMEMBERED = 1_000  # (provider, upstream model, served model) entries kept


class WebhookSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    url: str
    secret: str
    max_attempts: AtLeastOne = 5
    backoff_seconds: SecondsOrZero = 1.0
    timeout_seconds: Seconds = 5.0


def _pricing_problems(path: Path) -> list[str]:
    try:
        load_pricing(path)
    except PricingError as e:
        return e.problems
    return []


# Checked (and found beside the config file) when the config loads.
PricingFile = Annotated[str, checked_file(_pricing_problems)]


# Whether a meter of this process has started (a later start is a reload's).
_started = False


class MeterSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pricing: PricingFile = ""
    timezone: str = "UTC"
    # Ask OpenAI-style streams for usage when the client did not (hidden from it).
    request_stream_usage: bool = True
    # Count tokens ourselves when a provider reports none (usage_source: estimated).
    estimate: bool = True
    # Load the tokenizer's tables (~1 s of CPU, ~135 MB) into this process
    # before serving, rather than count in a tokenizer process started at the
    # first estimate (see estimate.py). Read when the server starts: a reload
    # that turns it on applies at the next start. `serve --workers N` loads
    # them before it forks in any case (`prepare`), so that workers share them.
    preload_tokenizer: bool = False
    flush_interval_seconds: Seconds = 1.0
    max_pending_events: AtLeastOne = 100_000
    events_retention_days: Annotated[int, msgspec.Meta(ge=1, le=36_500)] = 400
    budgets: BudgetSettings = msgspec.field(default_factory=BudgetSettings)
    webhook: WebhookSettings | None = None

    def __post_init__(self) -> None:
        try:
            Calendar(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {self.timezone!r}") from None


class Meter(Plugin):
    name = "meter"
    Settings = MeterSettings

    def __init__(self, settings: MeterSettings, services: Services) -> None:
        super().__init__(settings, services)
        self.settings: MeterSettings = settings
        self.prices = self._load_prices(settings.pricing)
        self.metrics = services.metrics.add(MeterMetrics)
        self.calendar = Calendar(settings.timezone)
        # Events and ledger lines go to the records database (if the gateway
        # has one), counters and spend to the store.
        self.records = (
            None
            if services.records is None
            else RecordsWriter(
                services.records,
                services.metrics,
                flush_interval=settings.flush_interval_seconds,
                max_pending_events=settings.max_pending_events,
                events_retention_days=settings.events_retention_days,
                billing_retention_days=services.config.records.billing_retention_days,
            )
        )
        self.ledger = Ledger(
            services.store,
            services.metrics,
            flush_interval=settings.flush_interval_seconds,
            records=self.records,
        )
        self.rules = Rules(settings.budgets)
        hook = settings.webhook
        self.notifier = (
            None
            if hook is None
            else Notifier(
                services.store,
                services.metrics,
                hook.url,
                hook.secret,
                max_attempts=hook.max_attempts,
                backoff=hook.backoff_seconds,
                timeout=hook.timeout_seconds,
            )
        )
        self.guard = Guard(
            self.rules,
            services.store,
            self.ledger,
            self.notifier,
            currency=self.prices.currency,
            fail_closed=services.config.store.on_failure == "fail_closed",
        )
        self._counting: set[asyncio.Future[None]] = set()
        self._spend: dict[tuple[str, str, str], list[tuple[str, str, int]]] = {}
        # (provider, upstream model, served model) -> the price in force and when.
        self._prices: dict[tuple[str, str, str], tuple[Price | None, float, float]] = {}
        services.views[METER] = self
        services.views.setdefault(PRICES, TablePrices(self.prices))

    # -- lunos_proxy.views.MeterView: what the admin API and console read ---
    @property
    def currency(self) -> str:
        return self.prices.currency

    @property
    def timezone(self) -> str:
        return self.settings.timezone

    def day(self, at: float) -> str:
        return self.calendar.day(at)

    def month(self, at: float) -> str:
        return self.calendar.month(at)

    @property
    def budgets(self) -> Rules:
        return self.rules

    @property
    def alerts_webhook(self) -> bool:
        return self.settings.webhook is not None

    @property
    def events_retention_days(self) -> int:
        return self.settings.events_retention_days

    @staticmethod
    def _load_prices(path: str) -> PriceTable:
        if not path:
            return PriceTable("USD", {})
        try:
            return load_pricing(Path(path))
        except PricingError as e:
            raise ConfigError(e.problems) from None

    @classmethod
    def prepare(cls, settings: MeterSettings, config: Config) -> None:
        # Before --workers forks: one copy of the tables, shared by every worker.
        if settings.estimate:
            preload(_encodings(config))

    async def start(self) -> None:
        self.metrics.prepare(self.services.config)
        await self.ledger.start()
        if self.records is not None:
            await self.records.start()
        global _started
        if self.settings.estimate and self.settings.preload_tokenizer and not _started:
            # About a second of CPU: awaited here, before the gateway first
            # listens. Not on a reload: a load on another thread while serving
            # would stall it, so new tables are the tokenizer process's.
            await asyncio.to_thread(preload, _encodings(self.services.config))
        _started = True

    async def stop(self) -> None:
        await self.settled()
        await self.ledger.stop()
        if self.records is not None:
            await self.records.stop()
        await self.guard.settled()  # thresholds still being judged may notify
        if self.notifier is not None:
            await self.notifier.close()

    # -- the middleware ---------------------------------------------------------
    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        exchange = exchange_of(request)
        if exchange.endpoint not in METERED:
            return await handler(request)
        if not exchange.parsed:
            await read_request(request)
        at = time.time()
        p = exchange.principal
        account, key = (p.account_id, p.key_id) if p is not None else (ANONYMOUS, ANONYMOUS)
        limits: list[Limit] = []
        if p is not None and self.rules.active:
            limits = self.rules.limits(account, key, p.plan, at, p.alert_thresholds)
            if limits:
                await self.guard.check(limits)
        if (
            exchange.stream
            and exchange.wire == "openai"
            and exchange.endpoint in STREAM_USAGE_ENDPOINTS
            and self.settings.request_stream_usage
        ):
            asked = ask_for_usage(exchange.body)
            if asked is not None:
                exchange.body = asked
                exchange.filters.append(UsageChunkFilter())
        watcher = UsageWatcher(exchange, self.cost, at, self.settings.estimate)
        exchange.observers.append(watcher)
        try:
            return await handler(request)
        except asyncio.CancelledError:
            # The client left before the answer began (waiting for its headers
            # or first bytes): the provider has the request and bills it, so
            # it is metered as estimated, like a client that left mid-stream.
            if exchange.attempts and not watcher.ended:
                watcher.end(True)
            raise
        finally:
            if watcher.ended:
                if watcher.counting:
                    await self._counted(watcher)
                self._settle(exchange, account, key, at, limits)

    async def _counted(self, watcher: UsageWatcher) -> None:
        """Count the usage off the loop, to its end even if cancelled meanwhile.

        The count ends after the client saw the whole answer, and a client
        that closes its connection then (as SDKs do) cancels the request:
        that cancellation waits for the count, so that what is settled here,
        by abuse and in the log line is the counted usage, and the request
        is not reported as cut short. The count takes milliseconds (a second
        the first time, while the tables load). `settled()` lets a reader of
        the ledger wait for it."""
        done = asyncio.get_running_loop().create_future()
        self._counting.add(done)
        count = asyncio.ensure_future(watcher.counted())
        task = asyncio.current_task()
        try:
            while not count.done():
                try:
                    await asyncio.shield(count)
                except asyncio.CancelledError:
                    if task is not None:
                        task.uncancel()
        finally:
            self._counting.discard(done)
            done.set_result(None)

    async def settled(self) -> None:
        """Return once the usage being counted now is settled into the ledger."""
        if self._counting:
            await asyncio.wait(list(self._counting))

    def cost(self, exchange: Exchange, at: float) -> int:
        key = (exchange.provider, exchange.upstream_model, _served(exchange))
        found = self._prices.get(key)
        if found is None or not found[1] <= at < found[2]:
            if len(self._prices) >= _PRICES_REMEMBERED:
                self._prices.clear()
            names = (f"{key[0]}/{key[1]}", key[2])
            found = self._prices[key] = self.prices.price_span(names, at)
        price = found[0]
        if price is None:
            self.metrics.meter_unpriced.labels(self._label(exchange)).inc()
            return 0
        return price.cost(exchange.usage)

    def _label(self, exchange: Exchange) -> str:
        # Metric labels come from config, never from what a client sent.
        return exchange.served_public or exchange.public_model(self.services.config) or "unknown"

    def _settle(self, ex: Exchange, account: str, key: str, at: float, limits: list[Limit]) -> None:
        u = ex.usage
        day = self.calendar.day(at)
        served = _served(ex)
        self.ledger.record(
            UsageEvent(
                request_id=ex.request_id,
                account_id=account,
                key_id=key,
                model=served,
                provider=ex.provider,
                time=at,
                day=day,
                status=ex.status,
                stream=ex.stream,
                input_tokens=u.input_tokens,
                output_tokens=u.output_tokens,
                cached_input_tokens=u.cached_input_tokens,
                cache_creation_tokens=u.cache_creation_tokens,
                reasoning_tokens=u.reasoning_tokens,
                cost_micros=ex.cost_micros,
                usage_source=u.source,
                endpoint=ex.endpoint,
                latency_ms=_latency_ms(ex),
            ),
            self._spend_periods(account, key, at, day),
        )
        if u.source == "estimated":
            labels = self._label(ex), ex.provider or "none"
            self.metrics.usage_estimated.labels(*labels).inc()
        if limits:
            self.guard.after(limits, at)

    def _spend_periods(
        self, account: str, key: str, at: float, day: str
    ) -> list[tuple[str, str, int]]:
        # The same few counters for every request of a key on a day: made once
        # (the list is only read). `day` is the billing day: the budgets' own
        # if they keep the same time zone.
        if self.rules.calendar.zone is not self.calendar.zone:
            day = self.rules.calendar.day(at)
        found = self._spend.get((account, key, day))
        if found is None:
            if len(self._spend) >= _SPEND_REMEMBERED:
                self._spend.clear()
            found = self._spend[(account, key, day)] = self.rules.spend_periods(account, key, at)
        return found


def _served(exchange: Exchange) -> str:
    """The public model that answered: a fallback's own, else the one asked for."""
    return exchange.served_public or exchange.model


def _latency_ms(exchange: Exchange) -> int:
    """Milliseconds from the request's arrival to the answer's last byte (the
    log line's `duration_ms`, whole): a streamed answer is settled after its
    last byte was written, a plain one once the provider's body was read."""
    t = exchange.timings
    return round(((t.last_byte or time.perf_counter()) - t.received) * 1000)


def _encodings(config: Config) -> list[str]:
    """The tokenizer tables the models of `config` count with."""
    names = {encoding_for(d.model) for m in config.models.values() for d in m.deployments}
    names.update(encoding_for(public) for public in config.models)
    return sorted(names)
