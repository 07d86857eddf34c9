"""API keys: create (the key is shown once), list (prefixes only), revoke, rotate.

    POST /admin/accounts/{account_id}/keys   operator  {"name", "expires_in", "allowed_models",
                                                        "plan", "budget_micros"}
    GET  /admin/accounts/{account_id}/keys   read
    GET  /admin/keys/{key_id}                read
    POST /admin/keys/{key_id}/revoke         operator
    POST /admin/keys/{key_id}/rotate         operator  {"grace_seconds": 86400}

A revocation (and the old key's shortened life on rotation) is published
to every instance, whose auth plugin drops the key from its cache at once.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from aiohttp import web

from ..crypto import Secrets
from ..keys import INVALIDATE_CHANNEL, display_prefix, new_id, new_key
from ..store.base import KeyRecord, Store
from ..store.directory import Directory
from .accounts import account_or_404
from .auth import GATEWAY, admin_error, audit_about, read_body, requires, secrets_of, send

if TYPE_CHECKING:
    from ..host import Host

__all__ = ["issue_key", "key_view", "revoke", "rotate"]

Positive = Annotated[float, msgspec.Meta(gt=0)]


class NewKey(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: Annotated[str, msgspec.Meta(max_length=200)] = ""
    expires_in: Positive | None = None  # seconds from now
    allowed_models: Annotated[list[str], msgspec.Meta(max_length=200)] | None = None
    plan: str | None = None
    budget_micros: Annotated[int, msgspec.Meta(ge=0)] | None = None


class Rotation(msgspec.Struct, forbid_unknown_fields=True):
    grace_seconds: Annotated[float, msgspec.Meta(ge=0)] = 86_400.0


def key_view(k: KeyRecord) -> dict[str, Any]:
    """A key's metadata as shown: never its hash."""
    return {
        "id": k.id,
        "prefix": k.prefix,
        "account_id": k.account_id,
        "name": k.name,
        "created": k.created,
        "expires": k.expires,
        "revoked": k.revoked,
        "allowed_models": k.allowed_models,
        "plan": k.plan,
        "budget_micros": k.budget_micros,
    }


async def _key_or_404(store: Directory, request: web.Request) -> KeyRecord:
    key_id = request.match_info["key_id"]
    key = await store.key_by_id(key_id)
    if key is None:
        raise admin_error(404, "no such key")
    audit_about(request, account_id=key.account_id)
    return key


async def issue_key(store: Store, secrets: Secrets, template: KeyRecord) -> tuple[KeyRecord, str]:
    """Store a key like `template` (new id, secret and creation time); return it
    and the key itself, which exists nowhere else: show it once."""
    key = new_key()
    template.id = new_id("key")
    template.hash = secrets.key_hash(key)
    template.prefix = display_prefix(key)
    template.created = time.time()
    await store.put_key(template)
    # An instance may remember this hash as unknown (someone tried it): not any more.
    await store.publish(INVALIDATE_CHANNEL, f"key:{template.hash}")
    return template, key


async def revoke(store: Store, key: KeyRecord) -> None:
    """Revoke `key` and tell every instance to drop it from its cache."""
    key.revoked = True
    await store.put_key(key)
    await store.publish(INVALIDATE_CHANNEL, f"key:{key.hash}")


async def rotate(
    store: Store, secrets: Secrets, old: KeyRecord, grace_seconds: float
) -> tuple[KeyRecord, str]:
    """Issue a successor with `old`'s settings; `old` stops working after
    `grace_seconds` (or its own expiry, if sooner). A revoked key is refused (409)."""
    if old.revoked:
        raise admin_error(409, f"key {old.id} is revoked; create a new one instead")
    successor, key = await issue_key(store, secrets, msgspec.structs.replace(old))
    ends = time.time() + grace_seconds
    old.expires = ends if old.expires is None else min(old.expires, ends)
    await store.put_key(old)
    await store.publish(INVALIDATE_CHANNEL, f"key:{old.hash}")
    return successor, key


async def _issue(request: web.Request, template: KeyRecord) -> web.Response:
    record, key = await issue_key(request.app[GATEWAY].store, secrets_of(request), template)
    return send({**key_view(record), "key": key}, 201)


@requires("operator", "keys.create")
async def create_key(request: web.Request) -> web.Response:
    body = await read_body(request, NewKey)
    account = await account_or_404(request.app[GATEWAY].store, request.match_info["account_id"])
    template = KeyRecord(
        id="",
        hash="",
        prefix="",
        account_id=account.id,
        name=body.name,
        expires=None if body.expires_in is None else time.time() + body.expires_in,
        allowed_models=body.allowed_models,
        plan=body.plan,
        budget_micros=body.budget_micros,
    )
    return await _issue(request, template)


@requires("read", "keys.list")
async def list_keys(request: web.Request) -> web.Response:
    store = request.app[GATEWAY].store
    account = await account_or_404(store, request.match_info["account_id"])
    return send({"keys": [key_view(k) for k in await store.keys_of(account.id)]})


@requires("read", "keys.show")
async def show_key(request: web.Request) -> web.Response:
    return send(key_view(await _key_or_404(request.app[GATEWAY].store, request)))


@requires("operator", "keys.revoke")
async def revoke_key(request: web.Request) -> web.Response:
    store = request.app[GATEWAY].store
    key = await _key_or_404(store, request)
    await revoke(store, key)
    return send(key_view(key))


@requires("operator", "keys.rotate")
async def rotate_key(request: web.Request) -> web.Response:
    body = await read_body(request, Rotation)
    store = request.app[GATEWAY].store
    old = await _key_or_404(store, request)
    successor, key = await rotate(store, secrets_of(request), old, body.grace_seconds)
    return send({**key_view(successor), "key": key}, 201)


def setup(app: web.Application, gateway: Host) -> None:
    app.router.add_post("/admin/accounts/{account_id}/keys", create_key)
    app.router.add_get("/admin/accounts/{account_id}/keys", list_keys)
    app.router.add_get("/admin/keys/{key_id}", show_key)
    app.router.add_post("/admin/keys/{key_id}/revoke", revoke_key)
    app.router.add_post("/admin/keys/{key_id}/rotate", rotate_key)
