"""Budgets: hard limits checked before forwarding, soft thresholds notified.

Budgets come from the meter's settings (YAML), so an operator sees every
limit in one reviewed file:

    budgets:
      timezone: Europe/Paris            # where a day and a month begin
      plans:    {free: {monthly: 5}}    # for every account on that plan
      accounts: {acct_42: {daily: 20, monthly: 300, soft: [0.5, 0.8, 1.0]}}
      keys:     {key_7: {daily: 2}}
      prepaid:  [acct_99]               # refused once its credit is spent

Amounts are in the pricing currency (at most 6 decimals). An account's own
entry replaces its plan's. Daily and monthly periods are calendar-aligned in
`timezone`. Spend is kept in store counters per subject and period
("account:<id>" / "key:<id>", "d:YYYY-MM-DD" / "m:YYYY-MM", and "total" and
"credit" for prepaid balances, topped up through the admin API).

The check reads the counters from the store at most once per
`refresh_seconds` per subject and adds what this instance has not written
yet, so the hot path rarely waits on the store. A request is refused when a
limit is already reached (spent >= limit); requests already in flight finish,
so a budget can be overrun by at most the requests in flight plus what other
instances spent within `refresh_seconds` plus the ledger's flush interval.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import zoneinfo
from decimal import Decimal

import msgspec

from lunos_proxy.bounds import SecondsOrZero
from lunos_proxy.errors import QuotaExceeded, ServiceUnavailable
from lunos_proxy.money import to_micros
from lunos_proxy.store.accounting import Accounting
from lunos_proxy.store.errors import StoreError

from .ledger import Ledger
from .webhooks import Notifier

__all__ = ["BudgetRule", "BudgetSettings", "Calendar", "Guard", "Limit", "Rules"]


class BudgetRule(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    daily: Decimal | None = None
    monthly: Decimal | None = None
    # Fractions of a limit at which the webhook is told (once each per period).
    soft: list[float] = msgspec.field(default_factory=lambda: [0.5, 0.8, 1.0])


class BudgetSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    timezone: str = "UTC"
    plans: dict[str, BudgetRule] = msgspec.field(default_factory=dict)
    accounts: dict[str, BudgetRule] = msgspec.field(default_factory=dict)
    keys: dict[str, BudgetRule] = msgspec.field(default_factory=dict)
    prepaid: list[str] = msgspec.field(default_factory=list)
    refresh_seconds: SecondsOrZero = 1.0  # 0: read the shared spend every time

    def __post_init__(self) -> None:
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {self.timezone!r}") from None
        for group in (self.plans, self.accounts, self.keys):
            for rule in group.values():
                problems: list[str] = []
                for amount in (rule.daily, rule.monthly):
                    if amount is not None:
                        to_micros(amount, "amount", problems)
                if problems:
                    raise ValueError("budget amounts need at most 6 decimals and must be >= 0")
                if any(not 0 < f <= 10 for f in rule.soft):
                    raise ValueError("soft thresholds are fractions of the limit, in (0, 10]")


class Calendar:
    """Days and months in the billing time zone."""

    def __init__(self, timezone: str) -> None:
        self.zone = zoneinfo.ZoneInfo(timezone)
        self._minute = (0.0, 0.0)  # [from, until) of the minute `_day` is the day of
        self._day = ""

    def day(self, at: float) -> str:
        # Every time zone's days start on a whole minute: one conversion a minute.
        start, until = self._minute
        if not start <= at < until:
            self._day = dt.datetime.fromtimestamp(at, self.zone).date().isoformat()
            start = at // 60 * 60
            self._minute = (start, start + 60)
        return self._day

    def month(self, at: float) -> str:
        return self.day(at)[:7]

    def seconds_left(self, at: float, period: str) -> int:
        """Seconds from `at` to the end of the day ("d") or month ("m") it is in."""
        now = dt.datetime.fromtimestamp(at, self.zone)
        if period == "d":
            end = dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), self.zone)
        else:
            first = now.date().replace(day=1)
            nxt = (first + dt.timedelta(days=32)).replace(day=1)
            end = dt.datetime.combine(nxt, dt.time(), self.zone)
        return max(1, int(end.timestamp() - at))


class Limit(msgspec.Struct, frozen=True):
    """One hard limit on one subject for one period."""

    subject: str  # "account:<id>" | "key:<id>"
    kind: str  # "daily" | "monthly" | "prepaid"
    period: str  # "d:2026-11-26" | "m:2026-11" | "total"
    micros: int  # the limit (for prepaid: computed from the credit at check time)
    soft: tuple[float, ...] = ()


class Rules:
    """Which limits apply to a principal at an instant (`lunos_proxy.views.Budgets`)."""

    def __init__(self, settings: BudgetSettings) -> None:
        self.settings = settings
        self.calendar = Calendar(settings.timezone)
        self.prepaid = frozenset(settings.prepaid)
        self.active = bool(settings.plans or settings.accounts or settings.keys or self.prepaid)

    @property
    def timezone(self) -> str:
        return self.settings.timezone

    def has_key_rule(self, key_id: str) -> bool:
        return key_id in self.settings.keys

    def seconds_left(self, at: float, period: str) -> int:
        return self.calendar.seconds_left(at, period)

    def limits(
        self,
        account_id: str,
        key_id: str,
        plan: str | None,
        at: float,
        account_soft: list[float] | None = None,
    ) -> list[Limit]:
        """`account_soft`: the account holder's own alert thresholds, which
        replace the rule's on the account's limits (not on its keys')."""
        s = self.settings
        out: list[Limit] = []
        day, month = self.calendar.day(at), self.calendar.month(at)
        account_rule = s.accounts.get(account_id) or (s.plans.get(plan) if plan else None)
        for subject, rule in (
            (f"account:{account_id}", account_rule),
            (f"key:{key_id}", s.keys.get(key_id)),
        ):
            if rule is None:
                continue
            own = account_soft if subject.startswith("account:") else None
            soft = tuple(sorted(rule.soft if own is None else own))
            if rule.daily is not None:
                out.append(Limit(subject, "daily", f"d:{day}", _micros(rule.daily), soft))
            if rule.monthly is not None:
                out.append(Limit(subject, "monthly", f"m:{month}", _micros(rule.monthly), soft))
        if account_id in self.prepaid:
            out.append(Limit(f"account:{account_id}", "prepaid", "total", 0))
        return out

    def spend_periods(self, account_id: str, key_id: str, at: float) -> list[tuple[str, str, int]]:
        """The counters a request's cost is added to: (subject, period, ttl)."""
        day = self.calendar.day(at)
        month = day[:7]
        # Written at the latest when the period ends, so these outlive it.
        d_ttl, m_ttl = 3 * 86_400, 66 * 86_400
        out = []
        for subject in (f"account:{account_id}", f"key:{key_id}"):
            out += [(subject, f"d:{day}", d_ttl), (subject, f"m:{month}", m_ttl)]
        out.append((f"account:{account_id}", "total", 0))
        return out


def _micros(amount: Decimal) -> int:
    return int(amount * 1_000_000)


class Guard:
    """Refuses requests over a hard limit and tells the webhook of soft thresholds."""

    def __init__(
        self,
        rules: Rules,
        store: Accounting,
        ledger: Ledger,
        notifier: Notifier | None,
        *,
        currency: str,
        fail_closed: bool = False,
    ) -> None:
        self.rules = rules
        self.store = store
        self.ledger = ledger
        self.notifier = notifier
        self.currency = currency
        self.fail_closed = fail_closed
        self._cache: dict[str, tuple[float, dict[str, int]]] = {}
        self._told: set[tuple[str, str, float]] = set()
        self._reading: set[asyncio.Task[None]] = set()  # after() reading the store first
        ledger.on_written.append(self._forget)

    def _forget(self, subjects: set[str]) -> None:
        # The store now holds what we had counted locally: read it afresh.
        for subject in subjects:
            self._cache.pop(subject, None)

    async def _stored(self, subject: str, periods: list[str]) -> dict[str, int]:
        cached = self._cache.get(subject)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self.rules.settings.refresh_seconds:
            if all(p in cached[1] for p in periods):
                return cached[1]
        try:
            values = dict(zip(periods, await self.store.spend(subject, periods), strict=True))
        except StoreError:
            if self.fail_closed:
                raise ServiceUnavailable("Budgets cannot be checked right now.") from None
            return cached[1] if cached is not None else dict.fromkeys(periods, 0)
        self._cache[subject] = (now, values)
        return values

    def _spent(self, stored: dict[str, int], subject: str, period: str) -> int:
        return stored.get(period, 0) + self.ledger.unwritten_spend(subject, period)

    async def check(self, limits: list[Limit]) -> None:
        """Raise QuotaExceeded if any limit is already reached."""
        periods: dict[str, list[str]] = {}
        for limit in limits:
            wanted = periods.setdefault(limit.subject, [])
            wanted += ["total", "credit"] if limit.kind == "prepaid" else [limit.period]
        stored = {s: await self._stored(s, ps) for s, ps in periods.items()}
        for limit in limits:
            got = stored[limit.subject]
            spent = self._spent(got, limit.subject, limit.period)
            if limit.kind == "prepaid":
                if spent >= got.get("credit", 0):
                    raise _refusal("This account's prepaid credit is used up.")
            elif spent >= limit.micros:
                who = "account" if limit.subject.startswith("account:") else "API key"
                raise _refusal(
                    f"You exceeded your current quota: this {who}'s {limit.kind} budget is spent."
                )

    def after(self, limits: list[Limit], at: float) -> None:
        """Notify thresholds this request's spend (already recorded) crossed."""
        if self.notifier is None:
            return
        soft = [lim for lim in limits if lim.soft and lim.micros > 0]
        if any(lim.subject not in self._cache for lim in soft):
            # The ledger wrote these subjects' spend since the request was
            # checked (and dropped what it had read): read it again first,
            # or the spend written meanwhile would be missed, and with it a
            # threshold no later request gets to cross.
            task = asyncio.get_running_loop().create_task(self._after_reading(soft, at))
            self._reading.add(task)
            task.add_done_callback(self._reading.discard)
            return
        self._notify(soft, at)

    async def settled(self) -> None:
        """Wait for the threshold checks still reading the store."""
        if self._reading:
            await asyncio.gather(*self._reading, return_exceptions=True)

    async def _after_reading(self, limits: list[Limit], at: float) -> None:
        periods: dict[str, list[str]] = {}
        for limit in limits:
            periods.setdefault(limit.subject, []).append(limit.period)
        for subject, wanted in periods.items():
            if subject not in self._cache:
                try:
                    await self._stored(subject, wanted)
                except ServiceUnavailable:
                    pass  # the store is down (fail_closed): what is known is used
        self._notify(limits, at)

    def _notify(self, limits: list[Limit], at: float) -> None:
        assert self.notifier is not None
        cal = self.rules.calendar
        for limit in limits:
            cached = self._cache.get(limit.subject)
            stored = cached[1] if cached is not None else {}
            spent = self._spent(stored, limit.subject, limit.period)
            for fraction in limit.soft:
                told = (limit.subject, limit.period, fraction)
                if spent < fraction * limit.micros or told in self._told:
                    continue
                if len(self._told) > 100_000:
                    self._told.clear()
                self._told.add(told)
                kind, _, ident = limit.subject.partition(":")
                self.notifier.notify(
                    f"{limit.subject}:{limit.period}:{fraction:g}",
                    cal.seconds_left(at, limit.period[0]) + 86_400,
                    {
                        "type": "budget.threshold",
                        "subject": kind,
                        "subject_id": ident,
                        "budget": limit.kind,
                        "period": limit.period[2:],
                        "threshold": fraction,
                        "limit_micros": limit.micros,
                        "spent_micros": spent,
                        "currency": self.currency,
                        "time": at,
                    },
                )


def _refusal(message: str) -> QuotaExceeded:
    # SDKs retry a 429 unless told not to; a spent budget will not come back soon.
    return QuotaExceeded(message, headers={"x-should-retry": "false"})
