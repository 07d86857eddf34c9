"""The store contract: every backend passes these, with the same exact outcomes.

Memory runs on a fake clock, so durations are checked exactly; Redis uses its
own `TIME`, so durations are checked to within a round trip or two.
"""

from __future__ import annotations

import pytest

from lunos_proxy.store import Limit
from tests.store.backends import Backend
from tests.store.samples import delta, eventually, make_account, make_key, row


def approx(value: float, b: Backend) -> object:
    return pytest.approx(value, abs=max(b.tolerance, 1e-9))


# -- limits -------------------------------------------------------------------


async def test_burst_admits_exactly_limit_then_denies_until_one_unit_returns(backend: Backend):
    s, tag, limit = backend.store, backend.tag, Limit("rpm", 5, 60)
    remaining = []
    for _ in range(5):
        v = await s.hit(tag, [limit])
        assert v.allowed and v.retry_after == 0.0 and v.banned == 0.0
        remaining.append(v.states[0].remaining)
    assert remaining == [4, 3, 2, 1, 0]
    for _ in range(3):
        v = await s.hit(tag, [limit])
        assert not v.allowed
        assert v.retry_after == approx(12.0, backend)  # one unit: 60 s / 5
        assert v.states[0].remaining == 0
        assert v.states[0].reset == approx(60.0, backend)


async def test_units_come_back_at_limit_per_window(backend: Backend):
    s, tag, limit = backend.store, backend.tag, Limit("rps", 10, 2)
    assert [(await s.hit(tag, [limit])).allowed for _ in range(11)] == [True] * 10 + [False]
    denied = await s.hit(tag, [limit])
    assert denied.retry_after == approx(0.2, backend)
    await backend.advance(denied.retry_after + (0.05 if backend.tolerance else 0.0))
    assert (await s.hit(tag, [limit])).allowed
    assert not (await s.hit(tag, [limit])).allowed


async def test_denied_call_charges_none_of_its_limits(backend: Backend):
    s, tag = backend.store, backend.tag
    wide, narrow = Limit("wide", 10, 60), Limit("narrow", 2, 60)
    for _ in range(2):
        assert (await s.hit(tag, [wide, narrow])).allowed
    v = await s.hit(tag, [wide, narrow])
    assert not v.allowed
    assert v.retry_after == approx(30.0, backend)
    assert [st.remaining for st in v.states] == [8, 0]
    look = await s.hit(tag, [Limit("wide", 10, 60, cost=0)])
    assert look.states[0].remaining == 8
    assert (await s.hit(tag, [wide])).states[0].remaining == 7


async def test_cost_above_one_takes_that_many_units(backend: Backend):
    s, tag, four = backend.store, backend.tag, Limit("tpm", 10, 60, cost=4)
    assert (await s.hit(tag, [four])).states[0].remaining == 6
    assert (await s.hit(tag, [four])).states[0].remaining == 2
    v = await s.hit(tag, [four])
    assert not v.allowed
    assert v.retry_after == approx(12.0, backend)  # two units short, 6 s each
    assert v.states[0].remaining == 2
    v = await s.hit(tag, [Limit("tpm", 10, 60, cost=2)])
    assert v.allowed and v.states[0].remaining == 0


async def test_cost_zero_only_looks_and_is_refused_only_when_overdrawn(backend: Backend):
    s, tag, look = backend.store, backend.tag, Limit("quota", 3, 60, cost=0)
    for _ in range(5):
        v = await s.hit(tag, [look])
        assert v.allowed and v.states[0].remaining == 3 and v.states[0].reset == 0.0
    assert (await s.hit(tag, [Limit("quota", 3, 60, cost=3)])).allowed
    v = await s.hit(tag, [look])
    assert v.allowed and v.states[0].remaining == 0
    await s.adjust(tag, Limit("quota", 3, 60, cost=2))  # settled above the reservation
    v = await s.hit(tag, [look])
    assert not v.allowed
    assert v.retry_after == approx(40.0, backend)  # two units over, 20 s each
    assert v.states[0].remaining == 0


async def test_adjust_charges_and_refunds_but_never_fills_past_full(backend: Backend):
    s, tag = backend.store, backend.tag
    look = Limit("tokens", 10, 60, cost=0)
    assert (await s.hit(tag, [Limit("tokens", 10, 60, cost=6)])).states[0].remaining == 4
    await s.adjust(tag, Limit("tokens", 10, 60, cost=3))
    assert (await s.hit(tag, [look])).states[0].remaining == 1
    await s.adjust(tag, Limit("tokens", 10, 60, cost=-100))
    state = (await s.hit(tag, [look])).states[0]
    assert state.remaining == 10 and state.reset == 0.0
    one = Limit("tokens", 10, 60)
    assert [(await s.hit(tag, [one])).allowed for _ in range(11)] == [True] * 10 + [False]


