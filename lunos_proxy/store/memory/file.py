"""The embedded store's data file: one msgspec-JSON snapshot, replaced atomically.

Only what must outlive a restart goes in: accounts, keys, usage counters,
spend counters, admin tokens and the audit log. Limit counters and bans are
rebuilt from nothing, which at worst lets a client burst once more after a
restart. `billing` and `events` are what versions before the records
database (lunos_proxy/records/) kept here: read and written back as they are.
"""

from __future__ import annotations

import os
import tempfile

import msgspec

from ..accounting import UsageCounts
from ..base import (
    AccountRecord,
    AdminTokenRecord,
    AuditRecord,
    BillingRecord,
    KeyRecord,
    StoreError,
    UsageEvent,
)

__all__ = ["EventDay", "Snapshot", "SpendEntry", "UsageEntry", "read_snapshot", "write_snapshot"]


class UsageEntry(msgspec.Struct, kw_only=True, array_like=True):
    account_id: str
    day: str
    key_id: str
    model: str
    counters: UsageCounts  # an array: requests, input, output, cached input, cost (micros)


class SpendEntry(msgspec.Struct, kw_only=True, array_like=True):
    subject: str
    period: str
    micros: int
    expires: float  # epoch seconds; 0 = never


class EventDay(msgspec.Struct, kw_only=True):
    account_id: str
    day: str
    expires: float
    events: list[UsageEvent]


class Snapshot(msgspec.Struct, kw_only=True):
    version: int = 1
    accounts: list[AccountRecord] = msgspec.field(default_factory=list)
    keys: list[KeyRecord] = msgspec.field(default_factory=list)
    usage: list[UsageEntry] = msgspec.field(default_factory=list)
    billing: list[BillingRecord] = msgspec.field(default_factory=list)
    admin_tokens: list[AdminTokenRecord] = msgspec.field(default_factory=list)
    audit: list[AuditRecord] = msgspec.field(default_factory=list)
    spend: list[SpendEntry] = msgspec.field(default_factory=list)
    events: list[EventDay] = msgspec.field(default_factory=list)


_decoder = msgspec.json.Decoder(Snapshot)


def read_snapshot(path: str) -> Snapshot:
    """The snapshot at `path`, or an empty one if there is no file yet."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return Snapshot()
    except OSError as e:
        raise StoreError(f"cannot read store file {path}: {e.strerror}") from e
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as e:
        # Refuse to start over an unreadable file: starting empty would then
        # overwrite every account and key on the next save.
        raise StoreError(f"store file {path} is not a valid snapshot: {e}") from e


def write_snapshot(path: str, data: bytes) -> None:
    """Write `data` so that `path` holds either the old or the new file, never half."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".lunos-store-", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as e:
        raise StoreError(f"cannot write store file {path}: {e.strerror}") from e
