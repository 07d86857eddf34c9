"""One store subscription per channel, shared by every live listener.

A reload builds new plugins while the old ones still serve, and each would
otherwise subscribe anew. A `Fanout` subscribes once per store and hands
each message to the listeners alive then, held weakly (a dropped
generation's listeners go with it).

    erasures = Fanout("accounts:erased", Ledger.forget)
    if not await erasures.join(store, ledger):   # not confirmed yet
        log.warning(...)                         # the store keeps trying
    erasures.leave(store, ledger)
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

from .bus import Bus
from .errors import StoreError

__all__ = ["Fanout"]

L = TypeVar("L")


class Fanout(Generic[L]):
    def __init__(self, channel: str, deliver: Callable[[L, str], None]) -> None:
        self.channel = channel
        self._deliver = deliver
        self._listeners: weakref.WeakKeyDictionary[Bus, weakref.WeakSet[L]] = (
            weakref.WeakKeyDictionary()
        )

    async def join(self, store: Bus, listener: L) -> bool:
        """Add `listener`; False if the store's subscription is not confirmed
        yet (its subscriber keeps trying on its own)."""
        listeners = self._listeners.get(store)
        confirmed = True
        if listeners is None:
            listeners = self._listeners[store] = weakref.WeakSet()
            try:
                await store.subscribe(self.channel, functools.partial(self._fan, listeners))
            except StoreError:
                confirmed = False
        listeners.add(listener)
        return confirmed

    def leave(self, store: Bus, listener: L) -> None:
        listeners = self._listeners.get(store)
        if listeners is not None:
            listeners.discard(listener)

    async def _fan(self, listeners: weakref.WeakSet[L], message: str) -> None:
        for listener in list(listeners):
            self._deliver(listener, message)
