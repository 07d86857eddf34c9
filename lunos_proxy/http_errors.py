"""aiohttp's own error answers on the public listener, in an SDK's shape.

aiohttp answers some requests itself, before any route or middleware runs:
one its HTTP parser refuses (a bad request line or method, an invalid or
too long header, a bad chunk), an exception raised outside the API pipeline
(the 404 route, health checks, the console) and a handler that timed out.
Its `RequestHandler.handle_error` writes those in plain text, quotes the
offending bytes, and logs the parser's message (which quotes them too).

`JsonErrorsHandler` is the connection protocol that answers them so (the
public listener's `connections.GuardedHandler` builds on it);
`JsonErrorsRunner` is an `AppRunner` whose connections answer all of them
as JSON in the OpenAI error shape (Anthropic's under /v1/messages; a
request that could not be parsed has no path, so it gets OpenAI's), with a
fixed message that quotes nothing. The log line says only the error's type
(with its stack frames for a 5xx), never its message.

Two more answers come from aiohttp before any middleware runs, as
`HTTPException`s its connection writes in plain text: an `Expect` header
other than 100-continue (417, quoting the header) and a request target no
route can match because it is not a path (CONNECT's ``host:port``,
``OPTIONS *``: 404). `json_http_exceptions` wraps a server's request
handler so that these, and any other 4xx/5xx `HTTPException` that escapes
an app, are answered in JSON with a fixed message (keeping the headers the
server set on it, such as the console's security headers); redirects pass
as they are.
Both listeners of `serve` use it, through connections.py's runners (whose
connection protocol is a `JsonErrorsHandler`); `JsonErrorsRunner` is the
same without the connection rules, for an app embedded elsewhere.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from .errors import (
    BadRequest,
    GatewayError,
    InternalError,
    MethodNotAllowed,
    NotFound,
    error_response,
    wire_for_path,
)
from .logs import safe_stack

__all__ = ["JsonErrorsHandler", "JsonErrorsRunner", "json_http_exceptions", "log_internal_error"]

log = structlog.get_logger("lunos.proxy")


def log_internal_error(exc: BaseException | None, **fields: object) -> None:
    """The one `internal_error` line for an unexpected exception: its type
    and stack frames, never its message (which can quote the request)."""
    try:
        log.error("internal_error", **fields, exception=safe_stack(exc) if exc else None)
    except Exception:
        # Logging not set up as `lunos-proxy serve` does (structlog's own
        # console renderer refuses a dict here): losing the line must not
        # lose the answer.
        pass


_BODY_HEADERS = {"content-type", "content-length", "content-encoding", "transfer-encoding"}
_RequestHandler = Callable[[BaseRequest], Awaitable[web.StreamResponse]]


def _json_for(exc: web.HTTPException) -> GatewayError:
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return MethodNotAllowed(exc.allowed_methods)
    if exc.status == 404:
        return NotFound("Unknown request URL.")
    if exc.status == 417:
        return BadRequest(
            "The Expect header asks for something this server does not do (only 100-continue).",
            status=417, code="expectation_failed",
        )
    if exc.status == 413:  # a console form over aiohttp's 1 MiB
        return BadRequest("The request body is too large.", status=413, code="request_too_large")
    if exc.status >= 500:
        return GatewayError(status=exc.status)
    return BadRequest("The request could not be served.", status=exc.status)


def json_http_exceptions(handler: _RequestHandler) -> _RequestHandler:
    """`handler` (a `web.Server`'s request handler), with the 4xx and 5xx
    `HTTPException`s that escape it answered in JSON quoting nothing."""

    async def answer(request: BaseRequest) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            # Headers the server gave the exception stay (the console's
            # security headers, Allow); the body is new, so its own do not.
            kept = {k: v for k, v in exc.headers.items() if k.lower() not in _BODY_HEADERS}
            wire = wire_for_path(request.path, request.headers)
            response = error_response(wire, _json_for(exc), kept)
        if not request.content.is_eof() and not response.prepared:
            # Answered before its body was read (a refusal that needed none):
            # the connection closes after the answer instead of reading the
            # rest (connections.py), and says so.
            response.force_close()
        return response

    return answer


class JsonErrorsHandler(RequestHandler):
    """One connection; only its error answers differ from aiohttp's."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0 or isinstance(exc, ConnectionError):
            # Part of an answer is out, or the client is gone: nothing else
            # can be sent, and aiohttp drops the connection on this error
            # (its own handler does the same for the first case).
            raise ConnectionError("no answer can be sent")
        err: GatewayError
        if status == 500:
            err = InternalError()
            log_internal_error(exc)
        elif status >= 500:
            err = GatewayError("The request could not be completed in time.", status=status)
            log.warning("request_failed", status=status, error=type(exc).__name__ if exc else None)
        else:
            # Scanners and TLS sent to a plain port end here all day: debug only.
            err = BadRequest("The request is not valid HTTP.", status=status)
            log.debug("bad_http_request", status=status, error=type(exc).__name__ if exc else None)
        response = error_response(wire_for_path(request.path, request.headers), err, {})
        response.force_close()
        return response


class _JsonErrorsServer(web.Server):
    def __call__(self) -> RequestHandler:
        return JsonErrorsHandler(self, loop=self._loop, **self._kwargs)


class JsonErrorsRunner(web.AppRunner):
    """`web.AppRunner` for the public listener (same arguments).

    aiohttp has no documented hook for these answers, so this overrides
    `RequestHandler.handle_error` and rebuilds the runner's `Server` with it
    from that server's own settings (`_loop`, `_kwargs`: aiohttp 3.14 as
    pinned in requirements.lock; tests/e2e/test_protocol_errors.py checks
    both the answers and that the app's handler settings still apply)."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return _JsonErrorsServer(
            json_http_exceptions(server.request_handler),
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=server._loop,
            **server._kwargs,
        )
