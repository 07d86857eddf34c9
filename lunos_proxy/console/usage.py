"""The overview (``/console/usage``, where signing in lands): spend today and
this month, budgets, then usage by day and model for a chosen period as a
chart and a table; the same rows (per key too) as CSV.

Spend and usage come from `Accounting.usage` (the meter's counters per key, model
and day, days in the billing time zone); budgets from `budgets.statuses`.
The period is a preset (today, 7 days, 30 days, this month) or two ISO
dates; a wrong date keeps what was typed and says so next to the field,
with the default period shown below.

The chart is inline SVG drawn here, no script and no library: stacked bars
per day, one colour per model, y-axis ticks at round values, date ticks,
a tooltip (``<title>``) per bar and per day with formatted values. It is
sized in percent across and pixels down, so its text keeps its size on a
phone. Screen readers get the table, which holds the same numbers.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web

from .budgets import statuses
from .numbers import Money, count
from .pages import ConsoleError, account_id, current_account, money_of, render, store_of
from .spend import Totals, today_and_month

__all__ = ["PRESETS", "chart", "routes"]

_PALETTE = ("#1d4ed8", "#15803d", "#c2410c", "#7e22ce", "#0e7490", "#a16207", "#be185d",
            "#4b5563")
_METRICS = {"tokens": "Tokens", "requests": "Requests", "cost": "Cost"}
PRESETS = {"today": "Today", "7d": "Last 7 days", "30d": "Last 30 days", "month": "This month"}
_MAX_DAYS = 366
_H, _TOP, _BOTTOM = 260, 16, 28  # chart height, room above the bars and below (date ticks)
_MAX_DATE_TICKS = 6


def _preset(name: str, today: dt.date) -> tuple[dt.date, dt.date]:
    if name == "today":
        return today, today
    if name == "7d":
        return today - dt.timedelta(days=6), today
    if name == "month":
        return today.replace(day=1), today
    return today - dt.timedelta(days=29), today


def _typed(text: str) -> str:
    """What a date field shows back after an error: the date it names, written
    by us, or nothing; never the text itself (the page quotes no input)."""
    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        return ""


def _period(query: Any, today: dt.date) -> tuple[dt.date, dt.date, str, dict[str, str]]:
    """(first, last, preset or "", errors by field) for the query; with errors,
    the default period (30 days)."""
    preset = query.get("range", "")
    if preset in PRESETS or not (query.get("from") or query.get("to")):
        first, last = _preset(preset or "30d", today)
        return first, last, preset or "30d", {}
    errors: dict[str, str] = {}
    days: dict[str, dt.date] = {}
    for field in ("from", "to"):
        text = query.get(field, "")
        try:
            days[field] = dt.date.fromisoformat(text) if text else today
        except ValueError:
            errors[field] = "Write the date as YYYY-MM-DD, e.g. " + today.isoformat() + "."
    if not errors:
        first, last = days["from"], days["to"]
        if first > last:
            errors["to"] = "The last day must not be before the first."
        elif (last - first).days >= _MAX_DAYS:
            errors["to"] = f"Choose at most {_MAX_DAYS} days."
        else:
            return first, last, "", {}
    first, last = _preset("30d", today)
    return first, last, "", errors


def _nice_step(top: float, ticks: int = 4) -> float:
    raw = top / ticks
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for factor in (1.0, 2.0, 2.5, 5.0):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10.0 * magnitude


def chart(days: Sequence[str], models: Sequence[str], cells: dict[tuple[str, str], Totals],
          metric: str, fmt: Callable[[float], str]) -> dict[str, Any]:
    """What the template draws: bars (x and width in percent of the width, y
    and height in pixels), y ticks and date ticks, each with its label."""
    per_day = [sum(cells[d, m].value(metric) for m in models if (d, m) in cells) for d in days]
    top = max(per_day, default=0)
    step = _nice_step(top) if top > 0 else 1
    scale_top = step * max(1, math.ceil(top / step))
    if metric != "cost" and step < 1:  # whole requests and tokens
        step, scale_top = 1, max(1, math.ceil(top))
    plot = _H - _TOP - _BOTTOM
    n = max(len(days), 1)
    width = 100 / n
    bars: list[dict[str, Any]] = []
    columns: list[dict[str, Any]] = []
    for i, day in enumerate(days):
        y = float(_H - _BOTTOM)
        parts = []
        for j, model in enumerate(models):
            cell = cells.get((day, model))
            value = cell.value(metric) if cell is not None else 0
            if not value:
                continue
            h = value / scale_top * plot
            y -= h
            parts.append(f"{model} {fmt(value)}")
            bars.append({"x": round(i * width + width * 0.15, 3), "y": round(y, 1),
                         "w": round(width * 0.7, 3), "h": round(max(h, 1.0), 1),
                         "fill": _PALETTE[j % len(_PALETTE)],
                         "title": f"{day}, {model}: {fmt(value)}"})
        columns.append({"x": round(i * width, 3), "w": round(width, 3),
                        "title": f"{day}: {fmt(per_day[i])}"
                        + (f" ({', '.join(parts)})" if len(parts) > 1 else "")})
    yticks = []
    v = 0.0
    while v <= scale_top + 1e-9:
        yticks.append({"y": round(_H - _BOTTOM - v / scale_top * plot, 1), "label": fmt(v)})
        v += step
    every = max(1, math.ceil(n / _MAX_DATE_TICKS))
    xticks = []
    for i in range(0, n, every):
        d = dt.date.fromisoformat(days[i])
        anchor = "start" if i == 0 and n > 1 else "middle"
        x = i * width + (0 if anchor == "start" else width / 2)
        xticks.append({"x": round(x, 3), "label": f"{d:%b} {d.day}", "anchor": anchor})
    return {"bars": bars, "columns": columns, "yticks": yticks, "xticks": xticks,
            "height": _H, "baseline": _H - _BOTTOM}


async def show(request: web.Request) -> web.Response:
    money = money_of(request)
    today = money.today()
    first, last, preset, errors = _period(request.query, today)
    metric = request.query.get("metric", "tokens")
    if metric not in _METRICS:
        metric = "tokens"
    store, me = store_of(request), account_id(request)
    month = today.replace(day=1)
    earliest = min(first, month)
    rows = await store.usage(me, earliest.isoformat(), max(last, today).isoformat())
    spend_today, spend_month = today_and_month(rows, today)
    cells: dict[tuple[str, str], Totals] = defaultdict(Totals)
    total = Totals()
    for row in rows:
        if first.isoformat() <= row.day <= last.isoformat():
            cells[row.day, row.model].add(row)
            total.add(row)
    models = sorted({m for _, m in cells})
    days = [(first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
    table = [(day, model, cells[day, model]) for day, model in sorted(cells)]
    fmt = _formatter(metric, money)
    account = await current_account(request)
    keys = await store.keys_of(me)
    return await render(
        request, "usage.html", status=400 if errors else 200,
        first=_typed(request.query.get("from", "")) if errors else first.isoformat(),
        last=_typed(request.query.get("to", "")) if errors else last.isoformat(),
        shown=(first.isoformat(), last.isoformat()), errors=errors, preset=preset,
        presets=PRESETS, metric=metric, metrics=_METRICS, table=table, total=total,
        chart=chart(days, models, cells, metric, fmt), money=money,
        legend=[(m, _PALETTE[j % len(_PALETTE)]) for j, m in enumerate(models)],
        today=spend_today, month=spend_month, month_name=f"{today:%B %Y}",
        budgets=await statuses(request, account),
        active_keys=sum(1 for k in keys if not k.revoked), any_keys=bool(keys),
    )


def _formatter(metric: str, money: Money) -> Callable[[float], str]:
    if metric == "cost":
        return lambda v: money(round(v))
    return count


async def download(request: web.Request) -> web.Response:
    first, last, _, errors = _period(request.query, money_of(request).today())
    if errors:
        raise ConsoleError(400, "Choose a period of 1 to 366 days, dates written YYYY-MM-DD.")
    rows = await store_of(request).usage(account_id(request), first.isoformat(),
                                         last.isoformat())
    prefixes = {k.id: k.prefix for k in await store_of(request).keys_of(account_id(request))}
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["day", "model", "key", "requests", "input_tokens", "output_tokens",
                     "cached_input_tokens", "cost"])
    for r in sorted(rows, key=lambda r: (r.day, r.model, prefixes.get(r.key_id, r.key_id))):
        writer.writerow([r.day, r.model, prefixes.get(r.key_id, r.key_id), r.requests,
                         r.input_tokens, r.output_tokens, r.cached_input_tokens,
                         f"{r.cost_micros / 1e6:.6f}"])
    name = f"lunos-usage-{first.isoformat()}-{last.isoformat()}.csv"
    return web.Response(text=out.getvalue(), content_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})


def routes(app: web.Application) -> None:
    app.router.add_get("/usage", show)
    app.router.add_get("/usage.csv", download)
