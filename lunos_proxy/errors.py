"""Errors a client can see, and how each wire format shapes them.

    GatewayError                      (status, type, code, message)
    ├── BadRequest          400       malformed JSON, missing model
    ├── Unauthorized        401       missing, wrong, revoked or expired key
    ├── Forbidden           403       model, region or provider not allowed
    ├── ModelNotFound       404       unknown model
    ├── NotFound            404       unknown path
    ├── MethodNotAllowed    405       known path, other method (with Allow)
    ├── BodyTooLarge        413
    ├── UnsupportedEncoding 415       a compressed body where none is accepted
    ├── RateLimited         429       with Retry-After
    ├── QuotaExceeded       429       insufficient_quota (out of budget)
    ├── InternalError       500       any unexpected exception (ours)
    └── UpstreamError       502/503/504 and provider statuses
        ├── UpstreamUnreachable   502
        ├── UpstreamTimeout       504
        └── UpstreamStatus        the provider's own status (its message dropped)

Plugins raise these; the app's error boundary turns them into the response
the client's SDK expects. A message is written by us and never echoes the
request body or a provider's error text (which often quotes the prompt),
nor the model name, path, method or a header the client sent: a `param`
names the offending field, never its value. An exception that is not a
GatewayError ends as `InternalError` at the same boundary (see
`Gateway.handle`); aiohttp's own errors on the public listener go through
`lunos_proxy.http_errors`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import msgspec
from aiohttp import web

# Error `type` per wire format for each status. OpenAI's names come from its
# API reference; Anthropic's from its errors page.
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    415: "invalid_request_error",
    417: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "api_error",
    529: "overloaded_error",
}


class GatewayError(Exception):
    status = 500
    type = "server_error"
    code: str | None = None
    param: str | None = None
    error_class = "gateway"  # caller | policy | provider | gateway (the log taxonomy)
    default_message = "The request could not be completed."

    def __init__(
        self,
        message: str | None = None,
        *,
        status: int | None = None,
        type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        message = message or self.default_message
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type
        if code is not None:
            self.code = code
        if param is not None:
            self.param = param
        self.headers = headers or {}


class BadRequest(GatewayError):
    status = 400
    type = "invalid_request_error"
    error_class = "caller"


class Unauthorized(GatewayError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"
    error_class = "caller"


class Forbidden(GatewayError):
    status = 403
    type = "invalid_request_error"
    code = "permission_denied"
    error_class = "policy"


class ModelNotFound(GatewayError):
    """The model asked for is unknown (or not the caller's): the message
    never names it, since the name is the client's string."""

    status = 404
    type = "invalid_request_error"
    code = "model_not_found"
    param = "model"
    error_class = "caller"
    default_message = "The requested model does not exist or you do not have access to it."


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"
    error_class = "caller"


class MethodNotAllowed(GatewayError):
    """A known path asked with another method; `allowed` goes to `Allow`."""

    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"
    error_class = "caller"

    def __init__(self, allowed: Iterable[str]) -> None:
        super().__init__(
            "This URL does not accept the request's method; see the Allow header.",
            headers={"Allow": ", ".join(sorted(allowed))},
        )


class BodyTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"
    error_class = "caller"


class UnsupportedEncoding(GatewayError):
    status = 415
    type = "invalid_request_error"
    code = "unsupported_content_encoding"
    error_class = "caller"


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_exceeded"
    code = "rate_limit_exceeded"
    error_class = "policy"


class QuotaExceeded(GatewayError):
    status = 429
    type = "insufficient_quota"
    code = "insufficient_quota"
    error_class = "policy"


class InternalError(GatewayError):
    """Something failed on our side (an exception nobody turned into a
    GatewayError). Its message is fixed: the exception's own text can quote
    the request, so it is neither sent nor logged."""

    status = 500
    type = "server_error"
    code = "internal_error"
    error_class = "gateway"
    default_message = "The server had an error while processing your request."


class ServiceUnavailable(GatewayError):
    status = 503
    type = "server_error"
    code = "service_unavailable"
    error_class = "gateway"


class UpstreamError(GatewayError):
    """The provider could not serve; `retryable` when nothing reached the client."""

    status = 502
    type = "server_error"
    code = "upstream_error"
    error_class = "provider"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        retryable: bool = True,
        **kw: object,
    ) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after = retry_after
        self.retryable = retryable


class UpstreamUnreachable(UpstreamError):
    status = 502
    code = "upstream_unreachable"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class UpstreamStatus(UpstreamError):
    """A provider error status; the body we send is ours, the status is theirs."""

    code = "upstream_status"
    # The error's type (Gemini: its status) and code as the provider's body
    # gave them, None where it gave none: for the log, which keeps only the
    # values its format documents. The client gets `type` and `code`: the
    # same, unless the exchange was translated.
    provider_type: str | None = None
    provider_code: str | None = None


class _OpenAIErrorBody(msgspec.Struct):
    message: str
    type: str
    param: str | None
    code: str | None


class _OpenAIError(msgspec.Struct):
    error: _OpenAIErrorBody


class _AnthropicErrorBody(msgspec.Struct):
    type: str
    message: str


class _AnthropicError(msgspec.Struct):
    type: str
    error: _AnthropicErrorBody


_encode = msgspec.json.Encoder().encode


def wire_for_path(path: str, headers: Mapping[str, str] | None = None) -> str:
    """The wire format of a request known by its path (and headers): an
    unknown route, a request aiohttp refused, `/v1/models`. Anthropic's under
    /v1/messages; under /v1/models, which both SDKs call, Anthropic's for a
    caller that sends `anthropic-version` (its SDK always does); OpenAI's
    everywhere else."""
    if path.startswith("/v1/messages"):
        return "anthropic"
    if headers is not None and path.startswith("/v1/models") and "anthropic-version" in headers:
        return "anthropic"
    return "openai"


def error_body(wire: str, err: GatewayError) -> bytes:
    if wire == "anthropic":
        kind = _ANTHROPIC_TYPES.get(err.status, "api_error")
        return _encode(_AnthropicError("error", _AnthropicErrorBody(kind, err.message)))
    return _encode(_OpenAIError(_OpenAIErrorBody(err.message, err.type, err.param, err.code)))


def error_response(wire: str, err: GatewayError, headers: dict[str, str]) -> web.Response:
    all_headers = dict(headers)
    all_headers.update(err.headers)
    return web.Response(
        status=err.status,
        body=error_body(wire, err),
        content_type="application/json",
        headers=all_headers,
    )
