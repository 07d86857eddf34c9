"""The request log: the account's recent requests, metadata only, never content.

Rows are the meter's per-request usage events (`Store.usage_events`, read
like the admin API's ``/admin/usage/{account}/events``): when, which key
(its display prefix), model, provider, status, streamed or not, tokens and
cost. The events hold no endpoint and no latency, so neither is shown; they
hold no prompt or answer, so none can be. The log covers today, the last 7
(the default) or 30 days in the billing time zone, newest first, 50 a page,
filtered by key, model and status class.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from ..store.base import UsageEvent
from .keys import key_label
from .pages import account_id, money_of, render, store_of

__all__ = ["routes"]

PAGE = 50
_SPANS = {"today": ("Today", 0), "7d": ("Last 7 days", 6), "30d": ("Last 30 days", 29)}
_STATUSES = {"ok": "Succeeded (2xx)", "client": "Refused (4xx)", "server": "Failed (5xx)"}


def _status_class(status: int) -> str:
    return "ok" if status < 400 else ("client" if status < 500 else "server")


async def show(request: web.Request) -> web.Response:
    q = request.query
    span = q.get("range", "7d") if q.get("range") in _SPANS else "7d"
    money = money_of(request)
    today = money.today()
    first = today - dt.timedelta(days=_SPANS[span][1])
    store, me = store_of(request), account_id(request)
    keys = {k.id: k for k in await store.keys_of(me)}
    events = await store.usage_events(me, first.isoformat(), today.isoformat())
    models = sorted({e.model for e in events})
    key, model, status = q.get("key", ""), q.get("model", ""), q.get("status", "")
    picked: list[UsageEvent] = [
        e for e in events
        if (not key or e.key_id == key) and (not model or e.model == model)
        and (not status or _status_class(e.status) == status)
    ]
    picked.sort(key=lambda e: e.time, reverse=True)
    try:
        page = max(1, int(q.get("page", "1")))
    except ValueError:
        page = 1
    pages = max(1, -(-len(picked) // PAGE))
    page = min(page, pages)
    rows: list[dict[str, Any]] = []
    for e in picked[(page - 1) * PAGE: page * PAGE]:
        k = keys.get(e.key_id)
        rows.append({
            "time": money.time(e.time, seconds=True), "key": f"{k.prefix}…" if k else "deleted key",
            "key_name": k.name if k else "", "model": e.model, "provider": e.provider,
            "status": e.status, "class": _status_class(e.status),
            "stream": "streamed" if e.stream else "", "input": e.input_tokens,
            "output": e.output_tokens, "cost": money(e.cost_micros),
        })
    filters = {"range": span, "key": key, "model": model, "status": status}

    def link(n: int) -> str:
        return "/console/requests?" + urlencode({**{k: v for k, v in filters.items() if v},
                                                 "page": n})

    return await render(
        request, "requests.html", rows=rows, total=len(picked), page_no=page, pages=pages,
        prev=link(page - 1) if page > 1 else "", next=link(page + 1) if page < pages else "",
        spans={k: v[0] for k, v in _SPANS.items()}, span=span, statuses=_STATUSES,
        keys=[(k.id, key_label(k)) for k in keys.values()], models=models, key=key,
        model=model, wanted_status=status, timezone=money.timezone, first=first.isoformat(),
    )


def routes(app: web.Application) -> None:
    app.router.add_get("/requests", show)
