"""The store contract for metering: spend counters, usage events, once-only claims."""

from __future__ import annotations

import asyncio

from lunos_proxy.store import SpendDelta, UsageDelta, UsageEvent
from tests.store.backends import Backend


def event(request_id: str, day: str, t: float, account: str = "a-1", **kw: int) -> UsageEvent:
    return UsageEvent(
        request_id=request_id,
        account_id=account,
        key_id="k-1",
        model="gpt-x",
        provider="p",
        time=t,
        day=day,
        status=200,
        input_tokens=kw.get("inp", 3),
        output_tokens=kw.get("out", 4),
        cost_micros=kw.get("cost", 7),
        usage_source="reported",
    )


async def test_spend_counters_add_per_subject_and_period(backend: Backend):
    s, sub = backend.store, f"account:{backend.tag}"
    assert await s.spend(sub, ["d:2026-11-26", "m:2026-11"]) == [0, 0]
    await s.add_spend(
        [
            SpendDelta(subject=sub, period="d:2026-11-26", micros=5, ttl=3600),
            SpendDelta(subject=sub, period="m:2026-11", micros=5, ttl=0),
            SpendDelta(subject="key:other", period="m:2026-11", micros=99),
        ]
    )
    await s.add_spend([SpendDelta(subject=sub, period="d:2026-11-26", micros=2**40, ttl=3600)])
    assert await s.spend(sub, ["d:2026-11-26", "m:2026-11", "total"]) == [2**40 + 5, 5, 0]
    assert await s.spend("key:other", ["m:2026-11"]) == [99]
    assert await s.spend(sub, []) == []


async def test_spend_counter_expires_after_its_ttl(backend: Backend):
    s, sub = backend.store, f"key:{backend.tag}"
    await s.add_spend([SpendDelta(subject=sub, period="d:x", micros=10, ttl=1)])
    assert await s.spend(sub, ["d:x"]) == [10]
    await backend.advance(1.3)
    assert await s.spend(sub, ["d:x"]) == [0]


async def test_usage_events_are_read_back_by_day_range_in_time_order(backend: Backend):
    s, acct = backend.store, f"acct-{backend.tag}"
    e1 = event("r1", "2026-11-25", 10.0, acct)
    e2 = event("r2", "2026-11-26", 30.0, acct)
    e3 = event("r3", "2026-11-26", 20.0, acct)
    await s.add_usage_events([e1, e2], 3600)
    await s.add_usage_events([e3, event("other", "2026-11-26", 1.0, "someone-else")], 3600)
    assert await s.usage_events(acct, "2026-11-01", "2026-11-30") == [e1, e3, e2]
    assert await s.usage_events(acct, "2026-11-26", "2026-11-26") == [e3, e2]
    assert await s.usage_events(acct, "2026-12-01", "2026-12-31") == []


async def test_usage_events_expire_after_retention(backend: Backend):
    s, acct = backend.store, f"acct-{backend.tag}"
    await s.add_usage_events([event("r1", "2026-11-25", 10.0, acct)], 1)
    await backend.advance(1.3)
    assert await s.usage_events(acct, "2026-11-25", "2026-11-25") == []


async def test_claim_is_granted_once_across_instances_until_it_expires(backend: Backend):
    name = f"threshold:{backend.tag}"
    twin = await backend.open_twin()
    results = await asyncio.gather(*(st.claim(name, 1) for st in [backend.store, twin] * 5))
    assert sorted(results) == [False] * 9 + [True]
    await backend.advance(1.3)
    assert await twin.claim(name, 60) is True
    assert await backend.store.claim(name, 60) is False


async def test_usage_events_of_every_day_without_a_range(backend: Backend):
    s, acct = backend.store, f"acct-{backend.tag}"
    events = [event("r1", "2019-01-01", 1.0, acct), event("r2", "2026-11-26", 2.0, acct)]
    await s.add_usage_events(events, 3600)
    assert await s.usage_events(acct) == events


