"""Upstream sessions, header hygiene and the streaming copy loop.

Bodies pass through as bytes. The request body is re-encoded only when the
public model name differs from the provider's (and then only the top level
is touched: every other value is carried as raw JSON). A streamed answer is
written to the client chunk by chunk as it arrives; observers see each chunk
on the way. Anything that fails before the first byte reaches the client is
raised as an `UpstreamError` (retryable by the router); after that, the
stream is ended with an error event in the client's format.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

import aiohttp
import msgspec
from aiohttp import web
from multidict import CIMultiDict

from .config import Config, ProviderConfig, Timeouts
from .errors import UpstreamStatus, UpstreamTimeout, UpstreamUnreachable
from .exchange import Exchange
from .providers import ADAPTERS, Adapter

__all__ = ["Forwarder", "Upstream"]

# Never forwarded in either direction (RFC 9110 7.6.1), plus what we recompute.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
# Client headers that carry the Lunos key or describe the client's hop.
_CLIENT_ONLY = frozenset(
    {
        "authorization",
        "x-api-key",
        "api-key",
        "cookie",
        "accept-encoding",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-real-ip",
    }
)
_DROP_REQUEST = _HOP_BY_HOP | _CLIENT_ONLY
# Provider response headers a client may see; the rest (the provider
# account's rate limits, organisation ids, cookies) stay with us.
_PASS_RESPONSE = frozenset(
    {"content-type", "cache-control", "openai-processing-ms", "openai-version", "anthropic-version"}
)
_ERROR_BODY_LIMIT = 64 * 1024


class _ErrorFields(msgspec.Struct):
    type: str | None = None
    code: str | int | None = None
    param: str | None = None


class _ProviderError(msgspec.Struct):
    error: _ErrorFields | str | None = None
    type: str | None = None


def _provider_error_fields(body: bytes) -> _ErrorFields:
    """The provider error's type/code/param; its message (which can quote the
    prompt) is never read."""
    try:
        parsed = msgspec.json.decode(body, type=_ProviderError)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return _ErrorFields()
    if isinstance(parsed.error, _ErrorFields):
        return parsed.error
    return _ErrorFields()


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _stream_error_event(wire: str, message: str) -> bytes:
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
                "code": "upstream_error",
            }
        }
    )
    return b"data: " + payload + b"\n\n"


def replace_model(body: bytes, model: str) -> bytes:
    """Set the top-level "model" of a JSON object, carrying the rest raw."""
    fields = msgspec.json.decode(body, type=dict[str, msgspec.Raw])
    fields["model"] = msgspec.Raw(msgspec.json.encode(model))
    return msgspec.json.encode(fields)


class Upstream:
    """One provider: its adapter and its connection pool."""

    def __init__(self, name: str, config: ProviderConfig, base_url: str | None = None) -> None:
        self.name = name
        self.config = config
        self.adapter: Adapter = ADAPTERS[config.format](config, base_url)
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self.config.max_connections,
            ssl=True if self.config.verify_tls else False,
            ttl_dns_cache=300,
        )
        # No total timeout: a healthy stream may run for minutes. The forwarder
        # applies first-byte and idle limits itself.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.config.timeouts.connect)
        self.session = aiohttp.ClientSession(
            connector=connector, timeout=timeout, skip_auto_headers=("User-Agent",)
        )

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()


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

    def request_headers(self, request: web.Request, adapter: Adapter) -> CIMultiDict[str]:
        headers: CIMultiDict[str] = CIMultiDict()
        for name, value in request.headers.items():
            if name.lower() not in _DROP_REQUEST:
                headers.add(name, value)
        for name, value in adapter.default_headers().items():
            if name not in headers:
                headers[name] = value
        for name, value in adapter.config.headers.items():
            headers[name] = value
        for name, value in adapter.auth_headers().items():
            headers[name] = value
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
        own = timeouts is not None and timeouts.connect != upstream.config.timeouts.connect
        timeouts = timeouts or upstream.config.timeouts
        body = exchange.body
        if adapter.model_in_body and upstream_model != exchange.model:
            body = replace_model(body, upstream_model)
        url = adapter.url(exchange.endpoint, upstream_model)
        headers = self.request_headers(request, adapter)
        assert upstream.session is not None, "Forwarder.start() was not awaited"

        exchange.attempts += 1
        exchange.timings.upstream_start = time.perf_counter()
        try:
            async with asyncio.timeout(timeouts.first_byte):
                if own:
                    # A deployment's own connect limit (the session has the provider's).
                    resp = await upstream.session.request(
                        request.method,
                        url,
                        data=body,
                        headers=headers,
                        allow_redirects=False,
                        timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeouts.connect),
                    )
                else:
                    resp = await upstream.session.request(
                        request.method, url, data=body, headers=headers, allow_redirects=False
                    )
        except TimeoutError:
            raise UpstreamTimeout(
                f"The provider did not answer within {timeouts.first_byte:g} s."
            ) from None
        except aiohttp.ClientError:
            raise UpstreamUnreachable("The provider could not be reached.") from None

        try:
            if resp.status >= 400:
                await self._raise_status(resp, timeouts.idle)
            exchange.status = resp.status
            if resp.content_type == "text/event-stream":
                return await self._copy_stream(request, exchange, resp, timeouts.idle)
            return await self._copy_body(exchange, resp, timeouts.idle)
        finally:
            resp.release()

    async def _raise_status(self, resp: aiohttp.ClientResponse, idle: float) -> None:
        try:
            async with asyncio.timeout(idle):
                raw = await resp.content.read(_ERROR_BODY_LIMIT)
        except (TimeoutError, aiohttp.ClientError):
            raw = b""
        fields = _provider_error_fields(raw)
        retryable = resp.status == 429 or resp.status >= 500
        detail = fields.type or "error"
        raise UpstreamStatus(
            f"The provider returned HTTP {resp.status} ({detail}).",
            status=resp.status,
            type=fields.type or ("server_error" if resp.status >= 500 else "invalid_request_error"),
            code=None if fields.code is None else str(fields.code),
            param=fields.param,
            retry_after=_retry_after(resp.headers),
            retryable=retryable,
        )

    def _response_headers(
        self, resp: aiohttp.ClientResponse, exchange: Exchange
    ) -> CIMultiDict[str]:
        headers: CIMultiDict[str] = CIMultiDict()
        for name, value in resp.headers.items():
            if name.lower() in _PASS_RESPONSE:
                headers.add(name, value)
        headers.update(exchange.response_headers)
        return headers

    async def _copy_body(
        self, exchange: Exchange, resp: aiohttp.ClientResponse, idle: float
    ) -> web.Response:
        try:
            async with asyncio.timeout(idle):
                data = await resp.read()
        except TimeoutError:
            raise UpstreamTimeout(f"The provider stalled for {idle:g} s.") from None
        except aiohttp.ClientError:
            raise UpstreamUnreachable("The provider broke off its answer.") from None
        now = time.perf_counter()
        exchange.timings.first_byte = exchange.timings.last_byte = now
        exchange.bytes_out = len(data)
        exchange.notify_chunk(data)
        exchange.notify_end(False)
        return web.Response(
            status=resp.status, body=data, headers=self._response_headers(resp, exchange)
        )

    async def _copy_stream(
        self,
        request: web.Request,
        exchange: Exchange,
        resp: aiohttp.ClientResponse,
        idle: float,
    ) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        content = resp.content
        timings = exchange.timings
        filters = exchange.filters
        # Nothing has reached the client yet: a stall or a break before the
        # first chunk is still the router's to retry.
        try:
            async with asyncio.timeout(idle):
                chunk = await content.readany()
        except TimeoutError:
            raise UpstreamTimeout(f"The provider stalled for {idle:g} s.") from None
        except aiohttp.ClientError:
            raise UpstreamUnreachable("The provider broke off its answer.") from None

        out = web.StreamResponse(status=resp.status, headers=self._response_headers(resp, exchange))
        await out.prepare(request)
        timings.first_byte = time.perf_counter()
        aborted = True
        sent = 0
        try:
            async with asyncio.timeout(idle) as deadline:
                while chunk:
                    exchange.notify_chunk(chunk)
                    for f in filters:
                        chunk = f.feed(chunk)
                    if chunk:
                        await out.write(chunk)
                        sent += len(chunk)
                    deadline.reschedule(loop.time() + idle)
                    chunk = await content.readany()
            tail = b"".join(f.flush() for f in filters)
            if tail:
                await out.write(tail)
                sent += len(tail)
            aborted = False
            await out.write_eof()
        except TimeoutError:
            exchange.error_type, exchange.error_code = "provider", "stream_stalled"
            await self._end_with_error(out, exchange, "The provider stalled mid-stream.")
        except aiohttp.ClientError:
            exchange.error_type, exchange.error_code = "provider", "stream_broken"
            await self._end_with_error(out, exchange, "The provider broke off the stream.")
        except (ConnectionResetError, asyncio.CancelledError):
            exchange.error_type, exchange.error_code = "caller", "client_disconnected"
            raise
        finally:
            timings.last_byte = time.perf_counter()
            exchange.bytes_out = sent
            exchange.notify_end(aborted)
        return out

    async def _end_with_error(
        self, out: web.StreamResponse, exchange: Exchange, message: str
    ) -> None:
        try:
            await out.write(_stream_error_event(exchange.wire, message))
            await out.write_eof()
        except (ConnectionResetError, RuntimeError):
            pass
