"""The usage API: what an account used and spent, by day and model, as JSON or CSV.

    GET  /admin/usage/{account_id}?from=2026-11-01&to=2026-11-30[&by=key][&format=csv]
         {"account_id", "from", "to", "currency", "metered",
          "rows": [{"day", "model", ["key_id",] "requests", "input_tokens",
                    "output_tokens", "cached_input_tokens", "cost_micros"}],
          "totals": {"requests", ..., "cost_micros"}}
    GET  /admin/usage/{account_id}/events?from=..&to=..[&key=..][&model=..][&endpoint=..]
                                         [&format=csv]
         per-request usage events (metadata only: no content, no path or
         header the client sent; `endpoint` is one of the gateway's API
         routes, `latency_ms` the gateway's own measure), oldest first, from the
         records database. JSON is paged: at most `limit` events (default
         1000, at most 10000) and "next", the `after` of the next page ("" at
         the end). CSV is every event of the range, streamed.
    GET  /admin/usage/{account_id}/balance
         spend today and this month (billing time zone), all-time spend and
         prepaid credit: {"day", "month", "spent_day_micros", ...}
    POST /admin/usage/{account_id}/credits   {"amount": "25.00"}
         adds prepaid credit (operator scope)

Without the meter in the pipeline the answers say so (``"metered": false``)
and assume USD and days in UTC. Days default to the current month so far.
Numbers are integers: tokens and micro-units of `currency` (1 USD =
1,000,000). The data is what the store (counters, balance) and the records
database (events) hold: usage reaches them within the meter's flush interval.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web

from ..money import MAX_AMOUNT, to_micros
from ..records import EventQuery
from ..records.base import MAX_PAGE, parse_cursor
from ..store.base import SpendDelta, UsageEvent, UsageRow
from ..views import METER, Budgets, MeterView
from .auth import GATEWAY, admin_error, audit_about, read_body, requires, send

if TYPE_CHECKING:
    from ..host import Host

__all__ = ["meter_view", "setup"]

_COUNTERS = ("requests", "input_tokens", "output_tokens", "cached_input_tokens", "cost_micros")


class _Credit(msgspec.Struct, forbid_unknown_fields=True):
    amount: Decimal


class _Unmetered:
    """What the usage API assumes while the meter is not in the pipeline:
    USD, days in UTC (the store holds no usage then but what it had)."""

    currency = "USD"
    timezone = "UTC"
    budgets: Budgets | None = None
    alerts_webhook = False
    events_retention_days = 0

    def day(self, at: float) -> str:
        return time.strftime("%Y-%m-%d", time.gmtime(at))

    def month(self, at: float) -> str:
        return self.day(at)[:7]


def meter_view(gateway: Host) -> MeterView:
    """The running meter's view (currency, billing calendar), or the defaults."""
    view = gateway.views.get(METER)
    return _Unmetered() if view is None else view


def _day(value: str | None, default: str, name: str) -> str:
    if value is None:
        return default
    try:
        return dt.date.fromisoformat(value).isoformat()
    except ValueError:
        raise admin_error(400, f"'{name}' must be a date, YYYY-MM-DD") from None


def _range(request: web.Request, meter: MeterView) -> tuple[str, str]:
    today = meter.day(time.time())
    first = _day(request.query.get("from"), today[:8] + "01", "from")
    last = _day(request.query.get("to"), today, "to")
    if first > last:
        raise admin_error(400, "'from' is after 'to'")
    return first, last


def _reply(request: web.Request, doc: dict[str, Any], rows: list[dict[str, Any]]) -> web.Response:
    fmt = request.query.get("format", "json")
    if fmt == "json":
        return send(doc)
    if fmt != "csv":
        raise admin_error(400, "'format' is json or csv")
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return web.Response(text=out.getvalue(), content_type="text/csv")


def _grouped(rows: list[UsageRow], by_key: bool) -> list[dict[str, Any]]:
    groups: dict[tuple[str, ...], dict[str, Any]] = {}
    for r in rows:
        group = (r.day, r.model, r.key_id) if by_key else (r.day, r.model)
        entry = groups.get(group)
        if entry is None:
            entry = {"day": r.day, "model": r.model}
            if by_key:
                entry["key_id"] = r.key_id
            entry.update(dict.fromkeys(_COUNTERS, 0))
            groups[group] = entry
        for name in _COUNTERS:
            entry[name] += getattr(r, name)
    return [groups[g] for g in sorted(groups)]


def _limit(request: web.Request) -> int:
    text = request.query.get("limit", "1000")
    # ASCII digits only (str.isdigit also takes superscripts and other scripts),
    # and few of them.
    if not (text.isascii() and text.isdigit() and len(text) <= 6) or not 1 <= int(text) <= MAX_PAGE:
        raise admin_error(400, f"'limit' must be a number from 1 to {MAX_PAGE}")
    return int(text)


