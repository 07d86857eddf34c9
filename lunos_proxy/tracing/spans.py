"""The spans of a traced request, and what each one holds.

One module past 400 lines: the request, plugin and attempt wrappers share
the request's trace and the rules for what an attribute may hold, and
change together (what an answer says about itself is read in `facts`).

Imported only when tracing is on (see the package docstring). A request
gets, nested as the pipeline runs:

    POST /v1/chat/completions        SERVER   the whole request
      plugin request_id              INTERNAL one per plugin, inside the one before
        plugin auth ...
          plugin router
            chat gpt-4o-2024-08-06   CLIENT   one per upstream attempt
            chat gpt-4o-mini         CLIENT   (a retry, a fallback)

Attributes, all from what Lunos configured, decided or counted:
- request span: ``http.request.method``, ``http.route``,
  ``http.response.status_code``, ``gen_ai.operation.name``,
  ``gen_ai.request.model`` (the configured public model, "unknown" for a
  name the config does not know), ``gen_ai.provider.name``,
  ``gen_ai.response.model``, ``gen_ai.response.finish_reasons``,
  ``gen_ai.usage.input_tokens`` / ``output_tokens`` (when the meter counted
  them), ``lunos.deployment``, ``lunos.attempts``, ``lunos.fallbacks``,
  ``lunos.stream``, ``error.type`` and ``lunos.error_class``.
- plugin span: ``lunos.plugin``, and ``error.type`` when it refused.
- attempt span: ``gen_ai.operation.name``, ``gen_ai.provider.name``,
  ``gen_ai.request.model`` (the deployment's configured model),
  ``server.address`` / ``server.port`` (the provider's configured URL),
  ``lunos.provider``, ``lunos.deployment``, ``lunos.model`` (the public
  model this attempt serves, a fallback's own), ``lunos.attempt``,
  ``lunos.fallback`` (fallback models passed so far), and at its end
  ``http.response.status_code``, ``error.type``, ``lunos.retryable``,
  ``gen_ai.response.model``, ``gen_ai.response.finish_reasons`` and usage.

Never: a body, a header value, an error message (ours quote the client's
model name; a provider's can quote the prompt), a provider error's
type/code/param, a client's tracestate, a request id (a client may choose
it), an account, key or address. Exceptions are never recorded (their
text is a message) and a status has no description. What a provider
reports is kept only when it is a plain identifier (see `facts`).
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from yarl import URL

from ..config import Config, Timeouts
from ..errors import GatewayError, UpstreamError, UpstreamStatus
from ..exchange import Exchange, exchange_of
from ..forward import Forwarder, Upstream
from .facts import IDENTIFIER, ResponseFacts
from .settings import TracingConfig

__all__ = ["TRACE", "RequestTrace", "TracedForwarder", "Tracing", "otlp_exporter"]

# Our endpoint → the GenAI convention's gen_ai.operation.name.
_OPERATIONS = {
    "chat/completions": "chat",
    "messages": "chat",
    "responses": "chat",
    "completions": "text_completion",
    "embeddings": "embeddings",
    "messages/count_tokens": "count_tokens",
    "models": "list_models",
}
# A provider's wire format → gen_ai.provider.name.
_PROVIDERS = {
    "openai": "openai",
    "anthropic": "anthropic",
    "azure": "azure.ai.openai",
    "gemini": "gcp.gemini",
    "demo": "lunos.demo",
}
# Codes the forwarder sets on an answer that started and then failed.
_STREAM_ERRORS = frozenset(
    {"upstream_invalid", "client_disconnected", "stream_stalled", "stream_broken"}
)
# How a request ends when its client goes away (aiohttp cancels the handler,
# or a write to the closed connection fails).
_GONE = (asyncio.CancelledError, ConnectionResetError)
_propagator = TraceContextTextMapPropagator()


def otlp_exporter(settings: TracingConfig) -> SpanExporter:
    """The exporter a generation's spans go to (tests put an in-memory one here)."""
    return OTLPSpanExporter(
        endpoint=settings.traces_url,
        headers=settings.headers or None,
        timeout=settings.export_timeout_seconds,
    )


class RequestTrace:
    """One request's spans: the innermost layer's (the parent of whatever
    starts next; first the request span) and the attempt in flight."""

    __slots__ = ("attempt", "current", "facts", "recording")

    def __init__(self, root: Span) -> None:
        self.current = root
        self.recording = root.is_recording()
        self.attempt: Span | None = None
        self.facts: ResponseFacts | None = None  # the last attempt's


TRACE: web.RequestKey[RequestTrace] = web.RequestKey("lunos_trace", RequestTrace)


