"""Request-level metrics, the registry plugins add theirs to, and /metrics.

A plugin declares its own metrics in its package (plugins/router/metrics.py,
plugins/abuse/metrics.py, plugins/meter/metrics.py) and registers them once
per process through `Metrics.add`; this module keeps what every request
has (requests, durations, tokens, cost, limit refusals), the store's and
the event loop's. One module past 400 lines on purpose: these names, label
sets and bucket lists are what deploy/alerts, deploy/grafana and their
tests are checked against; the store timing (`instrument_store`,
`StoreHealth`) and the loop timer (`LoopLag`) are here because they exist
only to feed them.

Labels are bounded by config: public model names, provider and deployment
names, plugin names, store operations, a status class, an error class from
the fixed taxonomy (caller | policy | provider | gateway), a limit scope
from `LIMIT_SCOPES`. Never an account, key, address or anything a client
chose (an unknown model is counted as "unknown").

Buckets follow the OpenTelemetry GenAI semantic conventions: request
durations from 10 ms doubling to ~82 s (`gen_ai.server.request.duration`),
time to first token from 1 ms to 10 s (`gen_ai.server.time_to_first_token`).
Gateway overhead and per-plugin time get sub-millisecond buckets.

Several worker processes (``lunos-proxy serve --workers N``) share one
directory named by ``PROMETHEUS_MULTIPROC_DIR``: each process writes its
values to memory-mapped files there, and /metrics on any worker reads all of
them, so counters and histograms are sums over workers, the in-flight gauge
is the live sum, and `store_up` / breaker gauges the live maximum.

Every series a rule or a dashboard panel reads exists from start: the
unlabelled ones by construction, the labelled ones for every label value
the config or the code fixes (`Metrics.prepare`, run for each config in
force). So `rate()` and `increase()` see a series' first event, a breaker
that never opened reads 0 rather than nothing, and a rule over an absent
series is not blind. Label values a plugin invents at run time (an abuse
rule's name) still appear with their first event.

Gauges follow their state continuously: `lunos_store_up` from every store
call's own outcome (`StoreHealth`), with a ping when the store has been idle
for `STORE_PROBE_SECONDS`; `lunos_event_loop_lag_seconds` from a timer that
measures how late it runs (`LoopLag`), so a blocked loop shows without any
per-request cost.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from bisect import bisect_left
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

import prometheus_client
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    generate_latest,
    multiprocess,
    values,
)

from .store.base import StoreError

if TYPE_CHECKING:
    from .config import Config
    from .exchange import Exchange
    from .store.base import Store

__all__ = [
    "DURATION_BUCKETS",
    "LIMIT_SCOPES",
    "MULTIPROC_ENV",
    "TTFT_BUCKETS",
    "Counter",
    "Gauge",
    "Histogram",
    "LoopLag",
    "Metrics",
    "StoreHealth",
    "instrument_store",
]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
M = TypeVar("M")

DURATION_BUCKETS = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
PLUGIN_BUCKETS = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1,
)  # fmt: skip
STORE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
LOOP_LAG_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

# How often the event-loop timer runs (and so the finest stall it can see).
LOOP_LAG_SECONDS = 0.5
# A store with no call answered for this long is pinged (and the ping waits
# at most this long) so that `lunos_store_up` follows an idle store too.
STORE_PROBE_SECONDS = 2.0

# What a limit refusal may be attributed to. A plugin that refuses a request
# with 429 puts one of these in ``exchange.extra["limit_scope"]``; anything
# else is counted as "other". Out-of-budget (insufficient_quota) is "budget".
LIMIT_SCOPES = frozenset(
    {"key", "account", "address", "model", "global", "concurrency", "budget", "ban", "other"}
)
TOKEN_TYPES = ("input", "output", "cached_input", "cache_creation", "reasoning")
# The (status class, error type) pairs a request of a configured model is
# counted under, made at 0 for every model and provider (and provider
# "none": refused or failed before any provider answered).
REQUEST_CLASSES = (
    ("2xx", "none"), ("4xx", "caller"), ("4xx", "policy"), ("5xx", "provider"), ("5xx", "gateway"),
)  # fmt: skip
RELOAD_RESULTS = ("applied", "rejected")
# The store operations whose latency is made at 0: the limit calls every
# request makes (the store-latency rule reads them) and the idle probe.
TIMED_FROM_START = ("hit", "settle", "ping")


def _multiproc_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


class _LoopValue:
    """prometheus_client's in-process value without its lock. Every metric of
    a process is updated, and read for /metrics, on its event loop's thread
    (the proxy's own threads, the tokenizer load and file writes, touch
    none), so the lock guarded nothing. The metric classes below add to
    `_value` directly rather than through `inc`: a request makes about
    fifteen observations and ten increments, and a method call costs more
    than the addition it makes."""

    __slots__ = ("_exemplar", "_value")
    _multiprocess = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._value = 0.0
        self._exemplar: Any = None

    def inc(self, amount: float) -> None:
        self._value += amount

    def set(self, value: float, timestamp: float | None = None) -> None:
        self._value = value

    def set_exemplar(self, exemplar: Any) -> None:
        self._exemplar = exemplar

    def get(self) -> float:
        return self._value

    def get_exemplar(self) -> Any:
        return self._exemplar


class Counter(prometheus_client.Counter):
    """prometheus_client's Counter, without its per-call check that no
    label is left to fill (a labelled parent has no value, so the call
    fails either way)."""

    def inc(self, amount: float = 1, exemplar: dict[str, str] | None = None) -> None:
        if exemplar is not None or amount < 0:
            super().inc(amount, exemplar)  # its checks and errors
            return
        value = self._value
        if type(value) is _LoopValue:
            value._value += amount
        else:
            value.inc(amount)


class Gauge(prometheus_client.Gauge):
    """prometheus_client's Gauge, the same check skipped when its value is
    in-process (the in-flight gauge changes twice a request)."""

    def inc(self, amount: float = 1) -> None:
        value = self._value
        if type(value) is _LoopValue and not self._is_most_recent:
            value._value += amount
        else:
            super().inc(amount)  # its checks, or the shared file's value

    def dec(self, amount: float = 1) -> None:
        value = self._value
        if type(value) is _LoopValue and not self._is_most_recent:
            value._value -= amount
        else:
            super().dec(amount)

    def set(self, value: float) -> None:
        held = self._value
        if type(held) is _LoopValue:
            held._value = float(value)
        else:
            super().set(value)


class Histogram(prometheus_client.Histogram):
    """prometheus_client's Histogram, the bucket found by bisection and the
    same per-call check skipped."""

    def observe(self, amount: float, exemplar: dict[str, str] | None = None) -> None:
        if exemplar is not None:
            super().observe(amount, exemplar)
            return
        total, bounds = self._sum, self._upper_bounds
        if type(total) is _LoopValue:
            total._value += amount
            if amount <= bounds[-1]:  # as prometheus_client: NaN counts in no bucket
                self._buckets[bisect_left(bounds, amount)]._value += 1
            return
        total.inc(amount)
        if amount <= bounds[-1]:
            self._buckets[bisect_left(bounds, amount)].inc(1)


class Metrics:
    """Every metric the proxy exports, on one registry per process."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.multiprocess_dir = _multiproc_dir()
        if self.multiprocess_dir and not getattr(values.ValueClass, "_multiprocess", False):
            # prometheus_client picks its value class when first imported; a
            # worker forked after that switches to the shared files here.
            values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
        elif values.ValueClass is values.MutexValue:
            values.ValueClass = _LoopValue
        self.registry = registry or CollectorRegistry()
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        # (model, provider, status, error type) -> the children a request
        # updates; bounded as their labels are (a status is 100..599).
        self._request_children: dict[tuple[str, str, int, str], list[Any]] = {}
        r = self.registry
        model = ("model", "provider")
        self.requests = Counter(
            "lunos_requests",
            "Requests answered, by public model, provider, status class and error type.",
            ("model", "provider", "status_class", "error_type"),
            registry=r,
        )
        self.request_duration = Histogram(
            "lunos_request_duration_seconds",
            "Time from receiving a request to its last byte.",
            model,
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.upstream_duration = Histogram(
            "lunos_upstream_duration_seconds",
            "Time from sending to the provider to its last byte (last attempt).",
            model,
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.time_to_first_byte = Histogram(
            "lunos_upstream_time_to_first_byte_seconds",
            "Time from sending to the provider to its first byte (first token of a stream).",
            model,
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.overhead = Histogram(
            "lunos_gateway_overhead_seconds",
            "Time spent in the gateway: total minus time waiting on the provider.",
            (),
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )
        self.plugin_duration = Histogram(
            "lunos_plugin_duration_seconds",
            "Time spent in each plugin's own code, excluding the plugins and provider it awaits.",
            ("plugin",),
            buckets=PLUGIN_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "lunos_tokens",
            "Tokens, by public model, provider and type (input, output, cached_input, ...).",
            ("model", "provider", "type"),
            registry=r,
        )
        self.cost = Counter(
            "lunos_cost_usd",
            "Cost of the requests served, in US dollars, by public model and provider.",
            model,
            registry=r,
        )
        self.limit_refusals = Counter(
            "lunos_limit_refusals",
            "Requests refused by a rate limit, quota or budget, by scope.",
            ("scope",),
            registry=r,
        )
        self.in_flight = Gauge(
            "lunos_requests_in_flight",
            "Requests being served now.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.config_reloads = Counter(
            "lunos_config_reloads",
            "Config reloads, by result (each worker process counts its own).",
            ("result",),
            registry=r,
        )
        self.store_up = Gauge(
            "lunos_store_up",
            "1 while the state store answers, 0 while it does not (its last call or idle probe).",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.store_health = StoreHealth(self.store_up)
        self.store_errors = Counter(
            "lunos_store_errors",
            "Store operations that failed, by operation.",
            ("operation",),
            registry=r,
        )
        self.store_duration = Histogram(
            "lunos_store_operation_seconds",
            "Store operation latency, by operation.",
            ("operation",),
            buckets=STORE_BUCKETS,
            registry=r,
        )
        self.loop_lag = Histogram(
            "lunos_event_loop_lag_seconds",
            f"How late a timer due every {LOOP_LAG_SECONDS} s ran: the event loop's stalls.",
            (),
            buckets=LOOP_LAG_BUCKETS,
            registry=r,
        )
        self._loop_lag = LoopLag(self.loop_lag)
        # -- usage records (lunos_proxy/records/writer.py)
        self.records_backlog = Gauge(
            "lunos_records_backlog",
            "Usage events and ledger lines waiting to be written to the records database.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.records_write_failures = Counter(
            "lunos_records_write_failures",
            "Failed attempts to write usage records (retried).",
            registry=r,
        )
        self.records_dropped = Counter(
            "lunos_records_dropped",
            "Usage records that could not be kept: events over the backlog bound, "
            "events and ledger lines lost at shutdown.",
            ("what",),
            registry=r,
        )
        for what in ("events", "shutdown"):  # from 0
            self.records_dropped.labels(what)
        for scope in LIMIT_SCOPES:
            self.limit_refusals.labels(scope)
        for result in RELOAD_RESULTS:
            self.config_reloads.labels(result)
        for operation in TIMED_FROM_START:
            self.store_duration.labels(operation)
            self.store_errors.labels(operation)
        self._owned: dict[object, object] = {}

    def add(self, build: Callable[[CollectorRegistry], M]) -> M:
        """A plugin's own metrics, made by `build` on this process's registry
        the first time and the same object for every later generation (a
        reload rebuilds plugins, and a metric is registered once):

            class AbuseMetrics:
                def __init__(self, registry: CollectorRegistry) -> None:
                    self.bans = Counter("lunos_abuse_bans", "...", registry=registry)

            self.m = services.metrics.add(AbuseMetrics)

        Label values bounded by config, as for every metric here; make a
        config's series at 0 from the plugin's `start()` (see `prepare`)."""
        found = self._owned.get(build)
        if found is None:
            found = self._owned[build] = build(self.registry)
        return cast(M, found)

    def start(self) -> None:
        """Start the event-loop timer (on the running loop)."""
        self._loop_lag.start()

    def stop(self) -> None:
        self._loop_lag.stop()

    def prepare(self, config: Config) -> None:
        """Make, at 0, every series whose labels `config` fixes: per public
        model its providers' request, token, cost and latency series. A
        series that exists keeps its value. Plugins make their own series
        the same way when they start (the router's per deployment, say)."""
        for public, model in config.models.items():
            providers = sorted({d.provider for d in model.deployments})
            for provider in (*providers, "none"):
                for status_class, error_type in REQUEST_CLASSES:
                    self.requests.labels(public, provider, status_class, error_type)
            for provider in providers:
                names = (public, provider)
                for kind in TOKEN_TYPES:
                    self.tokens.labels(public, provider, kind)
                for metric in (
                    self.cost, self.request_duration, self.upstream_duration,
                    self.time_to_first_byte,
                ):  # fmt: skip
                    metric.labels(*names)
        for public in ("none", "unknown"):  # no model asked for; one not configured
            for status_class, error_type in REQUEST_CLASSES:
                self.requests.labels(public, "none", status_class, error_type)

    def status_class(self, status: int) -> str:
        return f"{status // 100}xx" if status else "none"

    def _child(self, metric: Any, labels: tuple[str, ...]) -> Any:
        # A `labels()` call costs more than the observation it serves; label
        # values are bounded by config, so the cache is too.
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def record(self, exchange: Exchange, config: Config) -> None:
        """Count one finished request from its Exchange."""
        model, provider = exchange.public_model(config) or "none", exchange.provider or "none"
        child = self._child
        names = (model, provider)
        labels = (model, provider, exchange.status, exchange.error_type or "none")
        children = self._request_children.get(labels)
        if children is None:
            status = self.status_class(exchange.status)
            children = self._request_children[labels] = [
                child(self.requests, (model, provider, status, labels[3])),
                child(self.request_duration, names),
                child(self.upstream_duration, names),
                child(self.time_to_first_byte, names),
                None,  # the token counters, each made when first counted
                None,  # the cost counter, likewise
            ]
        requests, request_duration, upstream_duration, time_to_first_byte, tokens, cost = children
        requests.inc()
        t = exchange.timings
        end = t.last_byte or time.perf_counter()
        total = end - t.received
        request_duration.observe(total)
        if t.upstream_start:
            upstream = end - t.upstream_start
            upstream_duration.observe(upstream)
            self.overhead.observe(max(0.0, total - upstream))
            if t.first_byte:
                time_to_first_byte.observe(t.first_byte - t.upstream_start)
        u = exchange.usage
        if u.input_tokens or u.output_tokens:
            counts = (
                u.input_tokens,
                u.output_tokens,
                u.cached_input_tokens,
                u.cache_creation_tokens,
                u.reasoning_tokens,
            )
            if tokens is None:
                tokens = children[4] = [None] * len(TOKEN_TYPES)
            for i, n in enumerate(counts):
                if n:
                    counter = tokens[i]
                    if counter is None:  # a type's series appears when first counted
                        counter = tokens[i] = child(self.tokens, (model, provider, TOKEN_TYPES[i]))
                    counter.inc(n)
        if exchange.cost_micros:
            if cost is None:
                cost = children[5] = child(self.cost, names)
            cost.inc(exchange.cost_micros / 1_000_000)
        if exchange.status == 429 and exchange.error_type == "policy":
            self.limit_refusals.labels(_scope(exchange)).inc()

    def registry_for_scrape(self) -> CollectorRegistry:
        if self.multiprocess_dir is None:
            return self.registry
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return merged

    async def handle(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry_for_scrape())
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _scope(exchange: Exchange) -> str:
    if exchange.error_code == "insufficient_quota":
        return "budget"
    scope = exchange.extra.get("limit_scope")
    return scope if isinstance(scope, str) and scope in LIMIT_SCOPES else "other"


class StoreHealth:
    """`lunos_store_up` from the store's own answers: 1 after a call that
    succeeded, 0 after one that raised `StoreError` (the instrumented store
    reports every call, the limits' settlements sent behind report theirs).
    The gauge is written on a change only, so a call costs a comparison."""

    __slots__ = ("_gauge", "last", "up")

    def __init__(self, gauge: Gauge) -> None:
        self._gauge = gauge
        self.up: bool | None = None  # unknown until the first answer
        self.last = 0.0  # perf_counter() when a call last ended

    def ok(self) -> None:
        if self.up is not True:
            self.up = True
            self._gauge.set(1)

    def failed(self) -> None:
        if self.up is not False:
            self.up = False
            self._gauge.set(0)


class LoopLag:
    """A timer due every `interval` seconds observing how late it ran. A
    loop blocked for a second shows as a one-second observation; the cost is
    one timer callback per interval, nothing per request."""

    def __init__(self, histogram: Histogram, interval: float = LOOP_LAG_SECONDS) -> None:
        self._histogram = histogram
        self.interval = interval
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0

    def start(self) -> None:
        if self._handle is None:
            self._loop = asyncio.get_running_loop()
            self._schedule()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _schedule(self) -> None:
        assert self._loop is not None
        self._due = time.perf_counter() + self.interval
        self._handle = self._loop.call_later(self.interval, self._tick)

    def _tick(self) -> None:
        # A timer may fire up to a clock tick early (libuv counts in ms).
        self._histogram.observe(max(0.0, time.perf_counter() - self._due))
        self._schedule()


class _TimedStore:
    """Delegates to a store, timing every coroutine method, counting failures
    and keeping `lunos_store_up` to the calls' outcomes. Between `start` and
    `close` it pings a store that has answered nothing for
    `STORE_PROBE_SECONDS` (a timed-out ping counts as a failure)."""

    def __init__(self, inner: Store, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics
        self._probe: asyncio.Task[None] | None = None
        self.probe_seconds = STORE_PROBE_SECONDS

    async def start(self) -> None:
        health = self._metrics.store_health
        try:
            await self._inner.start()
        except StoreError:
            health.failed()
            raise
        health.ok()
        health.last = time.perf_counter()
        if self._probe is None:
            self._probe = asyncio.get_running_loop().create_task(self._probe_when_idle())

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            await asyncio.gather(self._probe, return_exceptions=True)
            self._probe = None
        await self._inner.close()

    async def _probe_when_idle(self) -> None:
        health = self._metrics.store_health
        while True:
            await asyncio.sleep(self.probe_seconds)
            if time.perf_counter() - health.last < self.probe_seconds:
                continue
            try:
                await asyncio.wait_for(self.ping(), self.probe_seconds)
            except StoreError:
                pass  # counted and shown by the timed call
            except TimeoutError:
                health.failed()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name.startswith("_") or not _is_coroutine_method(attr):
            if inspect.ismethod(attr):
                setattr(self, name, attr)  # a plain method: found directly next time
            return attr
        timed = _timed(attr, name, self._metrics)
        setattr(self, name, timed)  # later lookups skip __getattr__
        return timed


def _is_coroutine_method(attr: Any) -> bool:
    return inspect.iscoroutinefunction(attr)


def _timed(method: Callable[..., Any], name: str, metrics: Metrics) -> Callable[..., Any]:
    duration = metrics.store_duration.labels(name)
    errors = metrics.store_errors.labels(name)
    health = metrics.store_health

    async def call(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            result = await method(*args, **kwargs)
        except StoreError:
            errors.inc()
            health.failed()
            raise
        finally:
            health.last = ended = time.perf_counter()
            duration.observe(ended - started)
        if not health.up:
            health.ok()
        return result

    call.__name__ = name
    return call


def instrument_store(store: Store, metrics: Metrics) -> Store:
    """`store` with every operation timed (`lunos_store_operation_seconds`),
    every `StoreError` counted (`lunos_store_errors_total`, each operation
    from 0) and `lunos_store_up` following the outcomes. The original is at
    ``._inner``; everything else behaves as the original."""
    for name in dir(type(store)):
        if not name.startswith("_") and name not in ("start", "close"):
            if inspect.iscoroutinefunction(getattr(type(store), name)):
                metrics.store_errors.labels(name)
    timed: Any = _TimedStore(store, metrics)
    return timed  # type: ignore[no-any-return]
