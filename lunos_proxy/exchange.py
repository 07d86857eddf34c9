"""The per-request state that plugins share, and the observers of a response.

One `Exchange` is made for every request and stored on it under
`EXCHANGE`. Plugins talk to each other only through it: auth sets the
principal, the router sets the deployment, the forwarder sets timings and
status, the meter sets usage and cost, the logger reads all of it.

The request body is held here as bytes so that the forwarder can send it
on untouched; it is content and must never be copied into a log record,
the store or a metric.
"""

from __future__ import annotations

import time
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Protocol

import msgspec
from aiohttp import web

if TYPE_CHECKING:
    from .config import Config, Timeouts

__all__ = [
    "EXCHANGE",
    "Exchange",
    "Observer",
    "Principal",
    "StreamFilter",
    "Timings",
    "Usage",
    "exchange_of",
    "model_allowed",
]


class Principal(msgspec.Struct, kw_only=True):
    """Who is calling: set by the auth plugin."""

    account_id: str
    key_id: str
    key_prefix: str = ""
    plan: str | None = None
    allowed_models: list[str] | None = None
    allowed_regions: list[str] | None = None
    allowed_providers: list[str] | None = None
    # The account's own budget alert thresholds (fractions), if it set any.
    alert_thresholds: list[float] | None = None


def model_allowed(principal: Principal | None, *names: str) -> bool:
    """Whether the caller's key may use a model known by any of `names` (the
    name it sent, the public name): its `allowed_models` are shell wildcards;
    no principal or no list admits every model."""
    patterns = principal.allowed_models if principal is not None else None
    if patterns is None:
        return True
    return any(fnmatchcase(name, p) for p in patterns for name in names)


class Usage(msgspec.Struct, kw_only=True):
    """Token usage of one response; `source` says where the numbers came from."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_creation_tokens: int = 0
    reasoning_tokens: int = 0
    source: str = "none"  # "reported" | "estimated" | "none"


class Timings(msgspec.Struct, kw_only=True):
    """Monotonic instants (seconds, `time.perf_counter()`); 0.0 means 'not reached'."""

    received: float = 0.0
    upstream_start: float = 0.0
    first_byte: float = 0.0
    last_byte: float = 0.0


class Observer(Protocol):
    """Sees a streamed response as it passes, without holding it.

    The forwarder calls `chunk` with each piece of the upstream body in the
    order it arrived (pieces split SSE events arbitrarily), then `end` once:
    `aborted` is true when the client went away or the provider cut the
    stream. Both must be cheap and must not raise; keep only the fields you
    need (a usage count), never the text. The gateway lets go of the
    observers when the request ends, so one may hold its Exchange.

        class CountBytes:
            def __init__(self) -> None:
                self.n = 0
            def chunk(self, data: bytes) -> None:
                self.n += len(data)
            def end(self, aborted: bool) -> None:
                pass

        exchange_of(request).observers.append(CountBytes())
    """

    def chunk(self, data: bytes) -> None: ...

    def end(self, aborted: bool) -> None: ...


class StreamFilter(Protocol):
    """Rewrites a streamed response on its way to the client.

    Used only where the client must see something other than the provider's
    bytes (the meter removes a usage chunk it asked for itself). `feed`
    returns what to send now; `flush` returns what is left at the end.
    """

    def feed(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


class Exchange:
    """Everything known about one request, filled in as it travels."""

    __slots__ = (
        "_public",
        "_public_of",
        "attempts",
        "body",
        "body_limit",
        "bytes_in",
        "bytes_out",
        "client_addr",
        "cost_micros",
        "decompress",
        "deployment",
        "deployments_tried",
        "endpoint",
        "error_code",
        "error_type",
        "extra",
        "fallbacks",
        "filters",
        "max_tokens",
        "model",
        "observers",
        "parsed",
        "plugin_clock",
        "principal",
        "provider",
        "provider_wire",
        "region",
        "request_id",
        "response_headers",
        "served_model",
        "served_public",
        "status",
        "stream",
        "timings",
        "token_estimate",
        "trace_id",
        "upstream_model",
        "upstream_timeouts",
        "usage",
        "user_agent",
        "wire",
    )

    def __init__(self, *, client_addr: str = "", user_agent: str = "") -> None:
        self.request_id = ""
        # The request's trace (32 hex digits) when tracing records it, so a
        # log line leads to its trace; "" otherwise.
        self.trace_id = ""
        self.wire = "openai"  # the wire format the client speaks: "openai" | "anthropic"
        self.endpoint = ""  # e.g. "chat/completions", "messages"
        self.body = b""
        self.body_limit = 16 * 1024 * 1024
        self.parsed = False  # body read and its head fields decoded (see parse.py)
        self.decompress = False  # accept gzip/deflate bodies (server.request_decompression)
        self.model = ""  # the public model name the client asked for
        self._public_of = self._public = ""  # see public_model
        self.stream = False
        self.max_tokens: int | None = None
        self.principal: Principal | None = None
        self.deployment = ""
        self.provider = ""
        # The wire format the provider speaks, set by the forwarder: another
        # than `wire` when the exchange is translated.
        self.provider_wire = ""
        self.region = ""
        self.upstream_model = ""
        # This attempt's limits, set by the router (a deployment's own
        # timeouts, capped by the request's deadline); None: the provider's.
        self.upstream_timeouts: Timeouts | None = None
        self.served_model = ""
        self.served_public = ""  # the public model that answered (a fallback's), when routed
        self.attempts = 0
        self.fallbacks = 0
        self.deployments_tried: list[str] = []
        self.token_estimate = 0
        self.usage = Usage()
        self.cost_micros = 0
        self.timings = Timings(received=time.perf_counter())
        self.status = 0
        self.error_type = ""
        self.error_code = ""
        self.client_addr = client_addr
        self.user_agent = user_agent
        self.bytes_in = 0
        self.bytes_out = 0
        self.observers: list[Observer] = []
        self.filters: list[StreamFilter] = []
        # Headers every response to this request carries (x-request-id,
        # x-ratelimit-*): applied to streamed, plain and error responses alike.
        self.response_headers: dict[str, str] = {}
        # Small per-plugin state, keyed by plugin name. Metadata only.
        self.extra: dict[str, object] = {}
        # Seconds of this request already attributed to a pipeline layer;
        # lets each plugin's own time be measured apart from what it awaits.
        self.plugin_clock = 0.0

    def public_model(self, config: Config) -> str:
        """What logs, metrics and limits call the requested model: its
        configured public name (an alias resolved), "unknown" for a name the
        config does not know (never a client's string), "" when none was
        named. Resolved once per model name the request carries."""
        model = self.model
        if model != self._public_of:
            found = config.resolve_model(model) if model else None
            self._public = found[0] if found is not None else ("unknown" if model else "")
            self._public_of = model
        return self._public

    def notify_chunk(self, data: bytes) -> None:
        for observer in self.observers:
            observer.chunk(data)

    def notify_end(self, aborted: bool) -> None:
        for observer in self.observers:
            observer.end(aborted)


EXCHANGE: web.RequestKey[Exchange] = web.RequestKey("lunos_exchange", Exchange)


def exchange_of(request: web.Request) -> Exchange:
    """The request's Exchange, made on first use (so a plugin works in any app)."""
    try:
        return request[EXCHANGE]
    except KeyError:
        ex = Exchange(
            client_addr=request.remote or "",
            user_agent=request.headers.get("User-Agent", "")[:200],
        )
        request[EXCHANGE] = ex
        return ex
