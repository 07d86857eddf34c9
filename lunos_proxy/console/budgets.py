"""The budgets page: the limits that apply to the account, what it spent, the alerts.

Limits are the meter's, read through the view it publishes
(`lunos_proxy.views.METER`), so they are the running config's: the
account's own rule or its plan's, its keys' rules, prepaid credit. Spend
is read from the same store counters the meter checks (`Accounting.spend`), in
the budgets' time zone, so the page shows what enforcement sees: a limit
whose spend reached it is *exhausted* (the meter refuses requests under it
until the period resets; prepaid credit until it is topped up), and every
page that shows budgets says so in a banner (`statuses`, used by the
overview too). Before that, a limit is *nearly spent* once its spend
reaches the highest alert threshold below 100 % (80 % when there is
none), and the banner warns with what is left and when it resets: the
moment the holder's own alerts would fire, seen where the holder is.

Alert thresholds (soft) come from the operator's YAML unless the account
holder sets the account's own here, as whole percentages from 1 to 100 of
the account's limits. Alerts go to the meter's webhook (the operator's),
not to the holder directly; the page says which. The meter reads them from
the key's principal (auth loads them with the account).
"""

from __future__ import annotations

import math
import time
from typing import Any

from aiohttp import web

from ..keys import INVALIDATE_CHANNEL
from ..store.accounting import Accounting
from ..store.base import AccountRecord
from ..views import METER, BudgetLimit, Budgets, MeterView
from .numbers import Money
from .pages import (
    account_gone,
    audit,
    current_account,
    flash,
    form,
    gateway_of,
    money_of,
    render,
    store_of,
)
from .spend import today_and_month

__all__ = ["meter_of", "nearly_at", "parse_percentages", "routes", "statuses"]

_KINDS = {"daily": "Daily", "monthly": "Monthly", "prepaid": "Prepaid credit"}
_MAX_THRESHOLDS = 10
_NEARLY = 0.8  # "nearly spent" without an alert threshold below 100 %


def meter_of(request: web.Request) -> MeterView | None:
    """The meter's view, if the meter is in the pipeline (the pages say so
    when it is not: spend is then not metered)."""
    return gateway_of(request).views.get(METER)


async def _status(store: Accounting, rules: Budgets, money: Money, limit: BudgetLimit, what: str,
                  now: float) -> dict[str, Any]:
    if limit.kind == "prepaid":
        spent, amount = await store.spend(limit.subject, ["total", "credit"])
        resets = "when credit is added"
    else:
        [spent] = await store.spend(limit.subject, [limit.period])
        amount = limit.micros
        # Periods end on a whole minute; seconds_left drops the fraction.
        ends = math.ceil((now + rules.seconds_left(now, limit.period[0])) / 60) * 60
        resets = f"{money.time(ends)} {money.timezone}"
    fraction = spent / amount if amount else (1.0 if spent or limit.kind == "prepaid" else 0.0)
    exhausted = spent >= amount
    return {
        "what": what, "kind": _KINDS[limit.kind], "period": limit.period[2:],
        "limit": money(amount), "spent": money(spent), "left": money(max(0, amount - spent)),
        "percent": min(100, round(fraction * 100)),
        "used": "under 1%" if 0 < fraction < 0.005 else f"{fraction:.0%}",
        "exhausted": exhausted, "nearly": not exhausted and fraction >= nearly_at(limit.soft),
        "resets": resets,
        "soft": ", ".join(f"{f:.0%}" for f in limit.soft),
    }


def nearly_at(soft: tuple[float, ...]) -> float:
    """The fraction of a limit from which it is shown as nearly spent: the
    highest alert threshold below the whole limit, else `_NEARLY`."""
    return max((f for f in soft if f < 1), default=_NEARLY)


