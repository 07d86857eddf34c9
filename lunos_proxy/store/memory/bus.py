"""Publish and subscribe within one process (`Bus`): every subscriber of a
channel hears each message before `publish` returns.

Mixed into `MemoryStore`, which holds the subscriptions (`_channels`) and
drops them on `close`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable

import structlog

from ..bus import Bus

__all__ = ["MemoryBus"]

log = structlog.get_logger("lunos.store")


class MemoryBus(Bus):
    _channels: defaultdict[str, list[Callable[[str], Awaitable[None]]]]

    async def publish(self, channel: str, message: str) -> None:
        for callback in list(self._channels.get(channel, ())):
            try:
                await callback(message)
            except Exception:
                # One bad subscriber must not stop the others hearing of a revocation.
                log.exception("store_subscriber_failed", channel=channel)

    async def subscribe(self, channel: str, callback: Callable[[str], Awaitable[None]]) -> None:
        self._channels[channel].append(callback)
