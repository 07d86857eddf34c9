"""Admin tokens (scope: full): create (the token is shown once), list, revoke.

    POST   /admin/tokens            {"name": "grafana", "scope": "read"}
    GET    /admin/tokens
    DELETE /admin/tokens/{token_id}
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Literal

import msgspec
from aiohttp import web

from ..keys import ADMIN_TOKEN_PREFIX, display_prefix, new_id, new_key
from ..store.base import AdminTokenRecord
from .auth import GATEWAY, admin_error, audit_about, read_body, requires, secrets_of, send

if TYPE_CHECKING:
    from ..app import Gateway


class NewToken(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    scope: Literal["read", "operator", "full"]


def _view(t: AdminTokenRecord) -> dict[str, object]:
    return {"id": t.id, "prefix": t.prefix, "name": t.name, "scope": t.scope, "created": t.created}


@requires("full", "tokens.create")
async def create_token(request: web.Request) -> web.Response:
    body = await read_body(request, NewToken)
    token = new_key(ADMIN_TOKEN_PREFIX)
    record = AdminTokenRecord(
        id=new_id("tok"),
        hash=secrets_of(request).key_hash(token),
        prefix=display_prefix(token),
        name=body.name,
        scope=body.scope,
        created=time.time(),
    )
    await request.app[GATEWAY].store.put_admin_token(record)
    audit_about(request, target=record.id)
    return send({**_view(record), "token": token}, 201)


@requires("full", "tokens.list")
async def list_tokens(request: web.Request) -> web.Response:
    return send({"tokens": [_view(t) for t in await request.app[GATEWAY].store.admin_tokens()]})


@requires("full", "tokens.revoke")
async def revoke_token(request: web.Request) -> web.Response:
    token_id = request.match_info["token_id"]
    if not await request.app[GATEWAY].store.delete_admin_token(token_id):
        raise admin_error(404, "no such admin token")
    return send({"id": token_id, "revoked": True})


def setup(app: web.Application, gateway: Gateway) -> None:
    app.router.add_post("/admin/tokens", create_token)
    app.router.add_get("/admin/tokens", list_tokens)
    app.router.add_delete("/admin/tokens/{token_id}", revoke_token)
