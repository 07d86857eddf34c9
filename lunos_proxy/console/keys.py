"""The keys page: list (prefixes only) with each key's use, create (shown once),
revoke and rotate after a confirmation.

Creation, revocation and rotation are the admin API's own functions
(`lunos_proxy.admin.keys`), so a key made here is like one made there and
every instance hears of a revocation at once. Each action checks that the
key belongs to the signed-in account (`pages.owned_key`).

Every action is Post/Redirect/Get: the POST acts, leaves a result message
(`pages.flash`) and redirects, so reloading a page never repeats it. A new
key's secret travels to the page that shows it in the session, sealed with
the server's encryption key, and is removed from it the moment it is shown
(`_NEW_KEY`); nothing else keeps it. Revoke and rotate are links to a page
that says what will happen and asks for the POST. Rotation keeps the name
on the successor and renames the old key "<name> (rotated)"; a key with an
end date (a rotated one in its grace period) is not offered for rotation.

Per key the list shows this month's requests, tokens and spend (the
meter's counters) and when it was last used: the newest usage event of
the last week if there is one, else the last day with counted usage.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import defaultdict
from typing import Any

from aiohttp import web
from aiohttp_session import get_session

from ..admin.keys import issue_key, revoke, rotate
from ..crypto import DecryptError
from ..records import EventQuery
from ..store.base import KeyRecord
from .pages import (
    account_id,
    audit,
    config_of,
    flash,
    form,
    gateway_of,
    money_of,
    owned_key,
    render,
    secrets_of,
    store_of,
)

__all__ = ["key_label", "routes"]

_MAX_NAME = 200
_NEW_KEY = "new_key"
_SEAL = "console-new-key"
_ROTATED = " (rotated)"


def key_label(k: KeyRecord) -> str:
    """How a key is named in messages: ``laptop (lk-AbC12x…)``."""
    return f"{k.name} ({k.prefix}…)" if k.name else f"{k.prefix}…"


def _state(k: KeyRecord, now: float) -> str:
    if k.revoked:
        return "revoked"
    if k.expires is not None:
        return "expired" if k.expires <= now else "expiring"
    return "active"


async def _use(request: web.Request) -> dict[str, dict[str, Any]]:
    """Per key id: this month's requests, tokens, cost and when last used."""
    money = money_of(request)
    store, me = store_of(request), account_id(request)
    today = money.today()
    use: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"requests": 0, "tokens": 0, "cost": 0, "last": ""})
    month = today.replace(day=1).isoformat()
    for row in await store.usage(me, (today - dt.timedelta(days=400)).isoformat(),
                                 today.isoformat()):
        u = use[row.key_id]
        if row.day >= month:
            u["requests"] += row.requests
            u["tokens"] += row.input_tokens + row.output_tokens
            u["cost"] += row.cost_micros
        if row.requests:
            u["last"] = max(u["last"], row.day)
    # The newest event of each key used in the last week gives the time of day.
    records, week = gateway_of(request).records, (today - dt.timedelta(days=7)).isoformat()
    for key_id in [k for k, u in use.items() if u["last"] >= week]:
        newest = await records.events(EventQuery(
            account_id=me, key_id=key_id, first_day=week, last_day=today.isoformat(),
            newest_first=True, limit=1))
        if newest.events:
            use[key_id]["last"] = money.time(newest.events[0].time)
    return use


async def _page(request: web.Request, *, status: int = 200, name: str = "",
                error: str = "") -> web.Response:
    keys = await store_of(request).keys_of(account_id(request))
    money, now = money_of(request), time.time()
    use = await _use(request)
    rows = []
    for k in sorted(keys, key=lambda k: k.created, reverse=True):
        u = use.get(k.id, {"requests": 0, "tokens": 0, "cost": 0, "last": ""})
        rows.append({
            "id": k.id, "prefix": k.prefix, "name": k.name, "label": key_label(k),
            "created": money.time(k.created),
            "expires": money.time(k.expires) if k.expires is not None else "",
            "state": _state(k, now), "requests": u["requests"], "tokens": u["tokens"],
            "cost": money(u["cost"]), "last": u["last"] or "never",
        })
    new_key, note = "", ""
    session = await get_session(request)
    sealed = session.pop(_NEW_KEY, None)
    if isinstance(sealed, dict):
        try:
            new_key = secrets_of(request).decrypt(str(sealed.get("key", "")), _SEAL)
        except DecryptError:  # sealed under a key no longer configured: lost
            new_key = ""
        note = str(sealed.get("note", ""))
    return await render(request, "keys.html", status=status, keys=rows, new_key=new_key,
                        new_key_note=note, timezone=money.timezone, name=name, error=error,
                        base_url=_api_base(request),
                        model=min(config_of(request).models, default="MODEL"))


