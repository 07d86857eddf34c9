"""The bus: what instances tell each other in passing. Messages every
instance hears (invalidations, erasures, ban lifts), and cooldowns: a
deployment a provider asked to leave alone, skipped by every instance.

Cooldowns are here, not with the limits or the accounting, because they
are coordination between instances, like the messages: a short-lived
mark on the backend's clock that its setter announces on the bus at once
(the router's `state.Cooldowns` uses both, and nothing else of the store).
They limit no caller's requests (`Limits`) and are never accounted for
(`Accounting`); nothing of them outlives the seconds they were set for.

Subscribe through `store.fanout.Fanout` when several generations of a
reload would otherwise each subscribe.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable

__all__ = ["Bus"]


class Bus(abc.ABC):
    """Publish and subscribe, and cooldowns, across every instance sharing the store."""

    @abc.abstractmethod
    async def publish(self, channel: str, message: str) -> None: ...

    @abc.abstractmethod
    async def subscribe(self, channel: str, callback: Callable[[str], Awaitable[None]]) -> None:
        """Call `callback` with every message published on `channel` by any
        instance (this one included) from now until `close`."""

    # -- cooldowns ------------------------------------------------------------
    @abc.abstractmethod
    async def cool_down(self, subject: str, seconds: float) -> float:
        """Put `subject` (a deployment id) in cooldown for `seconds`, extending,
        never shortening, one already running. Returns the seconds now left
        (on the backend's clock, shared by all instances)."""

    @abc.abstractmethod
    async def cooldowns(self) -> dict[str, float]:
        """Every subject cooling down now, with its seconds left; ended ones
        are forgotten."""
