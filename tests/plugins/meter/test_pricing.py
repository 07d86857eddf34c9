"""Prices with effective dates; cost in integer micro-units."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import pytest

from lunos_proxy.exchange import Usage
from plugins.meter.pricing import PricingError, load_pricing, parse_pricing

REPO = Path(__file__).resolve().parents[3]


def at(day: str) -> float:
    return dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC).timestamp()


TABLE = parse_pricing(
    {
        "currency": "EUR",
        "models": {
            "m": [
                {"from": "2025-01-01", "input": 2.5, "output": 10, "cached_input": 1.25},
                {"from": dt.date(2025, 6, 1), "input": "0.000001", "output": 0.6},
            ]
        },
    },
    "t.yaml",
)


def test_price_in_force_follows_effective_dates() -> None:
    assert TABLE.price(("m",), at("2024-12-31T23:59:59")) is None
    p = TABLE.price(("m",), at("2025-05-31T23:59:59"))
    assert p is not None and (p.input, p.output) == (2_500_000, 10_000_000)
    p = TABLE.price(("m",), at("2025-06-01T00:00:00"))
    assert p is not None and (p.input, p.output) == (1, 600_000)
    assert TABLE.price(("nope", "m"), at("2025-07-01")) is p
    assert TABLE.currency == "EUR"


def test_a_price_span_is_where_the_same_price_is_in_force() -> None:
    first, second = TABLE.price(("m",), at("2025-02-01")), TABLE.price(("m",), at("2025-07-01"))
    assert TABLE.price_span(("m",), at("2024-06-01")) == (None, -math.inf, at("2025-01-01"))
    assert TABLE.price_span(("m",), at("2025-05-31T23:59:59")) == (
        first, at("2025-01-01"), at("2025-06-01"))
    assert TABLE.price_span(("nope", "m"), at("2025-06-01")) == (second, at("2025-06-01"), math.inf)
    assert TABLE.price_span(("nope",), at("2025-06-01")) == (None, -math.inf, math.inf)


def test_cost_is_exact_integer_micro_units_rounded_half_up_once() -> None:
    p = TABLE.price(("m",), at("2025-02-01"))
    assert p is not None
    u = Usage(input_tokens=1000, cached_input_tokens=400, output_tokens=333)
    # 600 * 2.5 + 400 * 1.25 + 333 * 10 = 1500 + 500 + 3330 micro-dollars
    assert p.cost(u) == 5330
    assert p.cost(Usage(input_tokens=1)) == 3  # 2.5 rounds half up
    assert p.cost(Usage(input_tokens=10**12, output_tokens=10**12)) == 12_500_000_000_000
    cheap = TABLE.price(("m",), at("2025-07-01"))
    assert cheap is not None and cheap.cost(Usage(input_tokens=499_999)) == 0
    assert cheap.cost(Usage(input_tokens=500_000)) == 1


def test_bad_pricing_file_names_file_path_and_problem(tmp_path: Path) -> None:
    bad = tmp_path / "pricing.yaml"
    bad.write_text("models:\n  m:\n    - {from: 2025-01-01, input: 0.0000001, output: x, colour: red}\n")
    with pytest.raises(PricingError) as e:
        load_pricing(bad)
    assert e.value.problems == [
        "pricing.yaml: models.m[0]: unknown key 'colour'",
        "pricing.yaml: models.m[0].input: expected a non-negative amount with at most 6 decimals",
        "pricing.yaml: models.m[0].output: expected a number, got 'x'",
    ]


def test_shipped_pricing_file_loads() -> None:
    table = load_pricing(REPO / "config" / "pricing.yaml")
    assert "demo-chat" in table and table.currency == "USD"
