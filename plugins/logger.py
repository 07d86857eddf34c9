"""One JSON line per request, built from metadata only.

The line is a `RequestRecord`: a fixed set of fields (ids, names taken from
the config, numbers, a status, an error from a fixed taxonomy). There is no
free-text field, so there is nowhere for a prompt, a completion, a tool
argument or a provider's error message to go. Strings that come from
outside are kept only from a known set or shape: a provider's error type
and code only when its format's documentation lists them
(`provider_error_value`, else `other`: a provider may put a piece of the
prompt there, and an identifier-like piece looks like any code), the
model name it reports only when it looks like an identifier
(`safe_token`); the user agent is cut short. The client address is
written per `address` setting:

    full       192.0.2.17            2001:db8:1:2::5
    truncated  192.0.2.0/24          2001:db8:1::/48
    hashed     a1b2c3d4e5f60718      (HMAC-SHA256 with `address_hash_key`)
    dropped    (no field)

It sits right after `request_id` so that every refusal by the plugins
inside it (auth, limits, routing) and every internal error is logged: it
catches, records, and re-raises. An internal error adds the exception's
type and stack frames, never its message or local variables.

One module past 400 lines: the record, the vocabularies that bound what
its fields may hold and the plugin that fills it are one privacy decision,
reviewed together.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import ipaddress
import time
from collections.abc import Callable
from typing import Any, Literal

import msgspec
import structlog
from aiohttp import web

from lunos_proxy.errors import GatewayError, UpstreamStatus
from lunos_proxy.exchange import Exchange, exchange_of
from lunos_proxy.logs import RecordWriter, safe_stack
from lunos_proxy.plugin import Handler, Plugin, Services
from lunos_proxy.views import REQUEST_LOG

__all__ = [
    "ERROR_CODES",
    "PROVIDER_ERROR_CODES",
    "PROVIDER_ERROR_TYPES",
    "Logger",
    "RequestRecord",
    "classify",
    "provider_error_value",
    "safe_token",
]

# The error taxonomy: every logged error is one class and one of its codes.
# A code that is not listed is logged as "other", so the set stays fixed.
ERROR_CODES: dict[str, frozenset[str]] = {
    "caller": frozenset(
        {
            "bad_request",
            "invalid_api_key",
            "model_not_found",
            "not_found",
            "method_not_allowed",
            "request_too_large",
            "unsupported_parameter",
            "unsupported_content_encoding",
            "client_disconnected",
            "other",
        }
    ),
    "policy": frozenset(
        {
            "permission_denied",
            "rate_limit_exceeded",
            "insufficient_quota",
            "banned",
            "other",
        }
    ),
    "provider": frozenset(
        {
            "upstream_unreachable",
            "upstream_timeout",
            "upstream_status",
            "upstream_error",
            "stream_stalled",
            "stream_broken",
            "upstream_invalid",
            "all_deployments_down",
            "other",
        }
    ),
    "gateway": frozenset(
        {"internal_error", "service_unavailable", "store_unavailable", "server_error", "other"}
    ),
}
# Status a client that went away is logged with (nginx's convention).
CLIENT_CLOSED = 499

_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:/@+-")


def safe_token(value: object, limit: int = 64) -> str | None:
    """`value` if it is a short identifier-like string, else None (dropped)."""
    if not isinstance(value, str) or not value or len(value) > limit:
        return None
    return value if _TOKEN_CHARS.issuperset(value) else None


# A provider's error type and code as its format documents them, per
# provider wire format; anything else is logged as "other".
PROVIDER_ERROR_TYPES: dict[str, frozenset[str]] = {
    # OpenAI (and the OpenAI-format providers: Azure, compatible servers).
    "openai": frozenset(
        "invalid_request_error authentication_error permission_error not_found_error "
        "conflict_error unprocessable_entity_error rate_limit_error insufficient_quota "
        "requests tokens server_error service_unavailable_error api_error".split()
    ),
    "anthropic": frozenset(
        "invalid_request_error authentication_error billing_error permission_error "
        "not_found_error request_too_large rate_limit_error api_error timeout_error "
        "overloaded_error".split()
    ),
    # Gemini's `status`: the google.rpc status names.
    "gemini": frozenset(
        "CANCELLED UNKNOWN INVALID_ARGUMENT DEADLINE_EXCEEDED NOT_FOUND ALREADY_EXISTS "
        "PERMISSION_DENIED UNAUTHENTICATED RESOURCE_EXHAUSTED FAILED_PRECONDITION ABORTED "
        "OUT_OF_RANGE UNIMPLEMENTED INTERNAL UNAVAILABLE DATA_LOSS".split()
    ),
}
PROVIDER_ERROR_CODES: dict[str, frozenset[str]] = {
    "openai": frozenset(
        "invalid_api_key invalid_authentication account_deactivated invalid_organization "
        "invalid_project unsupported_country_region_territory model_not_found "
        "context_length_exceeded rate_limit_exceeded insufficient_quota "
        "billing_hard_limit_reached server_is_overloaded slow_down content_policy_violation "
        "content_filter invalid_prompt invalid_value invalid_type unsupported_value "
        "unsupported_parameter unknown_parameter missing_required_parameter "
        "string_above_max_length array_above_max_length empty_array integer_below_min_value "
        "integer_above_max_value decimal_below_min_value decimal_above_max_value "
        "invalid_image_url invalid_image DeploymentNotFound".split()  # the last: Azure's
    ),
    # Anthropic's errors have no code; Gemini's numeric one is the HTTP status.
}


def provider_error_value(
    value: str | None, provider_wire: str, known: dict[str, frozenset[str]]
) -> str | None:
    """`value` (a provider error's type or code, as its body said it) if
    `known` lists it for the provider's format or it is an HTTP status
    (Azure's and Gemini's codes); None if there is none; "other" for
    anything else."""
    if not value:
        return None
    if value in known.get(provider_wire, ()):
        return value
    if len(value) == 3 and value.isascii() and value.isdigit() and value[0] in "12345":
        return value
    return "other"


def classify(error_type: str, code: str | None) -> tuple[str, str]:
    """A (class, code) pair from the taxonomy; unknowns become gateway/other."""
    codes = ERROR_CODES.get(error_type)
    if codes is None:
        return "gateway", "other"
    if code is None or code not in codes:
        return error_type, "other"
    return error_type, code


def _classify_error(err: GatewayError) -> tuple[str, str]:
    if isinstance(err, UpstreamStatus):
        return "provider", "upstream_status"
    code = err.code or ("bad_request" if err.status == 400 else err.type)
    return classify(err.error_class, code)


class RequestRecord(msgspec.Struct, omit_defaults=True):
    """Everything a request's log line may say. Adding a field is a privacy
    decision: it must be an id, a config name, a number or a fixed code."""

    request_id: str = ""
    trace_id: str | None = None  # when tracing recorded the request
    account_id: str | None = None
    key_id: str | None = None
    key_prefix: str | None = None
    endpoint: str = ""
    wire: str | None = None  # the client's wire format
    provider_wire: str | None = None  # the provider's; another one when translated
    stream: bool = False
    model: str | None = None  # public name from the config; "unknown" otherwise
    model_served: str | None = None
    provider: str | None = None
    deployment: str | None = None
    region: str | None = None
    status: int = 0
    error_type: str | None = None
    error_code: str | None = None
    upstream_status: int | None = None
    provider_error_type: str | None = None
    provider_error_code: str | None = None
    attempts: int = 0
    fallbacks: int = 0
    deployments_tried: list[str] | None = None
    duration_ms: float = 0.0
    upstream_ms: float | None = None
    ttfb_ms: float | None = None
    overhead_ms: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_creation_tokens: int = 0
    reasoning_tokens: int = 0
    usage_source: str | None = None
    cost_micros: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    client_addr: str | None = None
    user_agent: str | None = None
    exception: dict[str, Any] | None = None


AddressMode = Literal["full", "truncated", "hashed", "dropped"]


class Logger(Plugin):
    name = "logger"

    class Settings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
        # How the client address is written: full | truncated (/24, /48) |
        # hashed (keyed, so equal addresses are linkable but not readable) | dropped.
        address: AddressMode = "truncated"
        # The HMAC key for `address: hashed`; use ${LUNOS_LOG_ADDRESS_KEY}.
        address_hash_key: str = ""
        user_agent_length: int = 64
        # Level of a successful request's line; errors are warning (provider,
        # gateway) or info (caller, policy). An internal error is always error.
        level: Literal["debug", "info"] = "info"
        logger_name: str = "lunos.request"

        def __post_init__(self) -> None:
            if self.address == "hashed" and len(self.address_hash_key) < 16:
                raise ValueError("address: hashed needs an address_hash_key of 16+ characters")
            if not 0 <= self.user_agent_length <= 512:
                raise ValueError("user_agent_length must be between 0 and 512")

    def __init__(self, settings: Settings, services: Services) -> None:
        super().__init__(settings, services)
        # A concrete logger (not the lazy proxy, which rebuilds one per call),
        # configured as logging is when the plugin is built.
        self.log = structlog.get_logger(settings.logger_name).bind()
        self.lines = RecordWriter(self.log)
        self.address = _address_writer(settings.address, settings.address_hash_key.encode())
        self.user_agent = _remembered(
            functools.partial(_user_agent, length=settings.user_agent_length)
        )
        services.views[REQUEST_LOG] = self

    @property
    def address_mode(self) -> str:
        """`lunos_proxy.views.RequestLogView`: how client addresses are written."""
        mode: str = self.settings.address
        return mode

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        exchange = exchange_of(request)
        try:
            response = await handler(request)
        except GatewayError as err:
            error, code = _classify_error(err)
            record = self.record(exchange, err.status, error, code)
            if isinstance(err, UpstreamStatus):
                record.upstream_status = err.status
                wire = exchange.provider_wire
                record.provider_error_type = provider_error_value(
                    err.provider_type, wire, PROVIDER_ERROR_TYPES
                )
                record.provider_error_code = provider_error_value(
                    err.provider_code, wire, PROVIDER_ERROR_CODES
                )
            self.write(record, "warning" if error in ("provider", "gateway") else "info")
            raise
        except asyncio.CancelledError:
            # The client went away: marked on the Exchange too, so that the
            # request metrics recorded after us agree with the log line.
            exchange.status = exchange.status or CLIENT_CLOSED
            if not exchange.error_type:
                exchange.error_type, exchange.error_code = "caller", "client_disconnected"
            record = self.record(exchange, CLIENT_CLOSED, "caller", "client_disconnected")
            self.write(record, "info")
            raise
        except Exception as exc:
            if exchange.error_code == "client_disconnected":  # a write to a client gone
                record = self.record(exchange, CLIENT_CLOSED, "caller", "client_disconnected")
                self.write(record, "info")
                raise
            record = self.record(exchange, 500, "gateway", "internal_error")
            record.exception = safe_stack(exc)
            self.write(record, "error")
            # Marked as logged: the gateway's error boundary, which turns
            # the exception into a 500 in the client's shape, logs it no more.
            exchange.error_type, exchange.error_code = "gateway", "internal_error"
            raise
        status = exchange.status or response.status
        if exchange.error_type:
            error, code = classify(exchange.error_type, exchange.error_code)
            record = self.record(exchange, status, error, code)
            self.write(record, "warning" if error in ("provider", "gateway") else "info")
        else:
            self.write(self.record(exchange, status, None, None), self.settings.level)
        return response

    def write(self, record: RequestRecord, level: str) -> None:
        try:
            self.lines.log_record("request", level, record)
        except Exception:
            # stdout gone (a closed pipe), a renderer that failed: losing a
            # log line must not fail the request.
            pass

    def record(
        self, ex: Exchange, status: int, error: str | None, code: str | None
    ) -> RequestRecord:
        config = self.services.config
        t = ex.timings
        end = t.last_byte or time.perf_counter()
        total = end - t.received
        upstream = ttfb = overhead = None
        if t.upstream_start:
            up = end - t.upstream_start
            upstream, overhead = round(up * 1000, 3), round(max(0.0, total - up) * 1000, 3)
            if t.first_byte:
                ttfb = round((t.first_byte - t.upstream_start) * 1000, 3)
        p = ex.principal
        u = ex.usage
        served = ex.served_model
        # Positional, in the fields' order (a test holds the order): a keyword
        # call to a Struct this wide first builds a dict of its arguments,
        # which costs nearly as much as the rest of the record.
        return RequestRecord(
            ex.request_id,
            ex.trace_id or None,
            p.account_id if p else None,
            p.key_id if p else None,
            (p.key_prefix or None) if p else None,
            ex.endpoint,
            ex.wire or None,
            ex.provider_wire or None,
            ex.stream,
            ex.public_model(config) or None,  # model
            # model_served: the provider's name for the model when it looks
            # like one; the one asked for (from the config) when it is that one.
            (served if served == ex.upstream_model else safe_token(served, 100))
            or ex.upstream_model
            or None,
            ex.provider or None,
            ex.deployment or None,
            ex.region or None,
            status,
            error,  # error_type
            code,  # error_code
            None,  # upstream_status, provider_error_type, provider_error_code:
            None,  # set by the caller for a provider's error
            None,
            ex.attempts,
            ex.fallbacks,
            ex.deployments_tried or None,  # written before the Exchange changes
            round(total * 1000, 3),  # duration_ms
            upstream,
            ttfb,
            overhead,
            u.input_tokens,
            u.output_tokens,
            u.cached_input_tokens,
            u.cache_creation_tokens,
            u.reasoning_tokens,
            u.source if u.source != "none" else None,  # usage_source
            ex.cost_micros,
            ex.bytes_in,
            ex.bytes_out,
            self.address(ex.client_addr),  # client_addr
            self.user_agent(ex.user_agent),
        )


def _user_agent(value: str, length: int) -> str | None:
    if not value or not length:
        return None
    cut = value[:length]
    return cut if cut.isprintable() and cut.isascii() else None


def _address_writer(mode: AddressMode, key: bytes) -> Callable[[str], str | None]:
    if mode == "full":
        return lambda addr: addr or None
    if mode == "dropped":
        return lambda addr: None
    if mode == "hashed":

        def hashed(addr: str) -> str | None:
            if not addr:
                return None
            return hmac.new(key, addr.encode(), hashlib.sha256).hexdigest()[:16]

        return _remembered(hashed)
    return _remembered(truncate_address)


def _remembered(write: Callable[[str], str | None]) -> Callable[[str], str | None]:
    """`write` with its recent answers kept: clients come back, and parsing
    an address costs more than the rest of the record."""
    seen: dict[str, str | None] = {}

    def cached(addr: str) -> str | None:
        try:
            return seen[addr]
        except KeyError:
            pass
        if len(seen) >= _REMEMBERED:
            seen.clear()
        value = seen[addr] = write(addr)
        return value

    return cached


_REMEMBERED = 4096


def truncate_address(addr: str) -> str | None:
    """An IPv4 address to its /24, an IPv6 one to its /48; anything else dropped."""
    if not addr:
        return None
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))