class Tracing:
    """A generation's tracing: its provider, exporter thread and the wrappers
    `Generation` composes the pipeline from."""

    def __init__(self, settings: TracingConfig, config: Config) -> None:
        self.settings = settings
        self.config = config
        self.provider: TracerProvider | None = None
        self.tracer: trace.Tracer = trace.NoOpTracer()

    def start(self) -> None:
        s = self.settings
        provider = TracerProvider(
            sampler=ParentBased(TraceIdRatioBased(s.sample_ratio)),
            resource=Resource.create({"service.name": s.service_name}),
        )
        # Spans wait in a bounded queue; a thread of the processor's own
        # exports them, so a slow or absent collector never blocks the loop.
        provider.add_span_processor(
            BatchSpanProcessor(
                otlp_exporter(s),
                max_queue_size=s.max_queue_size,
                max_export_batch_size=min(512, s.max_queue_size),
                export_timeout_millis=s.export_timeout_seconds * 1000,
            )
        )
        self.provider = provider
        self.tracer = provider.get_tracer("lunos_proxy")

    async def close(self) -> None:
        """Export what is queued and stop the exporter thread (off the loop)."""
        provider, self.provider = self.provider, None
        self.tracer = trace.NoOpTracer()
        if provider is not None:
            await asyncio.to_thread(provider.shutdown)

    # -- the wrappers ------------------------------------------------------
    def requests(self, pipeline: Handler) -> Handler:
        """The pipeline inside a request span."""
        return functools.partial(self._request, pipeline)

    def layer(self, plugin: Middleware, name: str) -> Middleware:
        """A plugin inside a span of its own."""
        return _Layer(self, plugin, name)

    def forwarder(self, config: Config, base_urls: dict[str, str]) -> Forwarder:
        return TracedForwarder(config, base_urls, self)

    async def _request(self, pipeline: Handler, request: web.Request) -> web.StreamResponse:
        exchange = exchange_of(request)
        traceparent = request.headers.get("traceparent")
        # Only the traceparent is read: the client's tracestate is not ours to record.
        parent = _propagator.extract({"traceparent": traceparent}) if traceparent else None
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else ""
        span = self.tracer.start_span(
            f"{request.method} {route}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": request.method,
                "http.route": route,
                "gen_ai.operation.name": _operation(exchange),
            },
        )
        rt = RequestTrace(span)
        request[TRACE] = rt
        if rt.recording:  # a trace sampled out is exported nowhere: nothing to point to
            exchange.trace_id = format(span.get_span_context().trace_id, "032x")
        status = 0
        error: BaseException | None = None
        try:
            response = await pipeline(request)
            status = exchange.status or response.status
            return response
        except GatewayError as e:
            status, error = e.status, e
            raise
        except BaseException as e:
            error = e
            if isinstance(e, Exception) and exchange.error_code != "client_disconnected":
                status = 500  # what the gateway's error boundary answers
            raise
        finally:
            if rt.recording:
                self._end_request(span, rt, exchange, status, error)
            span.end()

    def _end_request(
        self,
        span: Span,
        rt: RequestTrace,
        exchange: Exchange,
        status: int,
        error: BaseException | None,
    ) -> None:
        found = self.config.resolve_model(exchange.model) if exchange.model else None
        attrs: dict[str, Any] = {
            "gen_ai.request.model": found[0] if found is not None else "unknown",
            "lunos.attempts": exchange.attempts,
            "lunos.fallbacks": exchange.fallbacks,
            "lunos.stream": exchange.stream,
        }
        if status:
            attrs["http.response.status_code"] = status
        if exchange.provider:
            attrs["gen_ai.provider.name"] = self._provider_name(exchange.provider)
            attrs["lunos.deployment"] = _deployment(exchange)
        if rt.facts is not None:
            rt.facts.put(attrs)
        _usage(exchange, attrs)
        failed = _error(exchange, error, attrs)
        span.set_attributes(attrs)
        # A 4xx is the client's (the HTTP server convention); a stream the
        # provider broke after its 200 is a failure.
        if failed and (status >= 500 or not status or error is None):
            span.set_status(Status(StatusCode.ERROR))

    def _provider_name(self, provider: str) -> str:
        p = self.config.providers.get(provider)
        return _PROVIDERS.get(p.format, p.format) if p is not None else "unknown"


class _Layer:
    """A plugin run inside a span named for it."""

    __slots__ = ("name", "plugin", "span_name", "tracing")

    def __init__(self, tracing: Tracing, plugin: Middleware, name: str) -> None:
        self.tracing = tracing
        self.plugin = plugin
        self.name = name
        self.span_name = f"plugin {name}"

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        rt = request.get(TRACE)
        if rt is None or not rt.recording:
            return await self.plugin(request, handler)
        parent = rt.current
        span = self.tracing.tracer.start_span(
            self.span_name,
            context=trace.set_span_in_context(parent),
            attributes={"lunos.plugin": self.name},
        )
        rt.current = span
        try:
            return await self.plugin(request, handler)
        except BaseException as e:
            attrs: dict[str, Any] = {}
            failed = _error(exchange_of(request), e, attrs)
            span.set_attributes(attrs)
            if failed and (not isinstance(e, GatewayError) or e.status >= 500):
                span.set_status(Status(StatusCode.ERROR))
            raise
        finally:
            rt.current = parent
            span.end()


