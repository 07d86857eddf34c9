"""Typed view keys: what one plugin publishes, another reads back by key, never by name."""

from __future__ import annotations

import pytest

from lunos_proxy.plugin import ViewKey, Views
from lunos_proxy.views import PRICES


class Table:
    def price_per_million(self, provider: str, model: str) -> float | None:
        return {"openai/gpt-4o": 5.0}.get(f"{provider}/{model}")


def test_a_published_view_is_read_back_by_its_key_and_absent_is_none() -> None:
    views = Views()
    assert views.get(PRICES) is None and PRICES not in views
    table = Table()
    views[PRICES] = table
    assert views[PRICES] is table and PRICES in views
    book = views.get(PRICES)
    assert book is not None and book.price_per_million("openai", "gpt-4o") == 5.0


def test_keys_are_distinct_objects_even_with_one_name() -> None:
    views = Views()
    mine: ViewKey[int] = ViewKey("prices")
    views[mine] = 1
    assert views.get(PRICES) is None
    with pytest.raises(KeyError):
        views[PRICES]


def test_setdefault_keeps_the_first_publisher() -> None:
    views = Views()
    first, second = Table(), Table()
    assert views.setdefault(PRICES, first) is first
    assert views.setdefault(PRICES, second) is first
