"""Build the proxy: config → services → pipeline → routes.

A `Generation` is everything built from one config: its plugins, composed
around the core handler, and its forwarder. The `Gateway` holds the
current generation and swaps it atomically on reload; a request keeps the
generation it started with, so in-flight requests finish on the old routes.
The store and the records database live as long as the gateway.

One module past 400 lines: a generation's pipeline, the gateway that swaps
generations and the public app's handlers share the request's Exchange and
the generation it runs on; the admin and console apps, reload and the
store are modules of their own.
"""

from __future__ import annotations

import asyncio
import functools
import socket
from collections.abc import Awaitable, Callable
from random import getrandbits
from time import perf_counter

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import Histogram

from .config import Config
from .demo import demo_app
from .errors import (
    GatewayError,
    InternalError,
    MethodNotAllowed,
    ModelNotFound,
    NotFound,
    error_response,
    wire_for_path,
)
from .exchange import EXCHANGE, Exchange
from .forward import Forwarder
from .http_errors import log_internal_error
from .metrics import Metrics, instrument_store
from .parse import expect_continue_later, read_request
from .plugin import Plugin, Services, Views, find_plugin
from .providers.listing import models_response
from .records import Records, RecordsError, open_records
from .reload import Reloader, ReloadResult
from .store import open_store
from .store.base import Store, StoreError
from .tracing import import_tracing, tracing_for

__all__ = ["API_ROUTES", "Gateway", "Generation"]

_NO_VIEWS = Views()  # before the first generation starts

# (method, path under /v1, client wire format, endpoint sent upstream)
API_ROUTES: tuple[tuple[str, str, str, str], ...] = (
    ("POST", "/v1/chat/completions", "openai", "chat/completions"),
    ("POST", "/v1/completions", "openai", "completions"),
    ("POST", "/v1/embeddings", "openai", "embeddings"),
    ("POST", "/v1/responses", "openai", "responses"),
    ("GET", "/v1/models", "openai", "models"),
    ("GET", "/v1/models/{model}", "openai", "models"),
    ("POST", "/v1/messages", "anthropic", "messages"),
    ("POST", "/v1/messages/count_tokens", "anthropic", "messages/count_tokens"),
)


# Status a request is counted with when its client went away (nginx's convention).
CLIENT_CLOSED = 499


class Generation:
    """One loaded config and what was built from it."""

    def __init__(
        self,
        config: Config,
        store: Store,
        metrics: Metrics,
        base_urls: dict[str, str],
        lasting: Views | None = None,
        records: Records | None = None,
    ):
        self.config = config
        # None unless `tracing.enabled`: then the forwarder, each plugin and
        # the pipeline are wrapped in spans; otherwise nothing on the request
        # path knows tracing exists.
        self.tracing = tracing_for(config)
        self.forwarder = (
            Forwarder(config, base_urls)
            if self.tracing is None
            else self.tracing.forwarder(config, base_urls)
        )
        self.services = Services(
            config=config,
            store=store,
            metrics=metrics,
            records=records,
            lasting=lasting if lasting is not None else Views(),
        )
        self.plugins: list[Plugin] = [
            find_plugin(entry.name)(settings, self.services)
            for entry, settings in zip(config.pipeline, config.plugin_settings, strict=True)
        ]
        # Two chains of the same plugins: `pipeline` times each one (see
        # `_through`), `untimed` calls each straight into the next. A share
        # of requests (`metrics.plugin_time_share`) takes the first.
        timed: Handler = self.core
        untimed: Handler = self.core
        for plugin in reversed(self.plugins):
            timer = metrics.plugin_duration.labels(plugin.name)
            layer = plugin if self.tracing is None else self.tracing.layer(plugin, plugin.name)
            timed = functools.partial(_through, layer, timed, timer)
            untimed = functools.partial(_untimed, layer, untimed)
        if self.tracing is not None:
            timed, untimed = self.tracing.requests(timed), self.tracing.requests(untimed)
        self.pipeline, self.untimed = timed, untimed
        # A request is timed when 16 random bits fall below this.
        self.timed_below = round(config.metrics.plugin_time_share * (1 << 16))
        self.in_flight = 0  # requests running on this generation
        self.drained: asyncio.Event | None = None  # set when retired and idle

    async def start(self) -> None:
        if self.tracing is not None:
            self.tracing.start()
        await self.forwarder.start()
        for plugin in self.plugins:
            await plugin.start()
        self.services.metrics.prepare(self.config)  # this config's series, from 0

    async def close(self) -> None:
        for plugin in reversed(self.plugins):
            await plugin.stop()
        await self.forwarder.close()
        if self.tracing is not None:
            await self.tracing.close()

    async def core(self, request: web.Request) -> web.StreamResponse:
        """The innermost handler: pick the deployment (unless a router did) and
        forward. Its time is attributed (see `_through`), so that no plugin is
        charged for it."""
        started = perf_counter()
        try:
            exchange = await read_request(request)
            if exchange.endpoint == "models":
                return self.list_models(exchange, request)
            if not exchange.provider:
                found = self.config.resolve_model(exchange.model)
                if found is None:
                    raise ModelNotFound()  # never names it: the name is the client's
                public, model = found
                deployment = model.deployments[0]
                exchange.model = public
                exchange.provider = deployment.provider
                exchange.upstream_model = deployment.model
                exchange.region = deployment.region
            return await self.forwarder.forward(
                request,
                exchange,
                exchange.provider,
                exchange.upstream_model,
                exchange.upstream_timeouts,
            )
        finally:
            request[EXCHANGE].plugin_clock += perf_counter() - started

    def list_models(self, exchange: Exchange, request: web.Request) -> web.Response:
        return models_response(exchange, self.config.models, request, self._public_name)

    def _public_name(self, name: str) -> str | None:
        found = self.config.resolve_model(name)
        return found[0] if found is not None else None