async def _events_csv(
    request: web.Request, events: AsyncIterator[UsageEvent]
) -> web.StreamResponse:
    """Every event, as CSV written while it is read (an export may be large)."""
    response = web.StreamResponse(headers={"Content-Type": "text/csv; charset=utf-8"})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(UsageEvent.__struct_fields__)
    started = False
    async for e in events:
        writer.writerow(msgspec.structs.astuple(e))
        if out.tell() > 65_536:
            if not started:
                await response.prepare(request)
                started = True
            await response.write(out.getvalue().encode())
            out.seek(0)
            out.truncate()
    if not started:
        await response.prepare(request)
    await response.write(out.getvalue().encode())
    await response.write_eof()
    return response


def setup(app: web.Application, gateway: Host) -> None:
    @requires("read", "usage.show")
    async def show_usage(request: web.Request) -> web.Response:
        gw = request.app[GATEWAY]
        account_id = request.match_info["account_id"]
        meter = meter_view(gw)
        first, last = _range(request, meter)
        by = request.query.get("by", "model")
        if by not in ("model", "key"):
            raise admin_error(400, "'by' is model or key")
        rows = _grouped(await gw.store.usage(account_id, first, last), by == "key")
        totals = {name: sum(r[name] for r in rows) for name in _COUNTERS}
        doc = {
            "account_id": account_id,
            "from": first,
            "to": last,
            "currency": meter.currency,
            "metered": not isinstance(meter, _Unmetered),
            "rows": rows,
            "totals": totals,
        }
        return _reply(request, doc, rows)

    @requires("read", "usage.events")
    async def show_events(request: web.Request) -> web.StreamResponse:
        gw = request.app[GATEWAY]
        account_id = request.match_info["account_id"]
        first, last = _range(request, meter_view(gw))
        query = EventQuery(
            account_id=account_id, first_day=first, last_day=last,
            key_id=request.query.get("key"), model=request.query.get("model"),
            endpoint=request.query.get("endpoint"), after=request.query.get("after", ""),
            limit=_limit(request),
        )
        if query.after:
            try:
                parse_cursor(query.after)
            except ValueError:
                raise admin_error(400, "'after' must be the 'next' of a previous page") from None
        if request.query.get("format") == "csv":
            return await _events_csv(request, gw.records.all_events(query))
        page = await gw.records.events(query)
        events = [msgspec.structs.asdict(e) for e in page.events]
        doc = {"account_id": account_id, "from": first, "to": last, "events": events,
               "next": page.next}
        return _reply(request, doc, events)

    @requires("read", "usage.balance")
    async def show_balance(request: web.Request) -> web.Response:
        gw = request.app[GATEWAY]
        account_id = request.match_info["account_id"]
        meter = meter_view(gw)
        now = time.time()
        day, month = meter.day(now), meter.month(now)
        d, m, total, credit = await gw.store.spend(
            f"account:{account_id}", [f"d:{day}", f"m:{month}", "total", "credit"]
        )
        return send(
            {
                "account_id": account_id,
                "currency": meter.currency,
                "metered": not isinstance(meter, _Unmetered),
                "day": day,
                "month": month,
                "spent_day_micros": d,
                "spent_month_micros": m,
                "spent_total_micros": total,
                "credit_micros": credit,
                "prepaid_left_micros": credit - total,
            }
        )

    @requires("operator", "usage.credit")
    async def add_credit(request: web.Request) -> web.Response:
        gw = request.app[GATEWAY]
        account_id = request.match_info["account_id"]
        audit_about(request, account_id=account_id)
        body = await read_body(request, _Credit)
        problems: list[str] = []
        micros = to_micros(body.amount, "amount", problems)
        if problems or micros <= 0:
            raise admin_error(
                400, f"'amount' must be positive, at most {MAX_AMOUNT}, with at most 6 decimals"
            )
        subject = f"account:{account_id}"
        await gw.store.add_spend([SpendDelta(subject=subject, period="credit", micros=micros)])
        [credit, spent] = await gw.store.spend(subject, ["credit", "total"])
        return send(
            {
                "account_id": account_id,
                "credit_micros": credit,
                "prepaid_left_micros": credit - spent,
            }
        )

    app.router.add_get("/admin/usage/{account_id}", show_usage)
    app.router.add_get("/admin/usage/{account_id}/events", show_events)
    app.router.add_get("/admin/usage/{account_id}/balance", show_balance)
    app.router.add_post("/admin/usage/{account_id}/credits", add_credit)
