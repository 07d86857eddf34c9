"""Billing days and months in the configured time zone, whatever order instants come in."""

from __future__ import annotations

import datetime as dt

from plugins.meter.budgets import Calendar


def at(moment: str) -> float:
    return dt.datetime.fromisoformat(moment).timestamp()


def test_days_change_at_midnight_in_the_zone_forwards_and_back() -> None:
    paris = Calendar("Europe/Paris")
    assert paris.day(at("2026-12-31T22:59:59+00:00")) == "2026-12-31"
    assert paris.day(at("2026-12-31T22:59:59.999+00:00")) == "2026-12-31"
    assert paris.day(at("2026-12-31T23:00:00+00:00")) == "2027-01-01"
    assert paris.month(at("2026-12-31T23:00:30+00:00")) == "2027-01"
    assert paris.day(at("2026-12-31T22:59:30+00:00")) == "2026-12-31"  # a request that began earlier
    assert paris.day(at("2027-01-01T00:00:00+00:00")) == "2027-01-01"
    utc = Calendar("UTC")
    assert utc.day(at("2026-12-31T23:59:59+00:00")) == "2026-12-31"
    assert utc.day(at("2027-01-01T00:00:00+00:00")) == "2027-01-01"
    assert utc.day(0.0) == "1970-01-01"