def _api_base(request: web.Request) -> str:
    configured = config_of(request).console.public_url.rstrip("/")
    return (configured or f"{request.scheme}://{request.host}") + "/v1"


async def list_keys(request: web.Request) -> web.Response:
    return await _page(request)


async def _show_once(request: web.Request, secret: str, note: str) -> None:
    (await get_session(request))[_NEW_KEY] = {
        "key": secrets_of(request).encrypt(secret, _SEAL), "note": note}


async def create_key(request: web.Request) -> web.Response:
    name = (await form(request)).get("name", "").strip()
    if len(name) > _MAX_NAME:
        return await _page(request, status=400, name=name,
                           error=f"A name has at most {_MAX_NAME} characters.")
    template = KeyRecord(id="", hash="", prefix="", account_id=account_id(request), name=name)
    record, key = await issue_key(store_of(request), secrets_of(request), template)
    await audit(request, "keys.create", record.id)
    await _show_once(request, key, f"Created {key_label(record)}")
    raise web.HTTPSeeOther("/console/keys")


async def confirm(request: web.Request) -> web.Response:
    """``/keys/confirm?key=<id>&action=revoke|rotate``: what the action will do."""
    action = request.query.get("action", "")
    if action not in ("revoke", "rotate"):
        raise web.HTTPSeeOther("/console/keys")
    key = await owned_key(request, request.query.get("key", ""))
    now = time.time()
    if key.revoked or (action == "rotate" and key.expires is not None):
        await flash(request, f"{key_label(key)} cannot be {action}d any more.")
        raise web.HTTPSeeOther("/console/keys")
    grace = config_of(request).console.rotation_grace_seconds
    ends = now + grace if key.expires is None else min(key.expires, now + grace)
    return await render(request, "key_confirm.html", action=action, key=key,
                        label=key_label(key), until=money_of(request).time(ends),
                        timezone=money_of(request).timezone, grace_hours=f"{grace / 3600:g}")


async def revoke_key(request: web.Request) -> web.Response:
    key = await owned_key(request)
    if not key.revoked:
        await revoke(store_of(request), key)
        await audit(request, "keys.revoke", key.id)
        await flash(request, f"Revoked {key_label(key)}: it is refused on every server now.")
    else:
        await flash(request, f"{key_label(key)} was already revoked.")
    raise web.HTTPSeeOther("/console/keys")


async def rotate_key(request: web.Request) -> web.Response:
    key = await owned_key(request)
    if key.revoked or key.expires is not None:  # revoked, or already rotated
        await flash(request, f"{key_label(key)} cannot be rotated any more.")
        raise web.HTTPSeeOther("/console/keys")
    grace = config_of(request).console.rotation_grace_seconds
    store = store_of(request)
    successor, secret = await rotate(store, secrets_of(request), key, grace)
    name = key.name or key.prefix
    key.name = name[: _MAX_NAME - len(_ROTATED)] + _ROTATED
    await store.put_key(key)
    await audit(request, "keys.rotate", key.id)
    assert key.expires is not None  # rotate() gave it an end
    await _show_once(request, secret, f"Created {key_label(successor)}, the successor of "
                     f"{key.prefix}…; the old key keeps working until "
                     f"{money_of(request).time(key.expires)} {money_of(request).timezone}")
    raise web.HTTPSeeOther("/console/keys")


def routes(app: web.Application) -> None:
    app.router.add_get("/keys", list_keys)
    app.router.add_post("/keys", create_key)
    app.router.add_get("/keys/confirm", confirm)
    app.router.add_post("/keys/{key_id}/revoke", revoke_key)
    app.router.add_post("/keys/{key_id}/rotate", rotate_key)
