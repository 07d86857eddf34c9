"""Upstream calls, header hygiene and the streaming copy loop.

Bodies pass through as bytes. The request body is re-encoded only when the
public model name differs from the provider's (and then only the top level
is touched: every other value is carried as raw JSON). A streamed answer is
written to the client chunk by chunk as it arrives; observers see each chunk
on the way. Anything that fails before the first byte reaches the client is
raised as an `UpstreamError` (retryable by the router); after that, the
stream is ended with an error event in the client's format.

Provider output is checked where it is read, so that a broken provider ends
in an error the client's SDK raises rather than in a decode error inside it:
a stream is copied whole events at a time and each event's data must be a
JSON object (or OpenAI's `[DONE]`); a plain answer must be one JSON object.
Only the syntax is checked (msgspec skips the members), and good bytes pass
untouched.

A client whose wire format is not the provider's is served through a
translation (providers/translate.py): the request body is translated
before it is sent, and the answer, whole or event by event as it arrives,
before observers and filters see it (decoding it to translate it is its
check, by the same rule), so that the meter and the logger see what the
client gets. Provider errors keep their status (Anthropic's 529 becomes
503), not the other format's error type.

One module past 400 lines: the call, header hygiene and the copy loop are
one attempt's life, and each raises the errors the router's retry decision
reads; provider addressing lives in providers/.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

import msgspec
from aiohttp import web

from .config import Config, ProviderConfig, Timeouts
from .errors import (
    BadRequest,
    UpstreamError,
    UpstreamStatus,
    UpstreamTimeout,
    UpstreamUnreachable,
    error_response,
)
from .exchange import Exchange
from .providers import ADAPTERS, Adapter
from .providers.translate import (
    MalformedAnswer,
    StreamTranslator,
    Translation,
    translate_request,
    translate_response,
)
from .providers.translations import translation_for
from .sse import EVENT_BOUNDARY, EVENT_ENDS, NOT_JSON, first_invalid_event, is_json_object
from .upstream_http import (
    UNVERIFIED,
    VERIFIED,
    BodyTooLarge,
    ConnectTimeout,
    Response,
    UpstreamClient,
    UpstreamHTTPError,
)

__all__ = ["Forwarder", "Upstream"]

# Client headers pass to a provider by its adapter's allow-list
# (`Adapter.client_headers`, see providers/base.py), which leaves out
# credentials, cookies, hop-by-hop and forwarding headers, and whatever
# would choose the provider account that pays.
# Provider response headers a client may see: the body's type, the
# provider's request id (for support; the request_id plugin's own
# x-request-id replaces OpenAI's), and its version and timing. The rest (the
# provider account's rate limits, organisation ids, cookies) stay with us;
# the x-ratelimit-* a client sees are ours.
_PASS_RESPONSE = frozenset(
    {
        "content-type",
        "cache-control",
        "x-request-id",
        "request-id",
        "openai-processing-ms",
        "openai-version",
        "anthropic-version",
    }
)
_ERROR_BODY_LIMIT = 64 * 1024
# The largest answer taken from a provider (docs/operators.md): a plain
# answer past it (the client's `max_body`, refused as it is read, or at once
# when its length is announced), or one stream event past _MAX_EVENT, is a
# malformed answer (upstream_invalid), so that a broken or hostile provider
# cannot fill the memory. Each bound is far above what a model answers.
_MAX_ANSWER = 64 * 1024 * 1024
_MAX_EVENT = 4 * 1024 * 1024


class _ErrorFields(msgspec.Struct):
    type: str | None = None
    code: str | int | None = None
    param: str | None = None
    status: str | None = None  # Gemini's error kind (its code is the HTTP status)


class _ProviderError(msgspec.Struct):
    error: _ErrorFields | str | None = None
    type: str | None = None


def _provider_error_fields(body: bytes) -> _ErrorFields:
    """The provider error's type/code/param; its message (which can quote the
    prompt) is never read."""
    try:
        parsed = msgspec.json.decode(body, type=_ProviderError)
    except NOT_JSON:
        return _ErrorFields()
    if isinstance(parsed.error, _ErrorFields):
        return parsed.error
    return _ErrorFields()


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    # NaN, negative and zero mean nothing; "inf" is as long as the router allows.
    return seconds if seconds > 0 else None


def _last_boundary(data: bytes | bytearray, start: int = 0) -> int:
    """Where `data`'s whole events end: after its last event boundary found from `start`, or 0."""
    cut = 0
    for m in EVENT_BOUNDARY.finditer(data, max(start, 0)):
        cut = m.end()
    return cut


