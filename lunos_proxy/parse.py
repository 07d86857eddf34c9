"""Reading a request body once and decoding only the fields the gateway needs.

Plugins that need the model or the token budget call `read_request`; the
first call reads the body (refusing one over the size limit) and decodes
a small struct, skipping everything else without building objects. So a
request refused by auth is never read, and the body is read only once.

A compressed body (`Content-Encoding` other than identity) is refused with
415 unless `server.request_decompression` is on; then gzip and deflate are
decoded here, after auth, a bounded slice at a time, and the size limit
counts the decoded bytes: a small body that inflates past it gets 413 as
soon as it does, without the rest being read. Brotli and zstd get 415 (no
decoder for them is among the pinned dependencies). The forwarder sends the
decoded body on, without `Content-Encoding`. aiohttp's own decompression
is off on the public listener (connections.py), since it would run as the
body arrives, before the key is checked.

For the same reason a client's `Expect: 100-continue` is answered here,
not when the route resolves (aiohttp's default): the API routes take
`expect_continue_later` as their expect handler, and the `100 Continue`
goes out just before the body is read, once the key, the encoding and a
declared length have passed. A request refused before then gets its
answer without ever having been invited to send the body.
"""

from __future__ import annotations

import asyncio
import zlib
from typing import Annotated

import msgspec
from aiohttp import HttpVersion11, StreamReader, hdrs, web

from .errors import BadRequest, BodyTooLarge, UnsupportedEncoding
from .exchange import Exchange, exchange_of

__all__ = ["expect_continue_later", "read_request"]


# An output budget below 1 is refused here, as the providers refuse it: the
# token reservation (abuse plugin) and a deployment's capacity (router) are
# counted from it, and a negative one would give tokens back. One above the
# largest int32 (no model comes near) is refused too: a 300-digit budget
# overflowed the limiter's float arithmetic.
_Budget = Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]


class _StreamOptions(msgspec.Struct):
    # Read by the meter (include_usage.py) and by translation: an object,
    # else a 400 here rather than a surprise at the provider.
    include_usage: bool | None = None


class _Head(msgspec.Struct):
    model: str | None = None
    stream: bool | None = None
    stream_options: _StreamOptions | None = None
    max_tokens: _Budget | None = None
    max_completion_tokens: _Budget | None = None
    max_output_tokens: _Budget | None = None


_decode_head = msgspec.json.Decoder(_Head).decode


async def read_request(request: web.Request) -> Exchange:
    exchange = exchange_of(request)
    if exchange.parsed:
        return exchange
    exchange.parsed = True
    if request.method != "POST":
        return exchange
    limit = exchange.body_limit
    coding = request.headers.get("Content-Encoding")
    if coding is not None:
        coding = _coding(coding, exchange.decompress)
    length = request.content_length
    if length is not None and length > limit:
        raise _too_large(limit)
    if hdrs.EXPECT in request.headers:
        await _send_continue(request)
    if coding is not None:
        body = await _read_inflated(request.content, coding, limit)
    elif length is not None:
        try:
            # Usually the whole body came with the headers: take what is
            # buffered without a round through the event loop.
            body = request.content.read_nowait(-1) if length else b""
            if len(body) < length:
                body += await request.content.readexactly(length - len(body))
        except asyncio.IncompleteReadError:
            raise BadRequest("The request body ended before its Content-Length.") from None
    else:
        body = await _read_chunked(request, limit)
    exchange.body = body
    exchange.bytes_in = len(body)
    if not body:
        raise BadRequest("The request body is empty; expected a JSON object.")
    try:
        head = _decode_head(body)
    except msgspec.ValidationError as e:
        raise BadRequest(f"Invalid request: {_field_problem(e)}", param=_param(e)) from None
    except msgspec.DecodeError:
        raise BadRequest("The request body is not valid JSON.") from None
    except RecursionError:  # arrays or objects nested past the interpreter's depth
        raise BadRequest("The request body is nested too deeply.") from None
    except UnicodeDecodeError:  # only `model` is decoded as text; skipped fields are not
        raise BadRequest("The model parameter is not valid UTF-8.", param="model") from None
    if not head.model:
        raise BadRequest("You must provide a model parameter.", param="model")
    exchange.model = head.model
    exchange.stream = bool(head.stream)
    exchange.max_tokens = head.max_tokens or head.max_completion_tokens or head.max_output_tokens
    return exchange


