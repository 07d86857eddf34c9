"""Spend today and this month: the meter's usage counters summed, for the
overview's and the budgets page's cards (shown with or without budgets)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from ..store.base import UsageRow

__all__ = ["Totals", "today_and_month"]


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
            return self.cost_micros
        return self.input_tokens + self.output_tokens


def today_and_month(rows: Iterable[UsageRow], today: dt.date) -> tuple[Totals, Totals]:
    """The rows of `today` and of its month so far, summed (`rows` may hold more)."""
    day, month = today.isoformat(), today.replace(day=1).isoformat()
    spent_today, spent_month = Totals(), Totals()
    for row in rows:
        if row.day == day:
            spent_today.add(row)
        if month <= row.day <= day:
            spent_month.add(row)
    return spent_today, spent_month
