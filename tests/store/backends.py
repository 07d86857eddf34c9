"""Store backends for the contract suite, each on a real server where it has one."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from lunos_proxy.store import Store
from lunos_proxy.store.memory import MemoryStore
from lunos_proxy.store.redis import RedisStore

FULL = ["memory", "redis", "cluster"]
SMOKE = [*FULL, "tls", "sentinel"]


class FakeClock:
    """Time that moves only when a test says so, for exact GCRA arithmetic."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Backend:
    """A started store plus what a backend-neutral test needs around it."""

    name: str
    store: Store
    # Another instance sharing the same state (the same object for memory).
    open_twin: Callable[[], Awaitable[Store]]
    # Let `seconds` pass: a fake clock jumps, a real one is slept on.
    advance: Callable[[float], Awaitable[None]]
    # How far a duration may stray: 0 on a fake clock, round-trip time on Redis.
    tolerance: float
    tag: str = field(default_factory=lambda: f"tag-{uuid.uuid4().hex[:8]}")


async def open_backend(request: pytest.FixtureRequest, name: str) -> AsyncIterator[Backend]:
    if name == "memory":
        clock = FakeClock()

        async def jump(seconds: float) -> None:
            clock.now += seconds

        store: Store = MemoryStore(None, clock=clock)
        await store.start()

        async def same() -> Store:
            return store

        yield Backend(name, store, same, jump, 0.0)
        await store.close()
        return

    # Generous timeouts: the contract is about outcomes, and a busy machine
    # can take over a second to accept hundreds of concurrent connections.
    options: dict[str, object] = {
        "prefix": f"t{uuid.uuid4().hex[:10]}:",
        "timeout": 10.0,
        "connect_timeout": 10.0,
    }
    if name == "redis":
        url = request.getfixturevalue("redis_url")
    elif name == "cluster":
        url = request.getfixturevalue("redis_cluster_url")
    elif name == "sentinel":
        url = request.getfixturevalue("redis_sentinel_url")
    else:
        tls = request.getfixturevalue("redis_tls")
        url, options["ssl_ca_certs"] = tls.url, tls.ca_file
    opened: list[Store] = []

    async def open_twin() -> Store:
        twin = RedisStore(url, **options)
        await twin.start()
        opened.append(twin)
        return twin

    store = await open_twin()
    yield Backend(name, store, open_twin, asyncio.sleep, 0.3)
    for s in opened:
        await s.close()
