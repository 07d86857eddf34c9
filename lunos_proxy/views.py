"""What a plugin publishes for the runtime and for the plugins around it.

The admin API, the console and other plugins never look a plugin up by
name: a plugin publishes a small view under a typed key in
`services.views` (the way aiohttp's `web.AppKey` works), and a reader gets
it back typed, or ``None`` when the plugin is not in the pipeline:

    # the publisher, in its __init__
    services.views[PRICES] = TablePrices(self.prices)

    # a reader, per request or in start() (plugins are built in pipeline order)
    book = services.views.get(PRICES)
    if book is None:
        ...   # say so: the feature needs that plugin

Each view is a Protocol of the few things its readers need; a plugin of
your own may publish any of them (another pricing source, say).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from aiohttp import web

from .plugin import ViewKey

__all__ = [
    "ADDRESS_GUARD",
    "BANS",
    "METER",
    "PRICES",
    "REQUEST_LOG",
    "ROUTING",
    "AddressGuard",
    "Bans",
    "BudgetLimit",
    "Budgets",
    "MeterView",
    "PriceBook",
    "RequestLogView",
    "RoutingView",
]


class AddressGuard(Protocol):
    """What the abuse plugin offers the plugins before it (auth) and the console.

    Auth runs before abuse in the pipeline, yet it is the one that sees an
    address fail to authenticate. Look the guard up in `start()` or per
    request, not in `__init__`, and work unchanged without it:

        guard = self.services.views.get(ADDRESS_GUARD)
        if guard is not None:
            await guard.check_address(request)      # before looking the key up
        ...
        if key is bad:
            if guard is not None:
                await guard.auth_failed(request)    # may raise: the address is now banned
            raise Unauthorized(...)
    """

    async def check_address(self, request: web.Request) -> None:
        """Raise a `GatewayError` (403 denied, 429 banned) if the request's
        client address may not be served. Cheap: no store round trip."""

    async def auth_failed(self, request: web.Request) -> None:
        """Count an authentication failure for the request's client address.

        Past the configured threshold the address is banned on every
        instance, for longer each time it offends again; the call then
        raises the ban's `GatewayError` (429 with Retry-After)."""


class PriceBook(Protocol):
    """What the router's `lowest_price` strategy asks a pricing table (the
    meter publishes its own; any plugin before the router may publish one).

        class Table:
            def price_per_million(self, provider: str, model: str) -> float | None:
                return {"openai/gpt-4o": 5.0}.get(f"{provider}/{model}")
    """

    def price_per_million(self, provider: str, model: str) -> float | None: ...


class BudgetLimit(Protocol):
    """One hard spending limit on one subject for one period."""

    @property
    def subject(self) -> str: ...  # "account:<id>" | "key:<id>"
    @property
    def kind(self) -> str: ...  # "daily" | "monthly" | "prepaid"
    @property
    def period(self) -> str: ...  # "d:2026-11-26" | "m:2026-11" | "total"
    @property
    def micros(self) -> int: ...  # the limit (0 for prepaid: the credit is the limit)
    @property
    def soft(self) -> tuple[float, ...]: ...  # alert thresholds, fractions of the limit


class Budgets(Protocol):
    """The meter's budget rules, as the console shows them."""

    @property
    def timezone(self) -> str: ...

    def has_key_rule(self, key_id: str) -> bool:
        """Whether the key has a budget of its own."""

    def seconds_left(self, at: float, period: str) -> int:
        """Seconds from `at` to the end of the day ("d") or month ("m") it is in."""

    def limits(
        self,
        account_id: str,
        key_id: str,
        plan: str | None,
        at: float,
        account_soft: list[float] | None = None,
    ) -> Sequence[BudgetLimit]:
        """The limits that apply to the principal at `at`."""


class MeterView(Protocol):
    """What the admin API and the console read of the meter."""

    @property
    def currency(self) -> str: ...
    @property
    def timezone(self) -> str: ...  # the billing time zone of days and months

    def day(self, at: float) -> str:
        """`at`'s day in the billing time zone, "YYYY-MM-DD"."""

    def month(self, at: float) -> str:
        """`at`'s month in the billing time zone, "YYYY-MM"."""

    @property
    def budgets(self) -> Budgets | None: ...  # None: no budgets configured
    @property
    def alerts_webhook(self) -> bool: ...  # budget alerts go to the operator's webhook
    @property
    def events_retention_days(self) -> int: ...  # per-request usage events are kept this long


class Bans(Protocol):
    """Auth-failure bans, as the admin API lists and lifts them (the abuse plugin)."""

    async def current(self) -> list[tuple[str, float]]:
        """(address or IPv6 /64, seconds left) of every ban in force."""

    async def lift(self, address: str) -> bool:
        """Lift the ban on `address` (its /64 for IPv6) on every instance;
        True if one was in force. Raises StoreError if the store is down."""


class RequestLogView(Protocol):
    """What the console's privacy page says of the request log (the logger)."""

    @property
    def address_mode(self) -> str: ...  # full | truncated | hashed | dropped


class RoutingView(Protocol):
    """What the admin API reads of the router."""

    def snapshot(self) -> list[dict[str, Any]]:
        """Every deployment's breaker, cooldown, in-flight count and latency
        (ids and numbers only)."""


ADDRESS_GUARD: ViewKey[AddressGuard] = ViewKey("address_guard")
PRICES: ViewKey[PriceBook] = ViewKey("prices")
METER: ViewKey[MeterView] = ViewKey("meter")
ROUTING: ViewKey[RoutingView] = ViewKey("routing")
BANS: ViewKey[Bans] = ViewKey("bans")
REQUEST_LOG: ViewKey[RequestLogView] = ViewKey("request_log")
