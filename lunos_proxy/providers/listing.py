"""`GET /v1/models` in the listing shape of the SDK that asks.

Both SDKs call the same path; the Anthropic SDK always sends an
`anthropic-version` header, so that header picks Anthropic's shape
(the rule is `errors.wire_for_path`'s)
(``{"data": [{"type": "model", "id", "display_name", "created_at"}],
"has_more", "first_id", "last_id"}``, paged by `limit`, `after_id` and
`before_id`); every other caller gets OpenAI's
(``{"object": "list", "data": [{"id", "object": "model", "created",
"owned_by"}]}``). `GET /v1/models/{name}` answers one entry of the same
shape. Every model is listed to both, whatever format its
deployments speak: each is reachable from either SDK through translation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import msgspec
from aiohttp import web

from ..errors import ModelNotFound
from ..exchange import Exchange, model_allowed

__all__ = ["model_entry", "model_list", "models_response"]

# Listed models carry no real creation date; Anthropic's shape needs one.
_EPOCH = "1970-01-01T00:00:00Z"


class _OpenAIModel(msgspec.Struct):
    id: str
    object: str = "model"
    created: int = 0
    owned_by: str = "lunos"


class _OpenAIList(msgspec.Struct):
    data: list[_OpenAIModel]
    object: str = "list"


class _AnthropicModel(msgspec.Struct):
    id: str
    display_name: str
    type: str = "model"
    created_at: str = _EPOCH


class _AnthropicList(msgspec.Struct):
    data: list[_AnthropicModel]
    has_more: bool
    first_id: str | None
    last_id: str | None


_encode = msgspec.json.Encoder().encode


def _page(names: Sequence[str], query: Mapping[str, str]) -> tuple[list[str], bool]:
    names = list(names)
    after, before = query.get("after_id"), query.get("before_id")
    if after in names:
        names = names[names.index(after) + 1 :]
    if before in names:
        names = names[: names.index(before)]
    try:
        limit = min(max(int(query.get("limit", "20")), 1), 1000)
    except ValueError:
        limit = 20
    if before is not None and after is None:
        return names[-limit:], len(names) > limit
    return names[:limit], len(names) > limit


def model_list(names: Sequence[str], wire: str, query: Mapping[str, str]) -> bytes:
    """The body listing `names` (public model names, in config order)."""
    if wire != "anthropic":
        return _encode(_OpenAIList([_OpenAIModel(n) for n in names]))
    page, more = _page(names, query)
    data = [_AnthropicModel(n, n) for n in page]
    return _encode(
        _AnthropicList(data, more, page[0] if page else None, page[-1] if page else None)
    )


def model_entry(name: str, wire: str) -> bytes:
    """The body of `GET /v1/models/{name}` (both SDKs' `models.retrieve`)."""
    if wire != "anthropic":
        return _encode(_OpenAIModel(name))
    return _encode(_AnthropicModel(name, name))


def models_response(
    exchange: Exchange,
    names: Iterable[str],
    request: web.Request,
    resolve: Callable[[str], str | None],
) -> web.Response:
    """GET /v1/models: the `names` the caller's key may use (`model_allowed`),
    in its SDK's listing shape. GET /v1/models/{name}: any name a request may
    send (`resolve` gives its public name: itself or the model it is an alias
    of) that the key may use, else 404 (not naming it). The one listing the
    app and the router share."""
    principal = exchange.principal
    one = request.match_info.get("model")
    if one is None:
        allowed = [name for name in names if model_allowed(principal, name)]
        body = model_list(allowed, exchange.wire, request.query)
    else:
        public = resolve(one)
        if public is None or not model_allowed(principal, one, public):
            raise ModelNotFound()
        body = model_entry(one, exchange.wire)
    return web.Response(
        body=body, content_type="application/json", headers=exchange.response_headers
    )
