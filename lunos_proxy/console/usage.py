"""The usage page: requests, tokens and cost by day and model, as a chart and a
table, for a chosen period; the same rows (per key too) as CSV.

Rows come from `Store.usage` (the meter's counters per key, model and day).
The chart is inline SVG drawn here: stacked bars per day, one colour per
model, no script and no library.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections import defaultdict
from collections.abc import Sequence

from aiohttp import web

from ..store.base import UsageRow
from .pages import ConsoleError, account_id, render, store_of

__all__ = ["Totals", "bars", "routes"]

_PALETTE = ("#2563eb", "#16a34a", "#ea580c", "#9333ea", "#0891b2", "#ca8a04", "#db2777",
            "#4b5563")
_METRICS = {"tokens": "Tokens", "requests": "Requests", "cost": "Cost"}
_MAX_DAYS = 366
_W, _H, _PAD = 720, 240, 40


class Totals:
    __slots__ = ("cost_micros", "input_tokens", "output_tokens", "requests")

    def __init__(self) -> None:
        self.requests = self.input_tokens = self.output_tokens = self.cost_micros = 0

    def add(self, row: UsageRow) -> None:
        self.requests += row.requests
        self.input_tokens += row.input_tokens
        self.output_tokens += row.output_tokens
        self.cost_micros += row.cost_micros

    def value(self, metric: str) -> float:
        if metric == "requests":
            return self.requests
        if metric == "cost":
            return self.cost_micros / 1e6
        return self.input_tokens + self.output_tokens

    @property
    def cost(self) -> str:
        return f"{self.cost_micros / 1e6:.4f}"


def _period(request: web.Request) -> tuple[dt.date, dt.date]:
    today = dt.datetime.now(dt.UTC).date()
    try:
        last = dt.date.fromisoformat(request.query.get("to") or today.isoformat())
        first = dt.date.fromisoformat(
            request.query.get("from") or (last - dt.timedelta(days=29)).isoformat()
        )
    except ValueError:
        raise ConsoleError(400, "Dates are written YYYY-MM-DD.") from None
    if first > last or (last - first).days >= _MAX_DAYS:
        raise ConsoleError(400, f"Choose a period of 1 to {_MAX_DAYS} days, first day first.")
    return first, last


def bars(
    days: Sequence[str], models: Sequence[str], cells: dict[tuple[str, str], Totals], metric: str
) -> list[dict[str, object]]:
    """Rectangles of a stacked bar chart in a _W x _H box (what the template draws)."""
    heights = [sum(cells[d, m].value(metric) for m in models if (d, m) in cells) for d in days]
    top = max(heights, default=0) or 1
    step = (_W - _PAD) / max(len(days), 1)
    out: list[dict[str, object]] = []
    for i, day in enumerate(days):
        y = float(_H - 20)
        for j, model in enumerate(models):
            cell = cells.get((day, model))
            if cell is None or not cell.value(metric):
                continue
            h = cell.value(metric) / top * (_H - 40)
            y -= h
            out.append({"x": round(_PAD + i * step + step * 0.1, 1), "y": round(y, 1),
                        "w": round(step * 0.8, 1), "h": round(h, 1),
                        "fill": _PALETTE[j % len(_PALETTE)],
                        "title": f"{day} {model}: {cell.value(metric):g}"})
    return out


async def _rows(request: web.Request) -> tuple[dt.date, dt.date, list[UsageRow]]:
    first, last = _period(request)
    rows = await store_of(request).usage(account_id(request), first.isoformat(),
                                         last.isoformat())
    return first, last, rows


async def show(request: web.Request) -> web.Response:
    first, last, rows = await _rows(request)
    metric = request.query.get("metric", "tokens")
    if metric not in _METRICS:
        metric = "tokens"
    cells: dict[tuple[str, str], Totals] = defaultdict(Totals)
    total = Totals()
    for row in rows:
        cells[row.day, row.model].add(row)
        total.add(row)
    models = sorted({m for _, m in cells})
    days = [(first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
    table = [(day, model, cells[day, model]) for day, model in sorted(cells)]
    return await render(
        request, "usage.html", first=first.isoformat(), last=last.isoformat(), metric=metric,
        metrics=_METRICS, table=table, total=total, bars=bars(days, models, cells, metric),
        legend=[(m, _PALETTE[j % len(_PALETTE)]) for j, m in enumerate(models)],
        width=_W, height=_H, pad=_PAD, first_label=days[0], last_label=days[-1],
    )


async def download(request: web.Request) -> web.Response:
    first, last, rows = await _rows(request)
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