def _oversized_event(events: bytes) -> int:
    """Where the first event longer than _MAX_EVENT starts in whole `events`, or -1."""
    start = 0
    for m in EVENT_BOUNDARY.finditer(events):
        if m.start() - start > _MAX_EVENT:
            return start
        start = m.end()
    return -1


def _stream_error_event(wire: str, message: str, code: str) -> bytes:
    if wire == "anthropic":
        payload = msgspec.json.encode(
            {"type": "error", "error": {"type": "api_error", "message": message}}
        )
        return b"event: error\ndata: " + payload + b"\n\n"
    payload = msgspec.json.encode(
        {
            "error": {
                "message": message,
                "type": "server_error",
                "param": None,
                "code": code,
            }
        }
    )
    return b"data: " + payload + b"\n\n"


def replace_model(body: bytes, model: str) -> bytes:
    """Set the top-level "model" of a JSON object, carrying the rest raw."""
    try:
        fields = msgspec.json.decode(body, type=dict[str, msgspec.Raw])
    except UnicodeDecodeError:  # a key that is not UTF-8 (parse.py skips unknown keys unread)
        raise BadRequest("The request body is not valid UTF-8.") from None
    fields["model"] = msgspec.Raw(msgspec.json.encode(model))
    return msgspec.json.encode(fields)


class Upstream:
    """One provider: its adapter and its connection pool (upstream_http.py)."""

    def __init__(self, name: str, config: ProviderConfig, base_url: str | None = None) -> None:
        self.name = name
        self.config = config
        self.adapter: Adapter = ADAPTERS[config.format](config, base_url)
        self.client: UpstreamClient | None = None
        self.fixed_headers: dict[str, str] = {}
        self.default_headers: dict[str, str] = {}
        self.client_headers = self.adapter.client_headers

    async def start(self) -> None:
        context = VERIFIED if self.config.verify_tls else UNVERIFIED
        self.client = UpstreamClient(self.config.max_connections, context, max_body=_MAX_ANSWER)
        # What every call to this provider adds to the client's headers,
        # merged once: defaults first, then configured headers, then credentials.
        self.fixed_headers = {k.lower(): v for k, v in self.adapter.config.headers.items()}
        self.fixed_headers.update({k.lower(): v for k, v in self.adapter.auth_headers().items()})
        self.default_headers = {
            k.lower(): v
            for k, v in self.adapter.default_headers().items()
            if k.lower() not in self.fixed_headers
        }

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()