async def expect_continue_later(request: web.Request) -> None:
    """The API routes' expect handler: an expectation other than
    100-continue is refused (417) as aiohttp's default handler does, but
    the `100 Continue` itself waits for `read_request`."""
    if _expectation(request) not in (None, "100-continue"):
        raise web.HTTPExpectationFailed()


def _expectation(request: web.Request) -> str | None:
    """What an HTTP/1.1 request's Expect header asks, lower-cased (an
    HTTP/1.0 client's is ignored, as aiohttp ignores it)."""
    if request.version != HttpVersion11:
        return None
    return request.headers[hdrs.EXPECT].lower()


async def _send_continue(request: web.Request) -> None:
    if _expectation(request) == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        # As aiohttp's own handler does: the answer proper has not begun.
        request.writer.output_size = 0


async def _read_chunked(request: web.Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(limit: int) -> BodyTooLarge:
    return BodyTooLarge(f"Request body is larger than the limit of {limit} bytes.")


def _coding(header: str, allowed: bool) -> str | None:
    """The one content coding to undo ("gzip" or "deflate"), None for identity."""
    codings = [c for c in (part.strip().lower() for part in header.split(",")) if c]
    codings = [c for c in codings if c != "identity"]
    if not codings:
        return None
    if not allowed:
        raise UnsupportedEncoding(
            "Compressed request bodies are not accepted; send the body uncompressed."
        )
    if len(codings) > 1 or codings[0] not in _CODINGS:
        raise UnsupportedEncoding("Only gzip and deflate request bodies are accepted.")
    return _CODINGS[codings[0]]


_CODINGS = {"gzip": "gzip", "x-gzip": "gzip", "deflate": "deflate"}
# Decoded bytes per step: about a millisecond of zlib at most, then other
# requests get the event loop before the next step.
_STEP = 256 * 1024


async def _read_inflated(content: StreamReader, coding: str, limit: int) -> bytes:
    """Read and decode a gzip (one or more members) or deflate body, stopping
    as soon as the decoded size passes `limit`."""
    out: list[bytes] = []
    size = 0
    inflate = zlib.decompressobj(31) if coding == "gzip" else None
    while data := await content.readany():
        if inflate is None:
            # "deflate" is the zlib format (RFC 9110 8.4.1.2); some clients
            # send raw deflate, told apart by the first byte, as aiohttp does.
            inflate = zlib.decompressobj(15 if data[0] & 0x0F == 8 else -15)
        while True:
            if inflate.eof and data:
                if coding != "gzip":
                    raise BadRequest(f"The request body is not valid {coding} data.")
                inflate = zlib.decompressobj(31)  # the next gzip member
            step = min(_STEP, limit - size + 1)
            try:
                piece = inflate.decompress(data, step)
            except zlib.error:
                raise BadRequest(f"The request body is not valid {coding} data.") from None
            size += len(piece)
            if size > limit:
                raise _too_large(limit)
            if piece:
                out.append(piece)
            data = inflate.unconsumed_tail or inflate.unused_data
            if not data and len(piece) < step:
                break  # input used up, and no output held back by the step's bound
            await asyncio.sleep(0)
    if inflate is None or not inflate.eof:
        raise BadRequest(f"The request body is not valid {coding} data.")
    return b"".join(out)


def _param(e: msgspec.ValidationError) -> str | None:
    """The top-level field msgspec's message points at (`... - at `$.name``)."""
    _, at, where = str(e).rpartition(" - at `$.")
    return where.rstrip("`").split("[", 1)[0].split(".", 1)[0] or None if at else None


def _field_problem(e: msgspec.ValidationError) -> str:
    # msgspec names the field and the expected type, never the value sent.
    return str(e).replace("`", "").replace("$.", "")
