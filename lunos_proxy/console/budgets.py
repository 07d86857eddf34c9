"""The budgets page: the limits that apply to the account, what it spent, the alerts.

Limits are the meter's, read through the view it publishes
(`lunos_proxy.views.METER`), so they are the running config's: the
account's own rule or its plan's, its keys' rules, prepaid credit. Spend
is read from the same store counters the meter checks (`Store.spend`), in
the budgets' time zone, so the page shows what enforcement sees. Alert
thresholds (soft) come from the operator's YAML unless the account holder
sets the account's own here; the meter reads them from the key's principal
(auth loads them with the account).
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from aiohttp import web

from ..keys import INVALIDATE_CHANNEL
from ..views import METER, BudgetLimit, Budgets
from .pages import account_gone, audit, current_account, form, gateway_of, render, store_of

__all__ = ["budgets_of", "routes"]

_KINDS = {"daily": "Daily", "monthly": "Monthly", "prepaid": "Prepaid credit"}


def budgets_of(request: web.Request) -> Budgets | None:
    """The meter's budgets, if the meter is in the pipeline (the page says
    so when it is not)."""
    meter = gateway_of(request).views.get(METER)
    return None if meter is None else meter.budgets


def _money(micros: int) -> str:
    return f"{Decimal(micros) / 1_000_000:.4f}"


async def _row(request: web.Request, limit: BudgetLimit, what: str) -> dict[str, Any]:
    store = store_of(request)
    if limit.kind == "prepaid":
        spent, credit = await store.spend(limit.subject, ["total", "credit"])
        return {"what": what, "kind": _KINDS[limit.kind], "limit": _money(credit),
                "spent": _money(spent), "used": f"{spent / credit:.0%}" if credit else "—",
                "soft": "", "period": ""}
    [spent] = await store.spend(limit.subject, [limit.period])
    return {"what": what, "kind": _KINDS[limit.kind], "limit": _money(limit.micros),
            "spent": _money(spent), "used": f"{spent / limit.micros:.0%}" if limit.micros else "—",
            "soft": ", ".join(f"{f:.0%}" for f in limit.soft), "period": limit.period[2:]}


async def show(request: web.Request, *, status: int = 200, error: str = "") -> web.Response:
    account = await current_account(request)
    budgets = budgets_of(request)
    rows: list[dict[str, Any]] = []
    timezone = "UTC"
    if budgets is not None:
        now, timezone = time.time(), budgets.timezone
        for limit in budgets.limits(account.id, "", account.plan, now, account.alert_thresholds):
            if limit.subject.startswith("account:"):
                rows.append(await _row(request, limit, "Your account"))
        for key in await store_of(request).keys_of(account.id):
            if key.revoked or not budgets.has_key_rule(key.id):
                continue
            for limit in budgets.limits(account.id, key.id, None, now):
                if limit.subject == f"key:{key.id}":
                    rows.append(await _row(request, limit, f"Key {key.prefix}…"))
    own = account.alert_thresholds
    return await render(request, "budgets.html", status=status, rows=rows, timezone=timezone,
                        metered=budgets is not None, error=error,
                        saved=request.query.get("saved") == "1",
                        own=", ".join(f"{f * 100:g}" for f in own) if own else "")


def parse_percentages(text: str) -> list[float] | None:
    """"50, 80, 100" → [0.5, 0.8, 1.0]; blank → None (the operator's thresholds).
    Raises ValueError for anything else."""
    parts = [p for p in text.replace(";", ",").split(",") if p.strip()]
    if not parts:
        return None
    if len(parts) > 10:
        raise ValueError("at most 10 thresholds")
    values = sorted({float(p.strip().rstrip("%")) for p in parts})
    if any(not 0 < v <= 1000 for v in values):
        raise ValueError("thresholds are percentages above 0 and at most 1000")
    return [v / 100 for v in values]


async def set_alerts(request: web.Request) -> web.Response:
    data = await form(request)
    try:
        thresholds = parse_percentages(data.get("thresholds", ""))
    except ValueError:
        return await show(
            request,
            status=400,
            error="Enter up to 10 percentages between 0 and 1000, separated by commas.",
        )
    account = await current_account(request)
    account.alert_thresholds = thresholds
    account.updated = time.time()
    store = store_of(request)
    if not await store.update_account(account):  # erased meanwhile: not brought back
        raise account_gone()
    # Auth caches the account with each key: every instance reloads it.
    await store.publish(INVALIDATE_CHANNEL, f"account:{account.id}")
    await audit(request, "budgets.alerts", account.id)
    raise web.HTTPSeeOther("/console/budgets?saved=1")


def routes(app: web.Application) -> None:
    app.router.add_get("/budgets", show)
    app.router.add_post("/budgets/alerts", set_alerts)
