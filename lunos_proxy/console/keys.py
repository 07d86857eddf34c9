"""The keys page: list (prefixes only), create (shown once), revoke, rotate.

Creation, revocation and rotation are the admin API's own functions
(`lunos_proxy.admin.keys`), so a key made here is like one made there and
every instance hears of a revocation at once. Each action checks that the
key belongs to the signed-in account (`pages.owned_key`).
"""

from __future__ import annotations

import datetime as dt
import time

from aiohttp import web

from ..admin.keys import issue_key, revoke, rotate
from ..store.base import KeyRecord
from .pages import account_id, audit, config_of, form, owned_key, render, secrets_of, store_of

__all__ = ["routes"]

_MAX_NAME = 200


def _when(at: float | None) -> str:
    if at is None:
        return ""
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _row(k: KeyRecord, now: float) -> dict[str, object]:
    expired = k.expires is not None and k.expires <= now
    return {
        "id": k.id,
        "prefix": k.prefix,
        "name": k.name,
        "created": _when(k.created),
        "expires": _when(k.expires),
        "state": "revoked" if k.revoked else ("expired" if expired else "active"),
    }


async def _page(request: web.Request, *, status: int = 200, new_key: str = "",
                new_key_note: str = "") -> web.Response:
    keys = await store_of(request).keys_of(account_id(request))
    now = time.time()
    rows = [_row(k, now) for k in sorted(keys, key=lambda k: k.created, reverse=True)]
    return await render(request, "keys.html", status=status, keys=rows, new_key=new_key,
                        new_key_note=new_key_note)


async def list_keys(request: web.Request) -> web.Response:
    return await _page(request)


async def create_key(request: web.Request) -> web.Response:
    name = (await form(request)).get("name", "").strip()[:_MAX_NAME]
    template = KeyRecord(id="", hash="", prefix="", account_id=account_id(request), name=name)
    record, key = await issue_key(store_of(request), secrets_of(request), template)
    await audit(request, "keys.create", record.id)
    return await _page(request, status=201, new_key=key,
                       new_key_note=f"Your new key {record.prefix}… ({record.name or 'unnamed'})")


async def revoke_key(request: web.Request) -> web.Response:
    key = await owned_key(request)
    if not key.revoked:
        await revoke(store_of(request), key)
        await audit(request, "keys.revoke", key.id)
    raise web.HTTPSeeOther("/console/keys")


async def rotate_key(request: web.Request) -> web.Response:
    key = await owned_key(request)
    grace = config_of(request).console.rotation_grace_seconds
    successor, secret = await rotate(store_of(request), secrets_of(request), key, grace)
    await audit(request, "keys.rotate", key.id)
    return await _page(
        request,
        status=201,
        new_key=secret,
        new_key_note=f"The successor of {key.prefix}… ({successor.name or 'unnamed'}); the old "
        f"key keeps working for {grace / 3600:g} hours",
    )


def routes(app: web.Application) -> None:
    app.router.add_get("/keys", list_keys)
    app.router.add_post("/keys", create_key)
    app.router.add_post("/keys/{key_id}/revoke", revoke_key)
    app.router.add_post("/keys/{key_id}/rotate", rotate_key)