def _untimed(
    plugin: Middleware, handler: Handler, request: web.Request
) -> Awaitable[web.StreamResponse]:
    """Run one plugin, untimed: no layer of its own on the request's way."""
    return plugin(request, handler)


async def _through(
    plugin: Middleware, handler: Handler, timer: Histogram, request: web.Request
) -> web.StreamResponse:
    """Run one plugin, observing the time spent in its own code: its total
    minus whatever the layers it awaited (however often) attributed."""
    exchange = request[EXCHANGE]  # set by Gateway.handle, the pipeline's one caller
    mark = exchange.plugin_clock
    started = perf_counter()
    try:
        return await plugin(request, handler)
    finally:
        spent = perf_counter() - started
        timer.observe(spent - (exchange.plugin_clock - mark))
        exchange.plugin_clock = mark + spent


class Gateway:
    """The running proxy: store, metrics, current generation, and its two apps."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.metrics = Metrics()
        self.store = instrument_store(
            open_store(config.store.url, **config.store.options), self.metrics
        )
        self.records = open_records(config.records.url, **config.records.options())
        self.base_urls: dict[str, str] = {}
        self.generation: Generation | None = None
        self._demo_runner: web.AppRunner | None = None
        self.on_reload: list[Callable[[Generation], Awaitable[None]]] = []
        # Plugin state that outlives reloads (see `Services.lasting`).
        self.lasting = Views()
        self.reloader = Reloader(self)
        self._retiring: set[asyncio.Task[None]] = set()
        # Set on SIGTERM while the listeners still serve: /readyz says 503.
        self.draining = False

    async def start(self) -> None:
        self.metrics.start()
        await self.store.start()
        try:
            # A database that does not answer yet is no error here (usage
            # waits for it); an old schema, or an SQLite file that cannot be
            # opened, is.
            await self.records.start()
        except RecordsError as e:
            raise ValueError(f"records: {e}") from None  # `serve` names the config file
        await self._start_demo()
        self.generation = Generation(
            self.config, self.store, self.metrics, self.base_urls, self.lasting, self.records
        )
        await self.generation.start()
        self.reloader.start()

    @property
    def views(self) -> Views:
        """What the current generation's plugins publish (`host.Host.views`)."""
        return self.generation.services.views if self.generation is not None else _NO_VIEWS

    async def reload(self, path: str | None = None) -> ReloadResult:
        """Load, validate and swap in the config file; on any problem keep the old one."""
        return await self.reloader.reload(path)

    async def close(self) -> None:
        await self.reloader.close()
        for task in list(self._retiring):
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        if self.generation is not None:
            await self.generation.close()
        if self._demo_runner is not None:
            await self._demo_runner.cleanup()
        await self.records.close()
        await self.store.close()
        self.metrics.stop()

    async def _start_demo(self) -> None:
        demo = [name for name, p in self.config.providers.items() if p.format == "demo"]
        if not demo or self._demo_runner is not None:
            return
        runner = web.AppRunner(demo_app(), access_log=None)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        await web.SockSite(runner, sock).start()
        self._demo_runner = runner
        for name in demo:
            self.base_urls[name] = f"http://127.0.0.1:{port}/v1"

    async def swap(self, config: Config) -> Generation:
        """Build and start a generation for `config`, then make it current.
        If that fails (a plugin refuses its settings, say), nothing changes:
        the current config and generation stay, and the error is raised.

        The store is kept; a config that changes `store` needs a restart."""
        previous = self.config
        self.config = config  # what the demo provider and the plugins read
        new: Generation | None = None
        try:
            await self._start_demo()
            await import_tracing(config.tracing)
            new = Generation(
                config, self.store, self.metrics, self.base_urls, self.lasting, self.records
            )
            await new.start()
        except BaseException:
            self.config = previous
            if new is not None:
                await new.close()
            raise
        old, self.generation = self.generation, new
        for callback in self.on_reload:
            await callback(new)
        if old is not None:
            # Requests still running on the old generation hold their own
            # reference; its sessions close once they let go.
            _retire(old, self._retiring)
        return new

    # -- the public app ----------------------------------------------------
    def public_app(self) -> web.Application:
        app = web.Application(handler_args={"max_field_size": 16384})
        for method, path, wire, endpoint in API_ROUTES:
            app.router.add_route(
                method,
                path,
                functools.partial(self.handle, wire, endpoint),
                expect_handler=expect_continue_later,
            )
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        if self.config.console.enabled:  # outside the API pipeline; see lunos_proxy/console
            from .console.app import console_app

            app.router.add_get("/console", _to_console)
            app.add_subapp("/console", console_app(self))
        # Never reads a body: a client waiting for 100 Continue gets the 404 or 405 instead.
        app.router.add_route(
            "*", "/{tail:.*}", self.not_found, expect_handler=expect_continue_later
        )
        return app

    async def handle(self, wire: str, endpoint: str, request: web.Request) -> web.StreamResponse:
        generation = self.generation
        assert generation is not None
        exchange = Exchange(
            client_addr=request.remote or "",
            user_agent=request.headers.get("User-Agent", "")[:200],
        )
        if endpoint == "models":  # one path for both SDKs
            wire = wire_for_path(request.path, request.headers)
        exchange.wire = wire
        exchange.endpoint = endpoint
        server = generation.config.server
        exchange.body_limit = server.max_body_bytes
        exchange.decompress = server.request_decompression
        request[EXCHANGE] = exchange
        metrics = self.metrics
        metrics.in_flight.inc()
        generation.in_flight += 1
        try:
            pipeline = (
                generation.pipeline
                if getrandbits(16) < generation.timed_below
                else generation.untimed
            )
            response = await pipeline(request)
            if not exchange.status:
                exchange.status = response.status
            return response
        except GatewayError as err:
            exchange.status = err.status
            if not exchange.error_type:
                exchange.error_type, exchange.error_code = err.error_class, err.code or err.type
            if request.writer.output_size:
                raise  # a streamed answer already began: aiohttp drops the connection
            return error_response(wire, err, exchange.response_headers)
        except Exception as exc:
            # The error boundary sits outside every plugin: whatever any of
            # them, the handler or the forwarder raised ends here. The try
            # costs nothing while nothing is raised.
            if exchange.error_code == "client_disconnected":  # set by the forwarder
                exchange.status = exchange.status or CLIENT_CLOSED
                raise
            if exchange.error_code != "internal_error":  # not already logged (logger plugin)
                log_internal_error(exc, request_id=exchange.request_id)
            exchange.status = 500
            exchange.error_type, exchange.error_code = "gateway", "internal_error"
            if request.writer.output_size:
                raise
            return error_response(wire, InternalError(), exchange.response_headers)
        finally:
            metrics.in_flight.dec()
            generation.in_flight -= 1
            if generation.drained is not None and not generation.in_flight:
                generation.drained.set()
            self.metrics.record(exchange, generation.config)
            # An observer that holds its Exchange (the meter's does) makes a
            # cycle: let go of it now, so that the request's objects are
            # freed with it rather than by the cycle collector.
            exchange.observers.clear()

    async def not_found(self, request: web.Request) -> web.Response:
        """An unknown path (404), or a known one asked with another method
        (405 with `Allow`). Neither message repeats the path or method."""
        wire = wire_for_path(request.path, request.headers)
        allowed = await allowed_methods(request)
        err = MethodNotAllowed(allowed) if allowed else NotFound("Unknown request URL.")
        return error_response(wire, err, {})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        if self.generation is None:
            return web.json_response({"status": "starting"}, status=503)
        if self.draining:
            return web.json_response({"status": "draining"}, status=503)
        try:
            await self.store.ping()  # instrumented: sets lunos_store_up
        except StoreError:
            return web.json_response({"status": "store unreachable"}, status=503)
        return web.json_response({"status": "ready"})

    # -- the admin app -----------------------------------------------------
    def admin_app(self) -> web.Application:
        from .admin import admin_app

        return admin_app(self)


async def allowed_methods(request: web.Request) -> set[str]:
    """The methods the other routes matching this request's path accept,
    asked from the catch-all route that answers for every path and method."""
    allowed: set[str] = set()
    catch_all = request.match_info.route.resource
    for resource in request.app.router.resources():
        if resource is catch_all:
            continue
        match, methods = await resource.resolve(request)
        if match is None:
            allowed |= methods
    return allowed


async def _to_console(request: web.Request) -> web.Response:
    raise web.HTTPMovedPermanently("/console/")


def _retire(generation: Generation, retiring: set[asyncio.Task[None]]) -> None:
    """Close a generation a reload replaced once its last request is done:
    a stream that outlives any fixed grace keeps its upstream session, its
    lease renewals and its ledger until it ends."""

    async def later() -> None:
        try:
            if generation.in_flight:
                generation.drained = asyncio.Event()
                await generation.drained.wait()
        finally:
            # Also when the gateway closes first: sessions are released either way.
            await generation.close()

    task = asyncio.get_running_loop().create_task(later())
    retiring.add(task)
    task.add_done_callback(retiring.discard)
