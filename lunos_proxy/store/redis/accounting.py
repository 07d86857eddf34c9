"""Usage counters, spend counters and once-only claims on Redis (`Accounting`).

Mixed into `RedisStore`, which runs the calls (`_do`: one command; `_run`:
one Lua script from store/lua/). The keys, each account's and each
subject's under a `{hash tag}` of its own:

    lunos:{usage:<account>}:days       sorted set of days with usage
    lunos:{usage:<account>}:day:<day>  hash "<key id>|<model>|<metric>" -> count
    lunos:{spend:<subject>}:<period>   spend counter (micros), expiring   add_spend, spend
    lunos:{spend:<subject>}:periods    set of the subject's periods       delete_spend
    lunos:{claims}:<name>              "1" while a once-only claim holds
    lunos:{usage:<account>}:once:<id>  a batch's marker (Cluster: per tag), a week
    lunos:{spend:<subject>}:once:<id>    (add_usage, add_spend with `once`)
    lunos:{once}:<script>:once:<id>    a batch's marker on one server or Sentinel, a week

They grow with accounts, keys, models and days, never with requests.
{claims} puts every claim on one Cluster slot: they are few (webhook
notices) and expire. {once} holds a batch's marker only on one server or
Sentinel, where there are no slots: one marker per flush interval and
instance, expiring after a week. On a Cluster a batch's markers live under
each account's or subject's own tag.

On a Cluster, `add_usage` is all or nothing per account (one script per
account's slot), `add_spend` per subject; on one server or Sentinel the
whole batch is one script.
"""

from __future__ import annotations

import abc
import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from ..accounting import Accounting, SpendDelta, UsageDelta, UsageRow
from .connect import Client, RedisOptions
from .resp import ScriptCall, script_call

__all__ = ["RedisAccounting"]

_T = TypeVar("_T")
# A usage row's counters: one hash field each, "<key id>|<model>|<metric>".
_METRICS = ("requests", "input_tokens", "output_tokens", "cached_input_tokens", "cost_micros")


