"""The store contract for limits (`store.limits.Limits`): GCRA counters,
concurrency slots, settling, shadow limits, bans and escalating offences.

Memory runs on a fake clock, so durations are checked exactly; Redis uses its
own `TIME`, so durations are checked to within a round trip or two.
"""

from __future__ import annotations

import pytest

from lunos_proxy.store import Limit, Slot
from tests.store.backends import Backend


def approx(value: float, b: Backend) -> object:
    return pytest.approx(value, abs=max(b.tolerance, 1e-9))


async def test_slots_admit_up_to_limit_and_a_refusal_charges_nothing(backend: Backend):
    s, tag = backend.store, backend.tag
    slot, rpm = Slot("conc", 2, ttl=60), Limit("rpm", 10, 60)
    first = await s.hit(tag, [rpm], slots=[slot], lease="a")
    assert first.allowed and first.slots[0].held == 0 and first.slots[0].admitted
    assert (await s.hit(tag, [rpm], slots=[slot], lease="b")).slots[0].held == 1
    v = await s.hit(tag, [rpm], slots=[slot], lease="c")
    assert not v.allowed
    assert v.retry_after == 1.0
    assert v.slots[0].held == 2 and not v.slots[0].admitted
    assert v.states[0].remaining == 8  # the refused call took no request unit


async def test_settle_gives_the_lease_back_and_settles_reservations(backend: Backend):
    s, tag = backend.store, backend.tag
    slot, tokens = Slot("conc", 1, ttl=60), Limit("tpm", 100, 60, cost=40)
    assert (await s.hit(tag, [tokens], slots=[slot], lease="a")).allowed
    assert not (await s.hit(tag, [], slots=[slot], lease="b")).allowed
    await s.settle(tag, [Limit("tpm", 100, 60, cost=-30)], ["conc"], "a")
    v = await s.hit(tag, [Limit("tpm", 100, 60, cost=0)], slots=[slot], lease="b")
    assert v.allowed and v.slots[0].held == 0
    assert v.states[0].remaining == 90


async def test_a_lease_that_is_not_renewed_expires(backend: Backend):
    s, tag, slot = backend.store, backend.tag, Slot("conc", 1, ttl=0.3)
    assert (await s.hit(tag, [], slots=[slot], lease="crashed")).allowed
    assert not (await s.hit(tag, [], slots=[slot], lease="b")).allowed
    await backend.advance(0.3 + (0.1 if backend.tolerance else 0.0))
    assert (await s.hit(tag, [], slots=[slot], lease="b")).allowed


async def test_renewing_keeps_a_lease_past_its_ttl_but_never_retakes_one(backend: Backend):
    s, tag = backend.store, backend.tag
    slot = Slot("conc", 1, ttl=0.6 if backend.tolerance else 10)
    assert (await s.hit(tag, [], slots=[slot], lease="long")).allowed
    step = slot.ttl * 0.6
    for _ in range(3):
        await backend.advance(step)
        await s.renew(tag, [slot], "long")
    assert not (await s.hit(tag, [], slots=[slot], lease="b")).allowed
    await s.settle(tag, [], ["conc"], "long")
    await s.renew(tag, [slot], "long")  # given back: renewing must not take it again
    assert (await s.hit(tag, [], slots=[slot], lease="b")).allowed


async def test_an_expired_lease_is_not_renewed_back(backend: Backend):
    s, tag, slot = backend.store, backend.tag, Slot("conc", 1, ttl=0.3)
    assert (await s.hit(tag, [], slots=[slot], lease="stalled")).allowed
    await backend.advance(0.3 + (0.1 if backend.tolerance else 0.0))
    assert (await s.hit(tag, [], slots=[slot], lease="next")).allowed
    await s.renew(tag, [slot], "stalled")  # its instance wakes up too late
    v = await s.hit(tag, [], slots=[slot], lease="third")
    assert not v.allowed and v.slots[0].held == 1  # "next" only


async def test_a_short_lived_lease_never_cuts_a_longer_one_short(backend: Backend):
    s, tag = backend.store, backend.tag
    assert (await s.hit(tag, [], slots=[Slot("conc", 2, ttl=60)], lease="long")).allowed
    assert (await s.hit(tag, [], slots=[Slot("conc", 2, ttl=0.05)], lease="short")).allowed
    # Past the short lease and a second more (Redis keeps a slot's set for
    # its newest lease's ttl plus 1 s): the long lease is still there.
    await backend.advance(1.1 + backend.tolerance)
    v = await s.hit(tag, [], slots=[Slot("conc", 2, ttl=60)], lease="next")
    assert v.allowed and v.slots[0].held == 1  # "long" is still held


async def test_shadow_limits_and_slots_report_but_never_refuse(backend: Backend):
    s, tag = backend.store, backend.tag
    shadow, real = Limit("shadow", 1, 60, shadow=True), Limit("real", 10, 60)
    slot = Slot("sc", 1, ttl=60, shadow=True)
    v = await s.hit(tag, [shadow, real], slots=[slot], lease="a")
    assert v.allowed and v.states[0].admitted and v.slots[0].admitted
    v = await s.hit(tag, [shadow, real], slots=[slot], lease="b")
    assert v.allowed and v.retry_after == 0.0
    assert [st.admitted for st in v.states] == [False, True]
    assert [st.remaining for st in v.states] == [0, 8]
    assert not v.slots[0].admitted and v.slots[0].held == 1


async def test_repeat_offences_ban_for_longer_each_time_up_to_the_longest(backend: Backend):
    s, tag = backend.store, backend.tag
    bans = [await s.offend(tag, "ip:x", 10, 35, 3600) for _ in range(4)]
    assert bans == [10, 20, 35, 35]
    v = await s.hit(tag, [], bans=["ip:x"])
    assert not v.allowed and v.banned == approx(35.0, backend)
    assert await s.offend(tag, "ip:y", 10, 35, 3600) == 10  # per subject


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