class TracedForwarder(Forwarder):
    """The forwarder with a span per upstream attempt, whose context the
    provider receives as its ``traceparent``."""

    def __init__(self, config: Config, base_urls: dict[str, str], tracing: Tracing) -> None:
        super().__init__(config, base_urls)
        self.tracing = tracing
        # What every attempt to a provider says about it, from its config.
        self.about: dict[str, dict[str, Any]] = {}
        for name, upstream in self.upstreams.items():
            url = URL(upstream.adapter.base_url)
            fmt = upstream.config.format
            self.about[name] = {
                "gen_ai.provider.name": _PROVIDERS.get(fmt, fmt),
                "lunos.provider": name,
                "server.address": url.host or "",
                "server.port": url.port or 0,
            }

    def request_headers(self, request: web.Request, upstream: Upstream) -> dict[str, str]:
        headers = super().request_headers(request, upstream)
        rt = request.get(TRACE)
        if rt is not None and rt.attempt is not None:
            headers["traceparent"] = _traceparent(rt.attempt.get_span_context())
        return headers

    async def forward(
        self,
        request: web.Request,
        exchange: Exchange,
        provider: str,
        upstream_model: str,
        timeouts: Timeouts | None = None,
    ) -> web.StreamResponse:
        rt = request.get(TRACE)
        if rt is None:
            return await super().forward(request, exchange, provider, upstream_model, timeouts)
        operation = _operation(exchange)
        # Unsampled, the span is a cheap non-recording one: its context still
        # carries the trace to the provider.
        span = self.tracing.tracer.start_span(
            f"{operation} {upstream_model}",
            context=trace.set_span_in_context(rt.current),
            kind=SpanKind.CLIENT,
            attributes={
                **self.about[provider],
                "gen_ai.operation.name": operation,
                "gen_ai.request.model": upstream_model,
                "lunos.deployment": exchange.deployment or f"{provider}/{upstream_model}",
                "lunos.model": exchange.served_public or exchange.model,
                "lunos.attempt": exchange.attempts + 1,
                "lunos.fallback": exchange.fallbacks,
            } if rt.recording else None,
        )
        facts: ResponseFacts | None = None
        if rt.recording:
            facts = ResponseFacts()
            exchange.observers.append(facts)
        rt.attempt = span
        error: BaseException | None = None
        try:
            return await super().forward(request, exchange, provider, upstream_model, timeouts)
        except BaseException as e:
            error = e
            raise
        finally:
            rt.attempt = None
            if facts is not None:
                exchange.observers.remove(facts)
                self._end_attempt(span, rt, exchange, facts, error)
            span.end()

    @staticmethod
    def _end_attempt(
        span: Span,
        rt: RequestTrace,
        exchange: Exchange,
        facts: ResponseFacts,
        error: BaseException | None,
    ) -> None:
        attrs: dict[str, Any] = {}
        if isinstance(error, UpstreamError):
            attrs["lunos.retryable"] = error.retryable
            if isinstance(error, UpstreamStatus):
                attrs["http.response.status_code"] = error.status
        elif error is None:
            attrs["http.response.status_code"] = exchange.status
            rt.facts = facts
            facts.put(attrs)
            _usage(exchange, attrs)
        # A client span's 4xx is an error too (the HTTP client convention).
        if _error(exchange, error, attrs):
            span.set_status(Status(StatusCode.ERROR))
        span.set_attributes(attrs)


def _traceparent(sc: SpanContext) -> str:
    return f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{int(sc.trace_flags):02x}"


def _operation(exchange: Exchange) -> str:
    return _OPERATIONS.get(exchange.endpoint, "unknown")


def _deployment(exchange: Exchange) -> str:
    return exchange.deployment or f"{exchange.provider}/{exchange.upstream_model}"


def _usage(exchange: Exchange, attrs: dict[str, Any]) -> None:
    usage = exchange.usage
    if usage.source != "none":
        attrs["gen_ai.usage.input_tokens"] = usage.input_tokens
        attrs["gen_ai.usage.output_tokens"] = usage.output_tokens


def _error(exchange: Exchange, error: BaseException | None, attrs: dict[str, Any]) -> bool:
    """Set ``error.type`` (and ``lunos.error_class``) from our own names only;
    True when the operation failed (a client going away is not a failure)."""
    if error is None or isinstance(error, _GONE):
        if exchange.error_type and exchange.error_code in _STREAM_ERRORS:
            attrs["error.type"] = exchange.error_code
            attrs["lunos.error_class"] = exchange.error_type
            return exchange.error_type == "provider"
        if error is not None:
            attrs["error.type"] = "cancelled"
        return False
    if isinstance(error, GatewayError):
        # An UpstreamStatus's own code and type are the provider's words.
        code = type(error).code if isinstance(error, UpstreamStatus) else error.code
        if code is None or IDENTIFIER.fullmatch(code) is None:
            code = type(error).code or "gateway_error"
        attrs["error.type"] = code
        attrs["lunos.error_class"] = error.error_class
    else:  # a bug: its class names it, its message may quote anything
        attrs["error.type"] = type(error).__qualname__
        attrs["lunos.error_class"] = "gateway"
    return True
