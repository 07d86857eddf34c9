"""Prices per model with effective dates, and cost in integer micro-units.

The table is YAML (config/pricing.yaml documents it):

    currency: USD
    models:
      gpt-4o-mini:                      # a public model name, or provider/upstream-model
        - from: 2024-07-18              # in force from this instant (UTC date or ISO time)
          input: 0.15                   # per million tokens, in the currency
          cached_input: 0.075
          output: 0.60
          cache_write: 0.1875           # Anthropic cache creation (defaults to input)

Prices may have at most 6 decimals: they are read as decimals, never
floats, and held as micro-units per million tokens, so a cost is an exact
integer sum rounded once, half up, per request:

    cost_micros = round_half_up(sum of tokens_of_kind * micros_per_million_of_kind / 1e6)

Uncached input is `input_tokens - cached_input_tokens - cache_creation_tokens`;
reasoning tokens are output tokens and priced as such. A model with no
entry costs 0 (and is counted in `lunos_meter_unpriced_requests`).
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
import time
from pathlib import Path
from typing import Any

from lunos_proxy.exchange import Usage
from lunos_proxy.money import to_micros
from lunos_proxy.yaml_strict import YamlError, load_yaml

__all__ = ["Price", "PriceTable", "PricingError", "TablePrices", "load_pricing"]


class PricingError(Exception):
    """A pricing file that cannot be used; `problems` are ``FILE: where: what`` lines."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class Price:
    """Micro-units of currency per million tokens of each kind."""

    __slots__ = ("cache_write", "cached_input", "input", "output", "since")

    def __init__(
        self, since: float, input: int, output: int, cached_input: int, cache_write: int
    ) -> None:
        self.since = since
        self.input = input
        self.output = output
        self.cached_input = cached_input
        self.cache_write = cache_write

    def cost(self, u: Usage) -> int:
        uncached = max(0, u.input_tokens - u.cached_input_tokens - u.cache_creation_tokens)
        total = (
            uncached * self.input
            + u.cached_input_tokens * self.cached_input
            + u.cache_creation_tokens * self.cache_write
            + u.output_tokens * self.output
        )
        return (total + 500_000) // 1_000_000


class PriceTable:
    def __init__(self, currency: str, models: dict[str, list[Price]]) -> None:
        self.currency = currency
        self._models = {
            name: sorted(prices, key=lambda p: p.since) for name, prices in models.items()
        }
        self._starts = {name: [p.since for p in ps] for name, ps in self._models.items()}

    def price(self, names: tuple[str, ...], at: float) -> Price | None:
        """The price in force at `at` (epoch seconds) for the first name priced."""
        return self.price_span(names, at)[0]

    def price_span(self, names: tuple[str, ...], at: float) -> tuple[Price | None, float, float]:
        """`price`, and the instants [from, until) over which it is the one
        in force: the same answer for any `at` between them."""
        for name in names:
            prices = self._models.get(name)
            if prices is None:
                continue
            starts = self._starts[name]
            i = bisect.bisect_right(starts, at)
            until = starts[i] if i < len(starts) else math.inf
            return (prices[i - 1] if i else None), (starts[i - 1] if i else -math.inf), until
        return None, -math.inf, math.inf

    def __contains__(self, name: str) -> bool:
        return name in self._models


def _instant(value: Any, where: str, problems: list[str]) -> float:
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, dt.date):
        moment = dt.datetime(value.year, value.month, value.day)
    else:
        try:
            moment = dt.datetime.fromisoformat(str(value))
        except ValueError:
            problems.append(f"{where}: expected a date (YYYY-MM-DD) or ISO time")
            return 0.0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


_FIELDS = frozenset({"from", "input", "output", "cached_input", "cache_write"})


def _optional(p: dict[str, Any], key: str, default: int, at: str, problems: list[str]) -> int:
    return to_micros(p[key], f"{at}.{key}", problems) if key in p else default


def parse_pricing(raw: Any, label: str) -> PriceTable:
    problems: list[str] = []
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise PricingError([f"{label}: (top): expected a mapping"])
    for key in raw:
        if key not in ("currency", "models"):
            problems.append(f"(top): unknown key {key!r}")
    currency = str(raw.get("currency", "USD"))
    models: dict[str, list[Price]] = {}
    entries = raw.get("models") or {}
    if not isinstance(entries, dict):
        problems.append("models: expected a mapping of model names")
        entries = {}
    for name, prices in entries.items():
        where = f"models.{name}"
        if not isinstance(prices, list) or not prices:
            problems.append(f"{where}: expected a list of prices with 'from' dates")
            continue
        out: list[Price] = []
        for i, p in enumerate(prices):
            at = f"{where}[{i}]"
            if not isinstance(p, dict):
                problems.append(f"{at}: expected a mapping")
                continue
            for key in p:
                if key not in _FIELDS:
                    problems.append(f"{at}: unknown key {key!r}")
            for key in ("from", "input", "output"):
                if key not in p:
                    problems.append(f"{at}: missing {key!r}")
            inp = to_micros(p.get("input", 0), f"{at}.input", problems)
            out.append(
                Price(
                    since=_instant(p.get("from", "1970-01-01"), f"{at}.from", problems),
                    input=inp,
                    output=to_micros(p.get("output", 0), f"{at}.output", problems),
                    cached_input=_optional(p, "cached_input", inp, at, problems),
                    cache_write=_optional(p, "cache_write", inp, at, problems),
                )
            )
        starts = [p.since for p in out]
        if len(set(starts)) != len(starts):
            problems.append(f"{where}: two prices start at the same instant")
        models[str(name)] = out
    if problems:
        raise PricingError([f"{label}: {p}" for p in problems])
    return PriceTable(currency, models)


# The tables last read, by file and content. A reload reads and checks the
# config's pricing file in a thread (lunos_proxy/reload.py), then the meter
# and the router load it on the event loop: there, a lookup instead of a
# parse (tens of milliseconds for a long file). A table is never changed.
_read: dict[tuple[str, str], PriceTable] = {}
_READ_KEPT = 8


def load_pricing(path: str | Path) -> PriceTable:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise PricingError([f"{p.name}: (file): cannot read: {e.strerror}"]) from None
    except UnicodeDecodeError as e:
        raise PricingError([f"{p.name}: (file): not UTF-8 text (byte {e.start})"]) from None
    found = _read.get((str(p), text))
    if found is not None:
        return found
    try:
        raw = load_yaml(text, p.name)
    except YamlError as e:
        raise PricingError(e.problems) from None
    table = parse_pricing(raw, p.name)
    if len(_read) >= _READ_KEPT:
        _read.clear()
    _read[(str(p), text)] = table
    return table


class TablePrices:
    """The pricing table as a `lunos_proxy.views.PriceBook` (for the router):
    input + output price per million tokens of "provider/upstream-model"
    entries, as in force when the config was loaded (a price change takes
    effect at the next reload)."""

    def __init__(self, table: PriceTable) -> None:
        self.table = table
        self.at = time.time()

    def price_per_million(self, provider: str, model: str) -> float | None:
        price = self.table.price((f"{provider}/{model}",), self.at)
        return None if price is None else (price.input + price.output) / 1_000_000
