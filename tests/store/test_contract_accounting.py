"""The store contract for accounting (`store.accounting.Accounting`): usage
counters per (account, key, model, day), spend counters, once-only claims."""

from __future__ import annotations

from lunos_proxy.store import SpendDelta, UsageDelta
from tests.store.backends import Backend
from tests.store.samples import delta, row


async def test_usage_is_summed_per_key_model_and_day(backend: Backend):
    s, odd_model = backend.store, "bedrock/anthropic.claude|v2:1"
    await s.add_usage(
        [
            delta("a-1", "k-2", "gpt-4o", "2025-03-02"),
            delta("a-1", "k-1", "gpt-4o", "2025-03-01", 2),
            delta("a-2", "k-9", "gpt-4o", "2025-03-01"),
        ]
    )
    await s.add_usage(
        [
            delta("a-1", "k-1", "gpt-4o", "2025-03-01", 3),
            delta("a-1", "k-1", odd_model, "2025-03-01"),
            delta("a-1", "k-1", "gpt-4o", "2025-03-03"),
        ]
    )
    assert await s.usage("a-1", "2025-03-01", "2025-03-03") == [
        row("k-1", "bedrock/anthropic.claude|v2:1", "2025-03-01", 1),
        row("k-1", "gpt-4o", "2025-03-01", 5),
        row("k-2", "gpt-4o", "2025-03-02", 1),
        row("k-1", "gpt-4o", "2025-03-03", 1),
    ]
    assert await s.usage("a-1", "2025-03-02", "2025-03-02") == [
        row("k-2", "gpt-4o", "2025-03-02", 1)
    ]
    assert await s.usage("a-1", "2025-04-01", "2025-04-30") == []
    assert await s.usage("a-2", "2025-03-01", "2025-03-01") == [
        row("k-9", "gpt-4o", "2025-03-01", 1)
    ]


async def test_deleting_usage_counts_rows_and_spares_other_accounts(backend: Backend):
    s = backend.store
    await s.add_usage(
        [
            delta("a-1", "k-1", "m-1", "2025-03-01"),
            delta("a-1", "k-1", "m-2", "2025-03-01"),
            delta("a-1", "k-1", "m-1", "2025-03-02"),
            delta("a-2", "k-2", "m-1", "2025-03-01"),
        ]
    )
    assert await s.delete_usage("a-1") == 3
    assert await s.usage("a-1", "2000-01-01", "2999-12-31") == []
    assert await s.delete_usage("a-1") == 0
    assert len(await s.usage("a-2", "2000-01-01", "2999-12-31")) == 1



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


async def test_writes_repeated_with_the_same_once_id_apply_once(backend: Backend):
    s, t = backend.store, backend.tag
    accounts = [f"a-{t}-{i}" for i in range(4)]  # spread over cluster slots
    deltas = [UsageDelta(account_id=a, key_id="k", model="m", day="2026-11-26", cost_micros=5) for a in accounts]
    spends = [SpendDelta(subject=f"account:{a}", period="total", micros=5) for a in accounts]
    for _ in range(2):  # the retry after a lost reply
        await s.add_usage(deltas, once=f"batch-1-{t}")
        await s.add_spend(spends, once=f"batch-1-{t}")
    await s.add_usage(deltas, once=f"batch-2-{t}")
    for a in accounts:
        [row] = await s.usage(a, "2026-11-26", "2026-11-26")
        assert (row.requests, row.cost_micros) == (2, 10)
        assert await s.spend(f"account:{a}", ["total"]) == [5]



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
    await s.add_usage([usage(b)], once=once)
    await s.add_spend([spend(b)], once=once)
    assert [r.requests for r in await s.usage(b, "2026-11-30", "2026-11-30")] == [1]
    assert await s.spend(f"account:{b}", ["total"]) == [5]