async def test_writes_repeated_with_the_same_once_id_apply_once(backend: Backend):
    from lunos_proxy.store import BillingRecord, UsageDelta

    s, t = backend.store, backend.tag
    accounts = [f"a-{t}-{i}" for i in range(4)]  # spread over cluster slots
    deltas = [UsageDelta(account_id=a, key_id="k", model="m", day="2026-11-26", cost_micros=5) for a in accounts]
    lines = [BillingRecord(id=f"b{i}", account_id=a, period="2026-11-26", model="m", requests=1,
                           input_tokens=1, output_tokens=1, cost_micros=5, created=1.0)
             for i, a in enumerate(accounts)]
    spends = [SpendDelta(subject=f"account:{a}", period="total", micros=5) for a in accounts]
    events = [event(f"r-{a}", "2026-11-26", 1.0, a) for a in accounts]
    for _ in range(2):  # the retry after a lost reply
        await s.add_usage(deltas, once=f"batch-1-{t}")
        await s.add_billing(lines, once=f"batch-1-{t}")
        await s.add_spend(spends, once=f"batch-1-{t}")
        await s.add_usage_events(events, 3600, once=f"batch-1-{t}")
    await s.add_usage(deltas, once=f"batch-2-{t}")
    for a in accounts:
        [row] = await s.usage(a, "2026-11-26", "2026-11-26")
        assert (row.requests, row.cost_micros) == (2, 10)
        assert len(await s.billing(a)) == 1
        assert await s.spend(f"account:{a}", ["total"]) == [5]
        assert len(await s.usage_events(a)) == 1



async def test_events_added_after_a_day_expired_do_not_bring_back_the_expired_ones(
    backend: Backend,
):
    s, acct = backend.store, f"acct-{backend.tag}"
    await s.add_usage_events([event("r1", "2026-11-25", 10.0, acct)], 1)
    await backend.advance(1.3)
    await s.add_usage_events([event("r2", "2026-11-25", 20.0, acct)], 60)
    found = await s.usage_events(acct, "2026-11-25", "2026-11-25")
    assert [e.request_id for e in found] == ["r2"]


async def test_a_subjects_spend_counters_are_listed_and_erased_whole(backend: Backend):
    s, sub, other = backend.store, f"account:{backend.tag}", f"key:{backend.tag}"
    await s.add_spend([
        SpendDelta(subject=sub, period="d:2026-11-26", micros=5, ttl=3600),
        SpendDelta(subject=sub, period="total", micros=7, ttl=0),
        SpendDelta(subject=other, period="total", micros=9, ttl=0),
    ])
    await s.add_spend([SpendDelta(subject=sub, period="credit", micros=11, ttl=0)])
    await s.add_spend([SpendDelta(subject=sub, period="d:gone", micros=1, ttl=1)])
    await backend.advance(1.3)  # "d:gone" has expired
    assert await s.spend_counters(sub) == {"d:2026-11-26": 5, "total": 7, "credit": 11}
    assert await s.delete_spend(sub) == 3
    assert await s.spend_counters(sub) == {}
    assert await s.spend(sub, ["d:2026-11-26", "total", "credit"]) == [0, 0, 0]
    assert await s.spend_counters(other) == {"total": 9}  # another subject keeps its own
    assert await s.delete_spend(sub) == 0


async def test_a_retried_batch_that_lost_some_rows_still_applies_once(backend: Backend):
    """A batch written, its answer lost, then retried without an erased account's rows."""
    s, a, b = backend.store, f"a-{backend.tag}", f"b-{backend.tag}"

    def usage(account: str) -> UsageDelta:
        return UsageDelta(account_id=account, key_id="k", model="m", day="2026-11-30",
                          input_tokens=10, cost_micros=5)

    def spend(account: str) -> SpendDelta:
        return SpendDelta(subject=f"account:{account}", period="total", micros=5)

    once = f"batch-{backend.tag}"
    await s.add_usage([usage(a), usage(b)], once=once)
    await s.add_spend([spend(a), spend(b)], once=once)
    await s.add_usage_events([event("r-a", "2026-11-30", 1.0, a), event("r-b", "2026-11-30", 2.0, b)],
                             3600, once=once)
    await s.add_usage([usage(b)], once=once)
    await s.add_spend([spend(b)], once=once)
    await s.add_usage_events([event("r-b", "2026-11-30", 2.0, b)], 3600, once=once)
    assert [r.requests for r in await s.usage(b, "2026-11-30", "2026-11-30")] == [1]
    assert await s.spend(f"account:{b}", ["total"]) == [5]
    assert [e.request_id for e in await s.usage_events(b)] == ["r-b"]
