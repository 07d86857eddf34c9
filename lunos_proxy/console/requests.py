"""The request log: the account's recent requests, metadata only, never content.

Rows are the meter's per-request usage events, read from the records
database (lunos_proxy/records/) like the admin API's
``/admin/usage/{account}/events``: when, which key
(its display prefix), model, provider, endpoint (which of the gateway's
API routes: a value of `ENDPOINTS`, never a path the client sent), status,
streamed or not, tokens, cost and latency (as the gateway measured it, to
the answer's last byte). Events written before the records held endpoint
and latency show neither ("—"). They hold no prompt or answer, so none can
be shown. The log covers today, the last 7 (the default) or 30 days in the
billing time zone, newest first, 50 a page, filtered by key, model,
endpoint and status class. The database does the filtering
and paging: "Older" continues past the page's last event, "Newer" reads back
from its first, so a page costs the same however long the log is.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import urlencode

import msgspec
from aiohttp import web

from ..records import EventQuery
from ..records.base import parse_cursor
from .keys import key_label
from .numbers import duration
from .pages import account_id, gateway_of, money_of, render, store_of

__all__ = ["ENDPOINTS", "routes"]

PAGE = 50
_SPANS = {"today": ("Today", 0), "7d": ("Last 7 days", 6), "30d": ("Last 30 days", 29)}
_STATUSES = {"ok": "Succeeded (2xx)", "client": "Refused (4xx)", "server": "Failed (5xx)"}
_STATUS_RANGES = {"": (0, 1000), "ok": (0, 400), "client": (400, 500), "server": (500, 1000)}
# The metered API routes (the meter's METERED; tests/console/test_requests.py
# keeps the two equal), with what the filter calls them.
ENDPOINTS = {
    "chat/completions": "Chat Completions", "responses": "Responses",
    "completions": "Completions", "embeddings": "Embeddings", "messages": "Messages (Anthropic)",
}


def _status_class(status: int) -> str:
    return "ok" if status < 400 else ("client" if status < 500 else "server")


async def show(request: web.Request) -> web.Response:
    q = request.query
    span = q.get("range", "7d") if q.get("range") in _SPANS else "7d"
    money = money_of(request)
    today = money.today()
    first = today - dt.timedelta(days=_SPANS[span][1])
    store, records, me = store_of(request), gateway_of(request).records, account_id(request)
    keys = {k.id: k for k in await store.keys_of(me)}
    models = sorted({r.model for r in await store.usage(me, first.isoformat(), today.isoformat())})
    key, model = q.get("key", ""), q.get("model", "")
    # Filters with choices keep one of them, or none (nothing else goes on to the links).
    endpoint = q.get("endpoint", "") if q.get("endpoint") in ENDPOINTS else ""
    status = q.get("status", "") if q.get("status") in _STATUS_RANGES else ""
    low, high = _STATUS_RANGES[status]
    query = EventQuery(account_id=me, first_day=first.isoformat(), last_day=today.isoformat(),
                       key_id=key or None, model=model or None, endpoint=endpoint or None,
                       status_from=low, status_to=high, newest_first=True, limit=PAGE)
    total = await records.count(query)
    pages = max(1, -(-total // PAGE))
    try:
        page = min(pages, max(1, int(q.get("page", "1"))))
    except ValueError:
        page = 1
    after, before = _cursor(q.get("after", "")), _cursor(q.get("before", ""))
    if before:  # "Newer": the page just newer than `before`, read oldest first
        back = await records.events(msgspec.structs.replace(
            query, newest_first=False, after=before))
        shown = back.events[::-1]
        older, newer = back.first, back.next
    else:
        found = await records.events(msgspec.structs.replace(query, after=after))
        shown = found.events
        older, newer = found.next, found.first if after else ""
    if not after and not before:
        page = 1
    rows: list[dict[str, Any]] = []
    for e in shown:
        k = keys.get(e.key_id)
        rows.append({
            "time": money.time(e.time, seconds=True), "key": f"{k.prefix}…" if k else "deleted key",
            "key_name": k.name if k else "", "model": e.model, "provider": e.provider,
            "endpoint": e.endpoint, "status": e.status, "class": _status_class(e.status),
            "stream": "streamed" if e.stream else "", "input": e.input_tokens,
            "output": e.output_tokens, "cost": money(e.cost_micros),
            "latency": duration(e.latency_ms) if e.endpoint else "—",
        })
    filters = {"range": span, "key": key, "model": model, "endpoint": endpoint, "status": status}

    def link(n: int, **at: str) -> str:
        return "/console/requests?" + urlencode({**{k: v for k, v in filters.items() if v},
                                                 **at, "page": n})

    return await render(
        request, "requests.html", rows=rows, total=total, page_no=page, pages=pages,
        prev=link(max(1, page - 1), before=newer) if newer else "",
        next=link(min(pages, page + 1), after=older) if older else "",
        spans={k: v[0] for k, v in _SPANS.items()}, span=span, statuses=_STATUSES,
        keys=[(k.id, key_label(k)) for k in keys.values()], models=models, key=key,
        model=model, endpoints=ENDPOINTS, endpoint=endpoint, wanted_status=status,
        timezone=money.timezone, first=first.isoformat(),
    )


def _cursor(text: str) -> str:
    """`text` if it is a cursor; "" (the newest page) if not."""
    try:
        parse_cursor(text)
    except ValueError:
        return ""
    return text


def routes(app: web.Application) -> None:
    app.router.add_get("/requests", show)
