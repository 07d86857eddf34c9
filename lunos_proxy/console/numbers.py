"""How the console writes amounts, counts and times, on every page the same way.

Money is stored in micro-units of the pricing currency; pages show it with
the currency (``$12.34``, ``12.34 CHF``): two decimals, or as many as a small
amount needs to be seen at all (``$0.0028``, one request's ``$0.000012``).
Counts get thousands separators; durations are ``340 ms`` below a second,
``2.4 s`` above. Times are shown in the billing time zone
as ``2026-12-07 14:05`` with the zone named once on the page; days are
ISO dates everywhere (the date inputs use the same form).
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from decimal import Decimal

__all__ = ["Money", "count", "duration", "local_time", "plural"]

_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥"}


class Money:
    """Formats micro-units of one currency; the zone is the billing time zone."""

    def __init__(self, currency: str, timezone: str) -> None:
        self.currency, self.timezone = currency.upper(), timezone
        self.zone = zoneinfo.ZoneInfo(timezone)

    def __call__(self, micros: int) -> str:
        amount = Decimal(micros) / 1_000_000
        if amount == 0 or abs(amount) >= Decimal("0.01"):
            text = f"{amount:,.2f}"
        else:  # a tiny amount: its significant digits, at most six decimals
            text = f"{amount:.6f}".rstrip("0")
        symbol = _SYMBOLS.get(self.currency)
        if symbol is None:
            return f"{text} {self.currency}"
        return f"-{symbol}{text[1:]}" if text.startswith("-") else f"{symbol}{text}"

    def today(self) -> dt.date:
        return dt.datetime.now(self.zone).date()

    def time(self, at: float, *, seconds: bool = False) -> str:
        return local_time(at, self.zone, seconds=seconds)


def count(n: int | float) -> str:
    return f"{n:,.0f}" if isinstance(n, int) or float(n).is_integer() else f"{n:,.2f}"


def duration(ms: int) -> str:
    """``duration(340)`` → "340 ms"; ``duration(2412)`` → "2.4 s"."""
    return f"{ms:,} ms" if ms < 1000 else f"{ms / 1000:,.1f} s"


def plural(n: int, one: str, many: str = "") -> str:
    """``plural(1, "key")`` → "1 key"; ``plural(3, "key")`` → "3 keys"."""
    return f"{count(n)} {one if n == 1 else (many or one + 's')}"


def local_time(at: float, zone: dt.tzinfo, *, seconds: bool = False) -> str:
    return dt.datetime.fromtimestamp(at, zone).strftime(
        "%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")
