"""Store contract for what the abuse plugin adds: concurrency slots, settling,
shadow limits and escalating bans. Same backends and exactness as test_contract."""

from __future__ import annotations

from lunos_proxy.store import Limit, Slot
from tests.store.backends import Backend
from tests.store.test_contract import approx


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
