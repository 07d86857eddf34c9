"""Publish and subscribe within one process, and cooldowns (`Bus`): every
subscriber of a channel hears each message before `publish` returns.

Mixed into `MemoryStore`, which holds the subscriptions (`_channels`) and
drops them on `close`, and the cooldowns (`_cooldowns`, never in the data
file: a restart forgets them, as every instance's copy would).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable

import structlog

from ..bus import Bus

__all__ = ["MemoryBus"]

log = structlog.get_logger("lunos.store")


class MemoryBus(Bus):
    _clock: Callable[[], float]
    _channels: defaultdict[str, list[Callable[[str], Awaitable[None]]]]
    _cooldowns: dict[str, float]  # subject -> until

    async def publish(self, channel: str, message: str) -> None:
        for callback in list(self._channels.get(channel, ())):
            try:
                await callback(message)
            except Exception:
                # One bad subscriber must not stop the others hearing of a revocation.
                log.exception("store_subscriber_failed", channel=channel)

    async def subscribe(self, channel: str, callback: Callable[[str], Awaitable[None]]) -> None:
        self._channels[channel].append(callback)

    # -- cooldowns ------------------------------------------------------------
    async def cool_down(self, subject: str, seconds: float) -> float:
        now = self._clock()
        until = max(self._cooldowns.get(subject, 0.0), now + seconds)
        self._cooldowns[subject] = until
        return until - now

    async def cooldowns(self) -> dict[str, float]:
        now = self._clock()
        self._cooldowns = {s: until for s, until in self._cooldowns.items() if until > now}
        return {s: until - now for s, until in self._cooldowns.items()}
