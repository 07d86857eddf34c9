"""The state layer: `open_store(url)` picks a backend by the URL's scheme.

    memory://                      in memory only, nothing kept
    memory:///var/lib/lunos.json   in memory, kept in that file (memory://rel/path too)
    redis://  rediss://  redis+sentinel://  redis+cluster://   (see redis/connect.py)

    store = open_store("redis://redis:6379/0", timeout=0.5)
    await store.start()

Options are the backend's keyword arguments (`MemoryStore`, `RedisOptions`).
A backend registers itself with `register(scheme, factory)`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

from .base import (
    Accounting,
    AccountRecord,
    AdminTokenRecord,
    AuditRecord,
    BanEntry,
    BillingRecord,
    Bus,
    Directory,
    KeyRecord,
    Limit,
    Limits,
    LimitSet,
    LimitState,
    Slot,
    SlotState,
    SpendDelta,
    Store,
    StoreError,
    UsageCounts,
    UsageDelta,
    UsageEvent,
    UsageRow,
    Verdict,
)

__all__ = [
    "AccountRecord",
    "Accounting",
    "AdminTokenRecord",
    "AuditRecord",
    "BanEntry",
    "BillingRecord",
    "Bus",
    "Directory",
    "KeyRecord",
    "Limit",
    "LimitSet",
    "LimitState",
    "Limits",
    "Slot",
    "SlotState",
    "SpendDelta",
    "Store",
    "StoreError",
    "UsageCounts",
    "UsageDelta",
    "UsageEvent",
    "UsageRow",
    "Verdict",
    "open_store",
    "register",
]

Factory = Callable[..., Store]  # (url, **options) -> Store
_backends: dict[str, Factory] = {}


def register(scheme: str, factory: Factory) -> None:
    _backends[scheme] = factory


def open_store(url: str, **options: Any) -> Store:
    """A store for `url`, not yet started: call `await store.start()`."""
    scheme = urlsplit(url).scheme
    factory = _backends.get(scheme)
    if factory is None:
        known = ", ".join(f"{s}://" for s in sorted(_backends))
        raise ValueError(f"unknown store URL scheme {scheme!r}; known: {known}")
    return factory(url, **options)


def _memory(url: str, **options: Any) -> Store:
    from .memory import MemoryStore

    parts = urlsplit(url)
    path = unquote(parts.netloc + parts.path)
    return MemoryStore(path or None, **options)


def _redis(url: str, **options: Any) -> Store:
    # Imported on use, so the embedded store never loads redis-py.
    from .redis import RedisStore

    return RedisStore(url, **options)


register("memory", _memory)
for _scheme in (
    "redis",
    "rediss",
    "redis+sentinel",
    "rediss+sentinel",
    "redis+cluster",
    "rediss+cluster",
):
    register(_scheme, _redis)
