"""Publish and subscribe, and cooldowns, across every instance on one Redis (`Bus`).

Mixed into `RedisStore`: publishing is one command (`_do`); subscriptions go
through its one `Subscriber` (pubsub.py), resubscribed after a failover.
Channel names carry the store's `prefix`. The cooldowns are one hash,
read and written by Lua scripts (`_run`) on the server's clock:

    lunos:{routing}:cooldown           hash deployment -> until (ms, server clock)

It puts every cooldown on one Cluster slot, bounded: one field per
deployment in the config, an ended one dropped when next read.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from ..bus import Bus
from .connect import Client, RedisOptions
from .pubsub import Subscriber

__all__ = ["RedisBus"]

_T = TypeVar("_T")


class RedisBus(Bus):
    options: RedisOptions
    _client: Client
    _subscriber: Subscriber

    @abc.abstractmethod
    async def _do(self, call: Callable[[], Awaitable[_T]]) -> _T: ...

    @abc.abstractmethod
    async def _run(self, script: str, keys: Sequence[str], args: Sequence[Any] = ()) -> Any: ...

    async def publish(self, channel: str, message: str) -> None:
        name = f"{self.options.prefix}{channel}"
        await self._do(lambda: self._client.publish(name, message))

    async def subscribe(self, channel: str, callback: Callable[[str], Awaitable[None]]) -> None:
        await self._subscriber.subscribe(f"{self.options.prefix}{channel}", callback)

    # -- cooldowns ------------------------------------------------------------
    def _cooldown_key(self) -> str:
        return f"{self.options.prefix}{{routing}}:cooldown"

    async def cool_down(self, subject: str, seconds: float) -> float:
        ms = round(seconds * 1000)
        left = await self._run("cool_down", [self._cooldown_key()], [subject, ms])
        return int(left) / 1000

    async def cooldowns(self) -> dict[str, float]:
        flat = await self._run("cooldowns", [self._cooldown_key()])
        return {flat[i].decode(): int(flat[i + 1]) / 1000 for i in range(0, len(flat), 2)}
