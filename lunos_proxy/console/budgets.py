"""The budgets page: the limits that apply to the account, and what it spent.

Limits come from the meter plugin's `budgets` settings (the YAML), read
from the running config: the account's own rule, else its plan's, and
the rules of its keys. Spend is summed from the usage counters
(`Store.usage`) for this calendar day and month (UTC).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from aiohttp import web

from ..config import Config
from .pages import account_id, config_of, current_account, render, store_of

__all__ = ["routes", "rules_for"]


def _budgets(config: Config) -> Any:
    for entry, settings in zip(config.pipeline, config.plugin_settings, strict=False):
        if entry.name == "meter":
            return getattr(settings, "budgets", None)
    return None


def rules_for(config: Config, account: str, plan: str | None,
              key_ids: list[str]) -> list[tuple[str, Any]]:
    """(what it applies to, rule) for the account and each of its keys that has one."""
    budgets = _budgets(config)
    if budgets is None:
        return []
    found: list[tuple[str, Any]] = []
    rule = budgets.accounts.get(account) or (budgets.plans.get(plan) if plan else None)
    if rule is not None:
        found.append(("Your account" + ("" if account in budgets.accounts else f" (plan {plan})"),
                      rule))
    found += [(f"Key {k}", budgets.keys[k]) for k in key_ids if k in budgets.keys]
    return found


def _money(micros: int) -> str:
    return f"{Decimal(micros) / 1_000_000:.4f}"


async def show(request: web.Request) -> web.Response:
    account = await current_account(request)
    keys = await store_of(request).keys_of(account.id)
    today = dt.datetime.now(dt.UTC).date()
    first = today.replace(day=1).isoformat()
    month_rows = await store_of(request).usage(account_id(request), first, today.isoformat())
    spent_month = sum(r.cost_micros for r in month_rows)
    spent_today = sum(r.cost_micros for r in month_rows if r.day == today.isoformat())
    rules = [
        {"what": what, "daily": rule.daily, "monthly": rule.monthly,
         "soft": ", ".join(f"{f:.0%}" for f in rule.soft)}
        for what, rule in rules_for(config_of(request), account.id, account.plan,
                                    [k.id for k in keys])
    ]
    return await render(request, "budgets.html", rules=rules, today=_money(spent_today),
                        month=_money(spent_month))


def routes(app: web.Application) -> None:
    app.router.add_get("/budgets", show)
