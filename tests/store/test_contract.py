"""The store contract for accounting (usage counters, billing) and a smoke test;
limits, the directory and the bus have suites of their own (test_contract_*.py).
Every backend passes these, with the same exact outcomes.

Memory runs on a fake clock, so durations are checked exactly; Redis uses its
own `TIME`, so durations are checked to within a round trip or two.
"""

from __future__ import annotations

from lunos_proxy.store import Limit
from tests.store.backends import Backend
from tests.store.samples import delta, make_key, row

# -- usage and billing --------------------------------------------------------


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


# -- lifecycle ----------------------------------------------------------------


async def test_smoke_ping_key_and_hit(any_backend: Backend):
    s = any_backend.store
    await s.ping()
    await s.put_key(make_key("key-1", "h1"))
    assert await s.key_by_hash("h1") == make_key("key-1", "h1")
    limit = Limit("rpm", 2, 60)
    assert [(await s.hit(any_backend.tag, [limit])).allowed for _ in range(3)] == [
        True,
        True,
        False,
    ]
