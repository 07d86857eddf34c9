"""Reading a request body once and decoding only the fields the gateway needs.

Plugins that need the model or the token budget call `read_request`; the
first call reads the body (refusing one over the size limit) and decodes
a small struct, skipping everything else without building objects. So a
request refused by auth is never read, and the body is read only once.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import msgspec
from aiohttp import web

from .errors import BadRequest, BodyTooLarge
from .exchange import Exchange, exchange_of

__all__ = ["read_request"]


# An output budget below 1 is refused here, as the providers refuse it: the
# token reservation (abuse plugin) and a deployment's capacity (router) are
# counted from it, and a negative one would give tokens back. One above the
# largest int32 (no model comes near) is refused too: a 300-digit budget
# overflowed the limiter's float arithmetic.
_Budget = Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]


class _Head(msgspec.Struct):
    model: str | None = None
    stream: bool | None = None
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
    length = request.content_length
    if length is not None and length > limit:
        raise BodyTooLarge(f"Request body is larger than the limit of {limit} bytes.")
    if length is not None:
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


async def _read_chunked(request: web.Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"Request body is larger than the limit of {limit} bytes.")
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _param(e: msgspec.ValidationError) -> str | None:
    """The top-level field msgspec's message points at (`... - at `$.name``)."""
    _, at, where = str(e).rpartition(" - at `$.")
    return where.rstrip("`").split("[", 1)[0].split(".", 1)[0] or None if at else None


def _field_problem(e: msgspec.ValidationError) -> str:
    # msgspec names the field and the expected type, never the value sent.
    return str(e).replace("`", "").replace("$.", "")
