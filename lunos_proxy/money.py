"""Amounts of money as integer micro-units (1 USD = 1,000,000): prices,
budgets and prepaid credit are all counted this way, never in floats."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = ["to_micros"]


def to_micros(amount: Any, where: str, problems: list[str]) -> int:
    """A decimal amount of currency as integer micro-units (at most 6 decimals)."""
    try:
        value = Decimal(str(amount))
    except InvalidOperation:
        problems.append(f"{where}: expected a number, got {amount!r}")
        return 0
    micros = value * 1_000_000
    if value < 0 or micros != micros.to_integral_value():
        problems.append(f"{where}: expected a non-negative amount with at most 6 decimals")
        return 0
    return int(micros)
