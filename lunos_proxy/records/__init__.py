"""Usage records: per-request usage events and the billing ledger, in a database.

    sqlite://PATH               one local file (the embedded default); sqlite:// alone: in memory
    postgresql://USER:PASS@HOST:PORT/DB   (postgres:// too) for deployments

    records = open_records("sqlite://data/lunos-records.db")
    await records.start()

Options are the backend's keyword arguments (`SqliteRecords`,
`PostgresRecords`). A backend registers itself with `register(scheme, factory)`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

from .base import EventPage, EventQuery, Records, RecordsError, SchemaError

__all__ = [
    "EventPage",
    "EventQuery",
    "Records",
    "RecordsError",
    "SchemaError",
    "open_records",
    "register",
    "schemes",
]

Factory = Callable[..., Records]  # (url, **options) -> Records
_backends: dict[str, Factory] = {}


def register(scheme: str, factory: Factory) -> None:
    _backends[scheme] = factory


def schemes() -> list[str]:
    return sorted(_backends)


def open_records(url: str, **options: Any) -> Records:
    """A records store for `url`, not yet started: call `await records.start()`."""
    scheme = urlsplit(url).scheme
    factory = _backends.get(scheme)
    if factory is None:
        known = ", ".join(f"{s}://" for s in schemes())
        raise ValueError(f"unknown records URL scheme {scheme!r}; known: {known}")
    return factory(url, **options)


def _sqlite(url: str, **options: Any) -> Records:
    from .sqlite import SqliteRecords

    parts = urlsplit(url)
    return SqliteRecords(unquote(parts.netloc + parts.path), **options)


def _postgres(url: str, **options: Any) -> Records:
    # Imported on use, so the embedded default never loads asyncpg.
    from .postgres import PostgresRecords

    return PostgresRecords(url, **options)


register("sqlite", _sqlite)
register("postgresql", _postgres)
register("postgres", _postgres)