class RedisAccounting(Accounting):
    options: RedisOptions
    _client: Client
    _cluster: bool

    @abc.abstractmethod
    async def _do(self, call: Callable[[], Awaitable[_T]]) -> _T: ...

    @abc.abstractmethod
    async def _run(self, script: str, keys: Sequence[str], args: Sequence[Any] = ()) -> Any: ...

    @abc.abstractmethod
    async def _fast(self, script: str, call: ScriptCall) -> Any:
        """`_run` over a lane, without a connection slot."""

    async def _write(
        self, script: str, keys: Sequence[str], args: Sequence[Any], once: str, base: str
    ) -> None:
        """Run a write script; with `once`, at most once per id under the tag
        of `base`, over a lane (lane.py): the meter's ledger writes so each
        interval, and redis-py's own path costs about ten times the CPU. A
        lane does not send a command again after a lost reply; the ledger
        does, and the `once` id makes the repeat harmless."""
        if once:
            await self._fast(f"{script}_once", script_call([*keys, f"{base}once:{once}"], args))
        else:
            await self._run(script, keys, args)

    def _one_node_base(self, script: str) -> str:
        """Where a write spanning tags keeps its `once` marker on one server:
        not under the tag of whatever comes first in the batch, which a
        retried batch may no longer hold (an erased account's rows go)."""
        return f"{self.options.prefix}{{once}}:{script}:"

    # -- usage counters -------------------------------------------------------
    def _usage_base(self, account_id: str) -> str:
        return f"{self.options.prefix}{{usage:{account_id}}}:"

    async def add_usage(self, deltas: Sequence[UsageDelta], *, once: str = "") -> None:
        # Summed first so that each counter is one HINCRBY.
        sums: defaultdict[str, defaultdict[str, defaultdict[str, int]]] = defaultdict(
            lambda: defaultdict(lambda: defaultdict(int))
        )
        for d in deltas:
            fields = sums[d.account_id][d.day]
            for metric in _METRICS:
                fields[f"{d.key_id}|{d.model}|{metric}"] += getattr(d, metric)
        calls: list[tuple[list[str], list[Any], str]] = []
        for account_id, days in sums.items():
            base = self._usage_base(account_id)
            keys: list[str] = []
            args: list[Any] = []
            for day, fields in days.items():
                keys += (f"{base}days", f"{base}day:{day}")
                args += (day, len(fields))
                for field, value in fields.items():
                    args += (field, value)
            calls.append((keys, args, base))
        if not calls:
            return
        if self._cluster:
            await asyncio.gather(*(self._write("usage_add", k, a, once, b) for k, a, b in calls))
        else:
            keys = [k for c in calls for k in c[0]]
            args = [a for c in calls for a in c[1]]
            await self._write("usage_add", keys, args, once, self._one_node_base("usage_add"))

    async def usage(self, account_id: str, first_day: str, last_day: str) -> list[UsageRow]:
        base = self._usage_base(account_id)
        out = await self._run("usage_get", [f"{base}days"], [first_day, last_day, f"{base}day:"])
        rows: dict[tuple[str, str, str], dict[str, int]] = {}
        for i in range(0, len(out), 2):
            day, flat = out[i].decode(), out[i + 1]
            for j in range(0, len(flat), 2):
                key_id, _, rest = flat[j].decode().partition("|")
                model, _, metric = rest.rpartition("|")
                rows.setdefault((day, key_id, model), {})[metric] = int(flat[j + 1])
        return [
            UsageRow(day=day, key_id=key_id, model=model, **counters)
            for (day, key_id, model), counters in sorted(rows.items())
        ]

    async def delete_usage(self, account_id: str) -> int:
        base = self._usage_base(account_id)
        rows: int = await self._run("usage_delete", [f"{base}days"], [f"{base}day:", len(_METRICS)])
        return rows

    # -- spend counters, once-only claims -------------------------------------
    async def _per_tag(
        self,
        script: str,
        calls: dict[str, tuple[list[str], list[Any]]],
        base: Callable[[str], str],
        once: str,
        head: Sequence[Any] = (),
    ) -> None:
        # One script per hash tag on a Cluster; one for everything elsewhere.
        if not calls:
            return
        if self._cluster:
            await asyncio.gather(
                *(
                    self._write(script, k, [*head, *a], once, base(tag))
                    for tag, (k, a) in calls.items()
                )
            )
        else:
            keys = [k for c in calls.values() for k in c[0]]
            args = [a for c in calls.values() for a in c[1]]
            await self._write(script, keys, [*head, *args], once, self._one_node_base(script))

    def _spend_base(self, subject: str) -> str:
        return f"{self.options.prefix}{{spend:{subject}}}:"

    def _spend_key(self, subject: str, period: str) -> str:
        return f"{self._spend_base(subject)}{period}"

    async def add_spend(self, deltas: Sequence[SpendDelta], *, once: str = "") -> None:
        calls: dict[str, tuple[list[str], list[Any]]] = {}
        for d in deltas:
            keys, args = calls.setdefault(d.subject, ([], []))
            base = self._spend_base(d.subject)
            keys += (f"{base}{d.period}", f"{base}periods")
            args += (d.micros, d.ttl, d.period)
        await self._per_tag("spend_add", calls, self._spend_base, once)

    async def spend(self, subject: str, periods: Sequence[str]) -> list[int]:
        if not periods:
            return []
        keys = [self._spend_key(subject, p) for p in periods]
        out = await self._run("spend_get", keys)
        return [int(v) if v is not None else 0 for v in out]

    async def spend_counters(self, subject: str) -> dict[str, int]:
        base = self._spend_base(subject)
        pairs = await self._run("spend_all", [f"{base}periods"], [base])
        return {pairs[i].decode(): int(pairs[i + 1]) for i in range(0, len(pairs), 2)}

    async def delete_spend(self, subject: str) -> int:
        base = self._spend_base(subject)
        n: int = await self._run("spend_delete", [f"{base}periods"], [base])
        return n

    async def claim(self, name: str, ttl: int) -> bool:
        key = f"{self.options.prefix}{{claims}}:{name}"
        return bool(await self._do(lambda: self._client.set(key, b"1", nx=True, ex=max(1, ttl))))