class Forwarder:
    """Sends an exchange to a provider and copies the answer back."""

    def __init__(self, config: Config, base_urls: Mapping[str, str] | None = None) -> None:
        base_urls = base_urls or {}
        self.upstreams = {
            name: Upstream(name, p, base_urls.get(name)) for name, p in config.providers.items()
        }

    async def start(self) -> None:
        for upstream in self.upstreams.values():
            await upstream.start()

    async def close(self) -> None:
        for upstream in self.upstreams.values():
            await upstream.close()

    def request_headers(self, request: web.Request, upstream: Upstream) -> dict[str, str]:
        # Names are lower-cased (HTTP/1.1 names are case-insensitive), so a
        # plain dict does what a multidict would, faster.
        headers = upstream.default_headers.copy()
        allowed = upstream.client_headers
        for name, value in request.headers.items():
            lower = name.lower()
            if lower in allowed:
                headers[lower] = value
        headers.update(upstream.fixed_headers)
        return headers

    async def forward(
        self,
        request: web.Request,
        exchange: Exchange,
        provider: str,
        upstream_model: str,
        timeouts: Timeouts | None = None,
    ) -> web.StreamResponse:
        upstream = self.upstreams[provider]
        adapter = upstream.adapter
        if timeouts is None:
            timeouts = upstream.config.timeouts
        body = exchange.body
        endpoint = exchange.endpoint
        translation: Translation | None = None
        exchange.provider_wire = exchange.wire
        if exchange.wire not in adapter.wires:
            exchange.provider_wire = adapter.speaks
            # Another wire format: translated both ways (providers/translate.py).
            translation = translation_for(exchange.wire, adapter.speaks, endpoint)
            if translation is None:
                raise BadRequest(
                    f"This endpoint is not available for this model: its provider speaks the "
                    f"{adapter.speaks} format.",
                )
            endpoint, body = translate_request(
                translation, body, upstream_model, adapter.model_in_body
            )
        elif adapter.model_in_body and upstream_model != exchange.model:
            body = replace_model(body, upstream_model)
        url = adapter.url(endpoint, upstream_model)
        headers = self.request_headers(request, upstream)
        assert upstream.client is not None, "Forwarder.start() was not awaited"

        exchange.attempts += 1
        exchange.timings.upstream_start = time.perf_counter()
        try:
            resp = await upstream.client.request(
                request.method,
                url,
                headers,
                body,
                connect=timeouts.connect,
                first_byte=timeouts.first_byte,
            )
        except ConnectTimeout:
            raise UpstreamUnreachable(
                f"The provider could not be reached within {timeouts.connect:g} s."
            ) from None
        except TimeoutError:
            raise UpstreamTimeout(
                f"The provider did not answer within {timeouts.first_byte:g} s."
            ) from None
        except UpstreamHTTPError:
            raise UpstreamUnreachable("The provider could not be reached.") from None

        resp.set_read_timeout(timeouts.idle)
        try:
            if resp.status >= 400:
                await self._raise_status(resp, translated=translation is not None)
            exchange.status = resp.status
            if resp.headers.get("content-type", "").startswith("text/event-stream"):
                translator = None if translation is None else StreamTranslator(translation.stream())
                return await self._copy_stream(request, exchange, resp, timeouts.idle, translator)
            return await self._copy_body(exchange, resp, timeouts.idle, translation)
        finally:
            resp.release()

    async def _raise_status(self, resp: Response, translated: bool = False) -> None:
        try:
            raw = await resp.read(_ERROR_BODY_LIMIT)
        except (TimeoutError, UpstreamHTTPError):
            raw = b""
        fields = theirs = _provider_error_fields(raw)
        status = resp.status
        if translated:
            # Another format's error type and code mean nothing to this
            # client's SDK: the status alone is mapped (Anthropic's 529
            # overload is the 503 other SDKs retry).
            status = 503 if status == 529 else status
            fields = _ErrorFields("rate_limit_exceeded" if status == 429 else None)
        retryable = status == 429 or status >= 500
        detail = fields.type or "error"
        err = UpstreamStatus(
            f"The provider returned HTTP {resp.status} ({detail}).",
            status=status,
            type=fields.type or ("server_error" if status >= 500 else "invalid_request_error"),
            code=None if fields.code is None else str(fields.code),
            param=fields.param,
            retry_after=_retry_after(resp.headers),
            retryable=retryable,
        )
        err.provider_type = theirs.type or theirs.status
        err.provider_code = None if theirs.code is None else str(theirs.code)
        raise err

    def _response_headers(self, resp: Response, exchange: Exchange) -> dict[str, str]:
        headers = {name: value for name, value in resp.header_items if name in _PASS_RESPONSE}
        headers.update(exchange.response_headers)
        return headers

    async def _copy_body(
        self,
        exchange: Exchange,
        resp: Response,
        idle: float,
        translation: Translation | None = None,
    ) -> web.Response:
        try:
            data: bytes | None = await resp.read()
        except BodyTooLarge:
            data = None  # the client closed the connection, the rest unread
        except TimeoutError:
            raise UpstreamTimeout(f"The provider stalled for {idle:g} s.") from None
        except UpstreamHTTPError:
            raise UpstreamUnreachable("The provider broke off its answer.") from None
        now = time.perf_counter()
        exchange.timings.first_byte = exchange.timings.last_byte = now
        if data is None:
            return self._invalid_body(exchange)
        if translation is None:
            if not is_json_object(data):
                return self._invalid_body(exchange)
        else:
            # Decoding the answer to translate it checks it by the same rule.
            try:
                data = translate_response(translation, data)
            except MalformedAnswer:
                return self._invalid_body(exchange)
        exchange.bytes_out = len(data)
        exchange.notify_chunk(data)
        exchange.notify_end(False)
        return web.Response(
            status=resp.status, body=data, headers=self._response_headers(resp, exchange)
        )

    def _invalid_body(self, exchange: Exchange) -> web.Response:
        """A 502 in the client's shape for a success whose body is not JSON
        (or is larger than _MAX_ANSWER).

        Every endpoint answers a JSON object, so anything else is a broken
        provider. It is answered, not raised: the provider took the request
        (and bills it), so it is not retried elsewhere, the observers end
        without a body (the meter bills an estimate), and the router counts
        it against the deployment as it counts a broken stream. The bytes
        are dropped unread.
        """
        exchange.status = 502
        exchange.error_type, exchange.error_code = "provider", "upstream_invalid"
        exchange.notify_end(True)
        err = UpstreamError("The provider sent a malformed answer.", code="upstream_invalid")
        return error_response(exchange.wire, err, exchange.response_headers)

    async def _copy_stream(
        self,
        request: web.Request,
        exchange: Exchange,
        resp: Response,
        idle: float,
        translator: StreamTranslator | None = None,
    ) -> web.StreamResponse:
        timings = exchange.timings
        filters = exchange.filters
        # Nothing has reached the client yet: a stall or a break before the
        # first chunk is still the router's to retry.
        try:
            chunk = await resp.readany()
        except TimeoutError:
            raise UpstreamTimeout(f"The provider stalled for {idle:g} s.") from None
        except UpstreamHTTPError:
            raise UpstreamUnreachable("The provider broke off its answer.") from None

        out = web.StreamResponse(status=resp.status, headers=self._response_headers(resp, exchange))
        await out.prepare(request)
        timings.first_byte = time.perf_counter()
        aborted = True
        sent = 0
        # Whole events only: the bytes after the last event boundary wait for
        # the rest of their event, so that an error event sent after a break
        # starts on a boundary (a half event glued to it reads as neither),
        # and so that each event is checked whole before anyone sees it.
        # An unfinished event grows in `held`, searched for its end in the
        # new bytes only (the 3 before them may begin a boundary).
        held = bytearray()
        broken = False
        try:
            while chunk:
                if held:
                    start = len(held) - 3
                    held += chunk
                    cut = len(held) if held.endswith(EVENT_ENDS) else _last_boundary(held, start)
                    chunk = bytes(held[:cut])
                    del held[:cut]
                elif not chunk.endswith(EVENT_ENDS):
                    cut = _last_boundary(chunk)
                    held += memoryview(chunk)[cut:]
                    chunk = chunk[:cut]
                if len(held) > _MAX_EVENT:
                    held, broken = bytearray(), True  # the events before it pass
                if len(chunk) > _MAX_EVENT:  # rare: one of its events may be too
                    cut = _oversized_event(chunk)
                    if cut >= 0:
                        chunk, broken = chunk[:cut], True
                if chunk:
                    # An event that is not JSON (a broken provider) would
                    # crash the client's SDK: the events before it pass, it
                    # and the rest do not, and the stream ends with an error.
                    if translator is None:
                        bad = first_invalid_event(chunk)
                        if bad >= 0:
                            chunk, broken = chunk[:bad], True
                    else:
                        # Decoding each event to translate it checks it by the
                        # same rule. Observers and filters see what the client gets.
                        chunk = translator.feed(chunk)
                        broken = broken or translator.broken
                    if chunk:
                        exchange.notify_chunk(chunk)
                        for f in filters:
                            chunk = f.feed(chunk)
                        if chunk:
                            await out.write(chunk)
                            sent += len(chunk)
                if broken:
                    break
                chunk = await resp.readany()
            rest = bytes(held)
            if rest and not broken:
                # An unfinished last event: an SDK never dispatches it, but
                # it is checked like the others.
                if first_invalid_event(rest + b"\n\n") >= 0:
                    broken = True
                elif translator is not None:
                    rest = b""  # a translation sends whole events only
                else:
                    exchange.notify_chunk(rest)
                    for f in filters:
                        rest = f.feed(rest)
            if broken:
                exchange.error_type, exchange.error_code = "provider", "upstream_invalid"
                await self._end_with_error(
                    out, exchange, "The provider sent a malformed event.", "upstream_invalid"
                )
                return out
            if translator is not None:
                rest = translator.flush()  # the client's own end of stream
                if rest:
                    exchange.notify_chunk(rest)
                    for f in filters:
                        rest = f.feed(rest)
            tail = rest + b"".join(f.flush() for f in filters)
            if tail:
                await out.write(tail)
                sent += len(tail)
            aborted = False
            await out.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            # Writing to a client that hung up raises aiohttp's
            # ClientConnectionResetError: it must not count against the
            # provider (nor open its breaker).
            exchange.error_type, exchange.error_code = "caller", "client_disconnected"
            raise
        except TimeoutError:
            exchange.error_type, exchange.error_code = "provider", "stream_stalled"
            await self._end_with_error(out, exchange, "The provider stalled mid-stream.")
        except UpstreamHTTPError:
            exchange.error_type, exchange.error_code = "provider", "stream_broken"
            await self._end_with_error(out, exchange, "The provider broke off the stream.")
        finally:
            timings.last_byte = time.perf_counter()
            exchange.bytes_out = sent
            exchange.notify_end(aborted)
        return out

    async def _end_with_error(
        self,
        out: web.StreamResponse,
        exchange: Exchange,
        message: str,
        code: str = "upstream_error",
    ) -> None:
        try:
            await out.write(_stream_error_event(exchange.wire, message, code))
            await out.write_eof()
        except (ConnectionResetError, RuntimeError):
            pass
