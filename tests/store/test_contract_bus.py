"""The store contract for the bus (`store.bus.Bus`): messages every instance hears."""

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
