"""The `records:` section of the config: where usage events and the ledger are kept.

    records:
      url: sqlite://data/lunos-records.db     # or postgresql://USER:PASS@HOST:5432/DB
      max_connections: 10                     # postgresql: pool size per process
      timeout_seconds: 10                     # one statement
      connect_timeout_seconds: 5
      billing_retention_days: 0               # 0: ledger lines kept until erased

Events' retention is the meter's `events_retention_days` (it writes them).
An SQLite path is state the proxy writes, so it is relative to the working
directory (like the embedded store's file); `sqlite://` alone keeps the
records in memory only (tests).
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

import msgspec

from ..bounds import AtLeastOne, Seconds

__all__ = ["RECORDS_SCHEMES", "RecordsConfig"]

RECORDS_SCHEMES = ("sqlite", "postgresql", "postgres")


class RecordsConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    url: str = "sqlite://data/lunos-records.db"
    max_connections: AtLeastOne = 10
    timeout_seconds: Seconds = 10.0
    connect_timeout_seconds: Seconds = 5.0
    billing_retention_days: Annotated[int, msgspec.Meta(ge=0, le=36_500)] = 0

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in RECORDS_SCHEMES:
            raise ValueError("url: expected sqlite://PATH or postgresql://HOST/DATABASE")
        if parts.scheme != "sqlite" and not (parts.hostname or "host=" in parts.query):
            raise ValueError("url: a postgresql:// URL names its server")

    def options(self) -> dict[str, object]:
        """The backend's keyword arguments (`open_records(url, **options)`)."""
        if urlsplit(self.url).scheme == "sqlite":
            return {"busy_timeout": self.timeout_seconds}
        return {
            "max_connections": self.max_connections,
            "timeout": self.timeout_seconds,
            "connect_timeout": self.connect_timeout_seconds,
        }
