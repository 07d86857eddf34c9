"""Redis pub/sub for the store: one connection, one reader task, reconnecting.

Messages published while the connection is down are lost (Redis pub/sub
keeps nothing); what the store sends this way are cache invalidations, and
the caches they address expire on their own within seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from redis.asyncio.client import PubSub
from redis.exceptions import RedisClusterException, RedisError

from ..logs import error_name
from .base import StoreError

__all__ = ["Subscriber"]

log = structlog.get_logger("lunos.store")

Callback = Callable[[str], Awaitable[None]]

_RETRY_FIRST, _RETRY_MAX = 0.05, 2.0  # seconds between reconnection attempts
_POLL = 1.0  # seconds a read waits, so the health-check PING goes out on time


class Subscriber:
    """Calls callbacks with the messages of their channels.

    `open_pubsub` makes a fresh `PubSub` for each connection attempt. Channel
    names here are the full names on the server (the store adds its prefix).
    """

    def __init__(self, open_pubsub: Callable[[], PubSub], timeout: float) -> None:
        self._open_pubsub = open_pubsub
        self._timeout = timeout
        self._callbacks: dict[str, list[Callback]] = {}
        self._confirmed: dict[str, asyncio.Future[None]] = {}
        # Channels whose SUBSCRIBE failed on a connection that lived on
        # (redis-py may repair it itself, resubscribing only what it knew).
        self._missing: set[str] = set()
        self._pubsub: PubSub | None = None
        # Held while (re)connecting and while subscribing, so a channel added
        # during a reconnection is neither missed nor subscribed on a
        # connection redis-py is still setting up.
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    async def subscribe(self, channel: str, callback: Callback) -> None:
        """Register `callback`; return once the server confirms the subscription."""
        async with self._lock:
            if channel in self._callbacks:
                self._callbacks[channel].append(callback)
            else:
                self._callbacks[channel] = [callback]
                self._confirmed[channel] = asyncio.get_running_loop().create_future()
                if self._pubsub is not None:
                    try:
                        await self._pubsub.subscribe(channel)
                    except (RedisError, RedisClusterException, OSError):
                        # The reader subscribes it again: at its next turn, or
                        # with every channel if it has to reconnect.
                        self._missing.add(channel)
            if self._task is None:
                self._task = asyncio.get_running_loop().create_task(self._read())
        try:
            await asyncio.wait_for(asyncio.shield(self._confirmed[channel]), self._timeout)
        except TimeoutError:
            raise StoreError(
                f"pub/sub subscription not confirmed within {self._timeout:g}s; "
                "it starts when Redis answers again"
            ) from None

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._callbacks.clear()
        self._confirmed.clear()

    async def _read(self) -> None:
        delay = _RETRY_FIRST
        while True:
            try:
                async with self._lock:
                    self._pubsub = self._open_pubsub()
                    await self._pubsub.subscribe(*self._callbacks)
                    self._missing.clear()
                delay = _RETRY_FIRST
                while True:
                    if self._missing:
                        async with self._lock:
                            missing = sorted(self._missing)
                            await self._pubsub.subscribe(*missing)
                            self._missing.difference_update(missing)
                    message = await self._pubsub.get_message(timeout=_POLL)
                    if message is not None:
                        await self._dispatch(message)
            except (RedisError, RedisClusterException, OSError) as e:
                log.warning("store_subscription_lost", error=error_name(e))
            finally:
                pubsub, self._pubsub = self._pubsub, None
                if pubsub is not None:
                    await _close_quietly(pubsub)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX)

    async def _dispatch(self, message: dict[str, Any]) -> None:
        channel = _text(message["channel"])
        if message["type"] == "subscribe":
            confirmed = self._confirmed.get(channel)
            if confirmed is not None and not confirmed.done():
                confirmed.set_result(None)
        elif message["type"] == "message":
            data = _text(message["data"])
            for callback in list(self._callbacks.get(channel, ())):
                try:
                    await callback(data)
                except Exception:
                    # One bad subscriber must not stop the others hearing of a revocation.
                    log.exception("store_subscriber_failed", channel=channel)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def _close_quietly(pubsub: PubSub) -> None:
    try:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
    except (RedisError, RedisClusterException, OSError):
        pass
