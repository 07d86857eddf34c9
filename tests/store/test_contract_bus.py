"""The store contract for the bus (`store.bus.Bus`): messages every instance
hears, and deployment cooldowns, shared by every instance on one store."""

from __future__ import annotations

import pytest

from tests.store.backends import Backend
from tests.store.samples import eventually


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


# -- cooldowns ----------------------------------------------------------------


def approx(value: float, b: Backend) -> object:
    return pytest.approx(value, abs=max(b.tolerance, 1e-9))


async def test_cooldown_is_seen_with_its_time_left(backend: Backend) -> None:
    s, d = backend.store, f"{backend.tag}/openai-eu"
    assert await s.cool_down(d, 30) == approx(30.0, backend)
    got = await s.cooldowns()
    assert set(got) == {d}
    assert got[d] == approx(30.0, backend)


async def test_cooldown_extends_but_never_shortens(backend: Backend) -> None:
    s, d = backend.store, f"{backend.tag}/a"
    await s.cool_down(d, 30)
    assert await s.cool_down(d, 10) == approx(30.0, backend)
    assert (await s.cooldowns())[d] == approx(30.0, backend)
    assert await s.cool_down(d, 50) == approx(50.0, backend)


async def test_cooldown_ends_when_its_time_is_up(backend: Backend) -> None:
    s = backend.store
    await s.cool_down(f"{backend.tag}/short", 0.2)
    await s.cool_down(f"{backend.tag}/long", 60)
    await backend.advance(0.2 + (0.1 if backend.tolerance else 0.0))
    assert set(await s.cooldowns()) == {f"{backend.tag}/long"}


async def test_cooldown_set_by_one_instance_is_seen_by_another(backend: Backend) -> None:
    twin = await backend.open_twin()
    await backend.store.cool_down(f"{backend.tag}/shared", 20)
    got = await twin.cooldowns()
    assert got[f"{backend.tag}/shared"] == approx(20.0, backend)