async def test_refund_on_an_untouched_counter_leaves_it_full(backend: Backend):
    s, tag = backend.store, backend.tag
    await s.adjust(tag, Limit("fresh", 5, 60, cost=-3))
    assert [(await s.hit(tag, [Limit("fresh", 5, 60)])).allowed for _ in range(6)] == [
        *[True] * 5,
        False,
    ]


async def test_ban_refuses_hit_without_charging(backend: Backend):
    s, tag, limit = backend.store, backend.tag, Limit("rpm", 10, 60)
    await s.ban(tag, "ip:192.0.2.7", 30)
    v = await s.hit(tag, [limit], bans=["key:k1", "ip:192.0.2.7"])
    assert not v.allowed
    assert v.banned == approx(30.0, backend)
    assert v.retry_after == approx(30.0, backend)
    assert v.states[0].remaining == 10
    assert not (await s.hit(tag, [], bans=["ip:192.0.2.7"])).allowed
    v = await s.hit(tag, [limit], bans=["ip:192.0.2.8"])
    assert v.allowed and v.banned == 0.0 and v.states[0].remaining == 9


async def test_ban_extends_but_never_shortens(backend: Backend):
    s, tag = backend.store, backend.tag
    await s.ban(tag, "ip:a", 30)
    await s.ban(tag, "ip:a", 10)
    assert (await s.hit(tag, [], bans=["ip:a"])).banned == approx(30.0, backend)
    await s.ban(tag, "ip:a", 50)
    assert (await s.hit(tag, [], bans=["ip:a"])).banned == approx(50.0, backend)


async def test_ban_ends_when_its_time_is_up(backend: Backend):
    s, tag = backend.store, backend.tag
    await s.ban(tag, "ip:b", 0.2)
    assert not (await s.hit(tag, [], bans=["ip:b"])).allowed
    await backend.advance(0.2 + (0.1 if backend.tolerance else 0.0))
    v = await s.hit(tag, [Limit("rpm", 1, 60)], bans=["ip:b"])
    assert v.allowed and v.banned == 0.0


async def test_counters_and_bans_belong_to_their_tag(backend: Backend):
    s, limit = backend.store, Limit("rpm", 1, 60)
    assert (await s.hit(f"{backend.tag}-a", [limit])).allowed
    assert not (await s.hit(f"{backend.tag}-a", [limit])).allowed
    assert (await s.hit(f"{backend.tag}-b", [limit])).allowed
    await s.ban(f"{backend.tag}-a", "ip:c", 60)
    assert (await s.hit(f"{backend.tag}-b", [], bans=["ip:c"])).allowed


# -- keys ---------------------------------------------------------------------


async def test_keys_are_found_by_hash_id_and_account(backend: Backend):
    s = backend.store
    k1, k2 = make_key("key-1", "h1"), make_key("key-2", "h2", expires=1_800_000_000.5)
    other = make_key("key-3", "h3", account_id="acct-2")
    for k in (k2, other, k1):
        await s.put_key(k)
    assert await s.key_by_hash("h1") == k1
    assert await s.key_by_id("key-2") == k2
    assert await s.keys_of("acct-1") == [k1, k2]
    assert await s.keys_of("acct-2") == [other]
    assert await s.key_by_hash("nope") is None
    assert await s.key_by_id("nope") is None
    assert await s.keys_of("nobody") == []


async def test_replacing_a_key_moves_its_hash_index_and_account(backend: Backend):
    s = backend.store
    await s.put_key(make_key("key-1", "h-old"))
    rotated = make_key("key-1", "h-new", account_id="acct-2", revoked=True)
    await s.put_key(rotated)
    assert await s.key_by_hash("h-old") is None
    assert await s.key_by_hash("h-new") == rotated
    assert await s.key_by_id("key-1") == rotated
    assert await s.keys_of("acct-1") == []
    assert await s.keys_of("acct-2") == [rotated]


async def test_deleting_a_key_removes_every_way_to_find_it(backend: Backend):
    s = backend.store
    await s.put_key(make_key("key-1", "h1"))
    await s.put_key(make_key("key-2", "h2"))
    await s.delete_key("key-1")
    await s.delete_key("never-existed")
    assert await s.key_by_hash("h1") is None
    assert await s.key_by_id("key-1") is None
    assert [k.id for k in await s.keys_of("acct-1")] == ["key-2"]


