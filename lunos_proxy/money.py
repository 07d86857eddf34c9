"""Amounts of money as integer micro-units (1 USD = 1,000,000): prices,
budgets and prepaid credit are all counted this way, never in floats."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = ["MAX_AMOUNT", "to_micros"]


# The largest amount (of currency; of it per million tokens for a price):
# in micro-units 1e15, so that a price times a request's tokens (at most
# 2**31) stays within the 64-bit integers Redis counts spend in.
MAX_AMOUNT = 1_000_000_000


def to_micros(amount: Any, where: str, problems: list[str]) -> int:
    """A decimal amount of currency as integer micro-units (at most 6
    decimals, at most `MAX_AMOUNT`; NaN and infinities are refused)."""
    if isinstance(amount, bool):
        problems.append(f"{where}: expected a number, got {amount!r}")
        return 0
    try:
        value = Decimal(str(amount))
    except InvalidOperation:
        problems.append(f"{where}: expected a number, got {amount!r}")
        return 0
    if not value.is_finite():
        problems.append(f"{where}: expected a finite number")
        return 0
    if value > MAX_AMOUNT:
        problems.append(f"{where}: expected at most {MAX_AMOUNT}")
        return 0
    micros = value * 1_000_000
    if value < 0 or micros != micros.to_integral_value():
        problems.append(f"{where}: expected a non-negative amount with at most 6 decimals")
        return 0
    return int(micros)
