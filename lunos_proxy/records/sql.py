"""SQL the two backends share: the event query's conditions, its page, the summary.

Placeholders differ (SQLite `?`, PostgreSQL `$n`): callers pass `mark`,
which makes the n-th (1-based) one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .base import (
    BillingRecord,
    EventPage,
    EventQuery,
    UsageEvent,
    UsageRow,
    cursor,
    page_size,
    parse_cursor,
)

__all__ = [
    "EVENT_COLUMNS",
    "billing_rows",
    "count_select",
    "event_row",
    "event_select",
    "page",
    "summary_select",
    "summed",
]

EVENT_COLUMNS = (
    "day", "time", "request_id", "account_id", "key_id", "model", "provider", "status", "stream",
    "input_tokens", "output_tokens", "cached_input_tokens", "cache_creation_tokens",
    "reasoning_tokens", "cost_micros", "usage_source", "endpoint", "latency_ms",
)


def billing_rows(billing: Sequence[BillingRecord]) -> list[tuple[object, ...]]:
    """One row per (account_id, period, model), summed (an upsert may touch a
    line once per statement), with the first line's id and time; in
    (account_id, period, model, id, requests, input_tokens, output_tokens,
    cost_micros, created) order."""
    rows: dict[tuple[str, str, str], list[Any]] = {}
    for b in billing:
        row = rows.get((b.account_id, b.period, b.model))
        if row is None:
            rows[(b.account_id, b.period, b.model)] = [
                b.account_id, b.period, b.model, b.id, b.requests, b.input_tokens,
                b.output_tokens, b.cost_micros, b.created]
        else:
            row[4] += b.requests
            row[5] += b.input_tokens
            row[6] += b.output_tokens
            row[7] += b.cost_micros
    return [tuple(r) for r in rows.values()]


def event_row(e: UsageEvent) -> tuple[object, ...]:
    """`e`'s values in `EVENT_COLUMNS` order."""
    return (e.day, e.time, e.request_id, e.account_id, e.key_id, e.model, e.provider,
            e.status, e.stream, e.input_tokens, e.output_tokens, e.cached_input_tokens,
            e.cache_creation_tokens, e.reasoning_tokens, e.cost_micros, e.usage_source,
            e.endpoint, e.latency_ms)


def event_select(
    table: str, query: EventQuery, mark: Callable[[int], str]
) -> tuple[str, list[Any]]:
    """The SELECT of one page of `query` (one row more than the page, to
    tell whether another follows), and its arguments."""
    where, args = _conditions(query, mark)
    if query.after:
        args += parse_cursor(query.after)
        past = "<" if query.newest_first else ">"
        where += f" AND (time, seq) {past} ({mark(len(args) - 1)}, {mark(len(args))})"
    order = "time DESC, seq DESC" if query.newest_first else "time, seq"
    sql = (f"SELECT seq, {', '.join(EVENT_COLUMNS)} FROM {table} WHERE {where} "
           f"ORDER BY {order} LIMIT {page_size(query) + 1}")
    return sql, args


def count_select(
    table: str, query: EventQuery, mark: Callable[[int], str]
) -> tuple[str, list[Any]]:
    """The SELECT count(*) of `query` (its `after` and `limit` aside), and its arguments."""
    where, args = _conditions(query, mark)
    return f"SELECT count(*) FROM {table} WHERE {where}", args


def _conditions(query: EventQuery, mark: Callable[[int], str]) -> tuple[str, list[Any]]:
    args: list[Any] = [query.account_id, query.first_day, query.last_day]
    where = [f"account_id = {mark(1)}", f"day >= {mark(2)}", f"day <= {mark(3)}"]
    for column, value in (("key_id", query.key_id), ("model", query.model),
                          ("endpoint", query.endpoint)):
        if value is not None:
            args.append(value)
            where.append(f"{column} = {mark(len(args))}")
    if query.status_from > 0 or query.status_to < 1000:
        args += (query.status_from, query.status_to)
        where.append(f"status >= {mark(len(args) - 1)} AND status < {mark(len(args))}")
    return " AND ".join(where), args


def page(query: EventQuery, rows: Sequence[Mapping[str, Any]]) -> EventPage:
    """The page `event_select`'s rows make."""
    size = page_size(query)
    shown = rows[:size]
    return EventPage(
        events=[_event(r) for r in shown],
        next=cursor(shown[-1]["time"], shown[-1]["seq"]) if len(rows) > size else "",
        first=cursor(shown[0]["time"], shown[0]["seq"]) if shown else "",
    )


def _event(row: Mapping[str, Any]) -> UsageEvent:
    fields = {name: row[name] for name in EVENT_COLUMNS}
    fields["stream"] = bool(fields["stream"])  # SQLite keeps an integer
    return UsageEvent(**fields)


def summary_select(table: str, mark: Callable[[int], str]) -> str:
    """Sums per (day, key_id, model) of an account's days in [first, last]
    (arguments: account, first day, last day)."""
    return (
        "SELECT day, key_id, model, count(*) AS requests, sum(input_tokens) AS i, "
        "sum(output_tokens) AS o, sum(cached_input_tokens) AS c, sum(cost_micros) AS m "
        f"FROM {table} WHERE account_id = {mark(1)} AND day >= {mark(2)} AND day <= {mark(3)} "
        "GROUP BY day, key_id, model ORDER BY day, key_id, model"
    )


def summed(rows: Sequence[Mapping[str, Any]]) -> list[UsageRow]:
    return [
        UsageRow(day=r["day"], key_id=r["key_id"], model=r["model"], requests=int(r["requests"]),
                 input_tokens=int(r["i"]), output_tokens=int(r["o"]),
                 cached_input_tokens=int(r["c"]), cost_micros=int(r["m"]))
        for r in rows
    ]