async def test_a_returned_key_is_a_copy(backend: Backend):
    s = backend.store
    await s.put_key(make_key("key-1", "h1"))
    got = await s.key_by_hash("h1")
    assert got is not None
    got.revoked = True
    assert got.allowed_models is not None
    got.allowed_models.append("everything")
    assert await s.key_by_hash("h1") == make_key("key-1", "h1")


# -- accounts -----------------------------------------------------------------


async def test_accounts_are_found_by_id_index_and_listed_by_id(backend: Backend):
    s = backend.store
    a1, a2, a3 = make_account("a-1", "ix-1"), make_account("a-2", "ix-2"), make_account("a-3")
    for a in (a3, a1, a2):
        await s.put_account(a)
    assert await s.account("a-2") == a2
    assert await s.account_by_index("ix-1") == a1
    assert await s.account_by_index("") is None
    assert await s.account_by_index("ix-9") is None
    assert await s.account("a-9") is None
    assert await s.accounts() == [a1, a2, a3]


async def test_account_index_follows_a_replace_and_a_delete(backend: Backend):
    s = backend.store
    await s.put_account(make_account("a-1", "ix-old"))
    await s.put_account(make_account("a-2", "ix-2"))
    moved = make_account("a-1", "ix-new", plan="team")
    await s.put_account(moved)
    assert await s.account_by_index("ix-old") is None
    assert await s.account_by_index("ix-new") == moved
    await s.delete_account("a-2")
    await s.delete_account("a-9")
    assert await s.account("a-2") is None
    assert await s.account_by_index("ix-2") is None
    assert await s.accounts() == [moved]


async def test_an_update_writes_over_an_account_and_never_brings_back_an_erased_one(
    backend: Backend,
):
    s = backend.store
    await s.put_account(make_account("a-1", "ix-1"))
    changed = make_account("a-1", "ix-1", plan="team")
    assert await s.update_account(changed)
    assert await s.account("a-1") == changed
    await s.delete_account("a-1")
    assert not await s.update_account(make_account("a-1", "ix-1", plan="late"))
    assert await s.account("a-1") is None
    assert await s.account_by_index("ix-1") is None
    assert await s.accounts() == []


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


# -- invalidation and lifecycle -----------------------------------------------


async def test_subscriber_hears_messages_from_every_instance(backend: Backend):
    heard: list[str] = []
    other: list[str] = []

    async def on_keys(message: str) -> None:
        heard.append(message)

    async def on_other(message: str) -> None:
        other.append(message)

    await backend.store.subscribe("keys", on_keys)
    await backend.store.subscribe("accounts", on_other)
    twin = await backend.open_twin()
    await twin.publish("keys", "revoked:key-1")
    await eventually(lambda: heard == ["revoked:key-1"])
    await backend.store.publish("keys", "revoked:key-2")
    await eventually(lambda: heard == ["revoked:key-1", "revoked:key-2"])
    assert other == []


@pytest.mark.parametrize("failing_first", [True, False])
async def test_a_failing_subscriber_does_not_silence_the_others(
    backend: Backend, failing_first: bool
):
    heard: list[str] = []

    async def broken(message: str) -> None:
        raise RuntimeError("subscriber bug")

    async def works(message: str) -> None:
        heard.append(message)

    for callback in (broken, works) if failing_first else (works, broken):
        await backend.store.subscribe("keys", callback)
    await backend.store.publish("keys", "one")
    await backend.store.publish("keys", "two")
    await eventually(lambda: heard == ["one", "two"])


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


async def test_bans_are_listed_and_lifted_with_their_offences_and_counters(backend: Backend):
    s, tag = backend.store, backend.tag
    other = f"{tag}-other"
    await s.offend(tag, "ip:c", 10, 100, 3600)
    await s.offend(tag, "ip:c", 10, 100, 3600)  # a second offence: 20 s
    await s.ban(other, "ip:d", 30)
    assert (await s.hit(tag, [Limit("authfail", 1, 60)])).allowed  # now full
    listed = await s.bans(tag)
    assert [(b.tag, b.subject) for b in listed] == [(tag, "ip:c"), (other, "ip:d")]
    assert listed[0].seconds_left == approx(20.0, backend)
    assert await s.bans(f"{tag}-none") == []
    assert await s.lift_ban(tag, "ip:c", ["authfail"])
    assert [(b.tag, b.subject) for b in await s.bans(tag)] == [(other, "ip:d")]
    assert (await s.hit(tag, [], bans=["ip:c"])).allowed
    assert (await s.hit(tag, [Limit("authfail", 1, 60)])).allowed  # emptied
    assert await s.offend(tag, "ip:c", 10, 100, 3600) == 10  # a first offence again
    assert not await s.lift_ban(tag, "ip:none")
