"""The bus: messages every instance hears (invalidations, erasures, ban lifts).

Subscribe through `store.fanout.Fanout` when several generations of a
reload would otherwise each subscribe.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable

__all__ = ["Bus"]


class Bus(abc.ABC):
    """Publish and subscribe, across every instance sharing the store."""

    @abc.abstractmethod
    async def publish(self, channel: str, message: str) -> None: ...

    @abc.abstractmethod
    async def subscribe(self, channel: str, callback: Callable[[str], Awaitable[None]]) -> None:
        """Call `callback` with every message published on `channel` by any
        instance (this one included) from now until `close`."""
