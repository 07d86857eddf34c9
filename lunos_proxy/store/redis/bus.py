"""Publish and subscribe across every instance on one Redis (`Bus`).

Mixed into `RedisStore`: publishing is one command (`_do`); subscriptions go
through its one `Subscriber` (pubsub.py), resubscribed after a failover.
Channel names carry the store's `prefix`.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from typing import TypeVar

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

    async def publish(self, channel: str, message: str) -> None:
        name = f"{self.options.prefix}{channel}"
        await self._do(lambda: self._client.publish(name, message))

    async def subscribe(self, channel: str, callback: Callable[[str], Awaitable[None]]) -> None:
        await self._subscriber.subscribe(f"{self.options.prefix}{channel}", callback)