async def statuses(request: web.Request, account: AccountRecord) -> list[dict[str, Any]]:
    """Every budget limit on the account and its live keys, with spend now."""
    meter = meter_of(request)
    rules = None if meter is None else meter.budgets
    if rules is None:
        return []
    store, money = store_of(request), money_of(request)
    now = time.time()
    out: list[dict[str, Any]] = []
    for limit in rules.limits(account.id, "", account.plan, now, account.alert_thresholds):
        if limit.subject.startswith("account:"):
            out.append(await _status(store, rules, money, limit, "Your account", now))
    for key in await store.keys_of(account.id):
        if key.revoked or not rules.has_key_rule(key.id):
            continue
        for limit in rules.limits(account.id, key.id, None, now):
            if limit.subject == f"key:{key.id}":
                label = f"Key {key.name} ({key.prefix}…)" if key.name else f"Key {key.prefix}…"
                out.append(await _status(store, rules, money, limit, label, now))
    return out


async def show(request: web.Request, *, status: int = 200, error: str = "",
               typed: str | None = None) -> web.Response:
    account = await current_account(request)
    meter = meter_of(request)
    own = account.alert_thresholds
    money = money_of(request)
    today = money.today()
    rows = await store_of(request).usage(account.id, today.replace(day=1).isoformat(),
                                         today.isoformat())
    spent_today, spent_month = today_and_month(rows, today)
    return await render(
        request, "budgets.html", status=status, rows=await statuses(request, account),
        timezone=money.timezone, metered=meter is not None, money=money,
        today=spent_today, month=spent_month, month_name=f"{today:%B %Y}",
        limited=meter is not None and meter.budgets is not None, error=error,
        webhook=meter is not None and meter.alerts_webhook,
        own=typed if typed is not None else (", ".join(f"{f * 100:g}" for f in own)
                                             if own else ""),
    )


def parse_percentages(text: str) -> list[float] | None:
    """"50, 80, 100" → [0.5, 0.8, 1.0]; blank → None (the operator's thresholds).

    Whole or decimal percentages from 1 to 100 (a trailing % is allowed);
    raises ValueError with a message for the holder for anything else,
    fractions such as 0.5 included (they would mean half a percent)."""
    parts = [p.strip().rstrip("%").strip() for p in text.replace(";", ",").split(",")]
    parts = [p for p in parts if p]
    if not parts:
        return None
    if len(parts) > _MAX_THRESHOLDS:
        raise ValueError(f"Enter at most {_MAX_THRESHOLDS} percentages.")
    values: set[float] = set()
    for p in parts:
        try:
            v = float(p)
        except ValueError:
            raise ValueError(f"“{p[:20]}” is not a number: enter percentages such as "
                             "50, 80, 100.") from None
        if not 1 <= v <= 100:
            raise ValueError(f"{p[:20]} is outside 1 to 100: thresholds are percentages of the "
                             "budget (80 means 80 %, not 0.8).")
        values.add(v)
    return [v / 100 for v in sorted(values)]


async def set_alerts(request: web.Request) -> web.Response:
    typed = (await form(request)).get("thresholds", "")
    try:
        thresholds = parse_percentages(typed)
    except ValueError as e:
        return await show(request, status=400, error=str(e), typed=typed[:80])
    account = await current_account(request)
    account.alert_thresholds = thresholds
    account.updated = time.time()
    store = store_of(request)
    if not await store.update_account(account):  # erased meanwhile: not brought back
        raise account_gone()
    # Auth caches the account with each key: every instance reloads it.
    await store.publish(INVALIDATE_CHANNEL, f"account:{account.id}")
    await audit(request, "budgets.alerts", account.id)
    await flash(request, "Saved: alerts at " + ", ".join(f"{f * 100:g} %" for f in thresholds)
                if thresholds else "Saved: the service's alert thresholds apply.")
    raise web.HTTPSeeOther("/console/budgets")


def routes(app: web.Application) -> None:
    app.router.add_get("/budgets", show)
    app.router.add_post("/budgets/alerts", set_alerts)
