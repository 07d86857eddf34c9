"""Usage events and ledger lines an older version kept in the store, moved
into the records database: `lunos-proxy db import-store`.

Versions before the records database kept them in the state store:

    Redis     lunos:{billing}:account:<account>  list of ledger lines (JSON; never expiring)
              lunos:{events:<account>}:day:<day> list of events (JSON; expiring with retention)
    memory:// the data file's `billing` and `events` sections

The import reads them (SCAN on Redis: an operator's command, never on a
request path) and writes them with `Records.add`, in batches whose ids
come from their content: running it again while the batch ids are
remembered (a week) adds nothing twice. Ledger lines of one account, day and
model are summed into one line, as the records database keeps them. With
`remove`, Redis keys are deleted once their batch is written; a memory://
data file is never edited here (the running proxy owns it; its old sections
stay as they were).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import msgspec

from ..store.base import BillingRecord, UsageEvent
from .base import Records

__all__ = ["Imported", "import_store"]

BATCH = 5_000


class Imported(msgspec.Struct, kw_only=True):
    events: int = 0
    billing_lines: int = 0
    batches: int = 0
    batches_seen_before: int = 0
    keys_removed: int = 0


def _batch_id(events: Sequence[UsageEvent], billing: Sequence[BillingRecord]) -> str:
    digest = hashlib.sha256(msgspec.json.encode([list(events), list(billing)])).hexdigest()
    return f"import:{digest[:40]}"


async def _write(records: Records, events: list[UsageEvent], billing: list[BillingRecord],
                 done: Imported) -> None:
    if not (events or billing):
        return
    done.batches += 1
    if await records.add(_batch_id(events, billing), events, billing):
        done.events += len(events)
        done.billing_lines += len(billing)
    else:
        done.batches_seen_before += 1


async def import_store(
    store_url: str, store_options: dict[str, Any], records: Records, *, remove: bool = False
) -> Imported:
    """Move what the store at `store_url` holds of events and ledger lines into `records`."""
    done = Imported()
    if store_url.startswith("memory:"):
        await _from_file(store_url, records, done)
    else:
        await _from_redis(store_url, store_options, records, done, remove)
    return done


async def _from_file(url: str, records: Records, done: Imported) -> None:
    from ..store.memory.file import read_snapshot

    parts = urlsplit(url)
    path = unquote(parts.netloc + parts.path)
    if not path:
        return  # memory:// alone kept nothing
    snapshot = read_snapshot(path)
    events = [e for day in snapshot.events for e in day.events]
    for first in range(0, len(events), BATCH):
        await _write(records, events[first:first + BATCH], [], done)
    for first in range(0, len(snapshot.billing), BATCH):
        await _write(records, [], snapshot.billing[first:first + BATCH], done)


async def _from_redis(url: str, options: dict[str, Any], records: Records, done: Imported,
                      remove: bool) -> None:
    from ..store.redis.connect import RedisOptions, connect

    opts = msgspec.convert(options, RedisOptions)
    client = connect(url, opts).client
    event_decoder = msgspec.json.Decoder(UsageEvent)
    try:
        billing_prefix = f"{opts.prefix}{{billing}}:account:"
        async for key, raw in _lists(client, f"{opts.prefix}{{billing}}:account:*"):
            account = key[len(billing_prefix):]
            # A line as the Redis store kept it: the account is the list's key.
            lines = [msgspec.convert({**msgspec.json.decode(r), "account_id": account},
                                     BillingRecord) for r in raw]
            await _write(records, [], lines, done)
            if remove:
                done.keys_removed += await client.delete(key)
        async for key, raw in _lists(client, f"{opts.prefix}{{events:*}}:day:*"):
            events = [event_decoder.decode(r) for r in raw]
            for first in range(0, len(events), BATCH):
                await _write(records, events[first:first + BATCH], [], done)
            if remove:
                done.keys_removed += await client.delete(key)
    finally:
        await client.aclose()


async def _lists(client: Any, pattern: str) -> AsyncIterator[tuple[str, list[bytes]]]:
    """(key, items) of every list whose key matches `pattern`, on every node."""
    async for key in client.scan_iter(match=pattern, count=1000, _type="list"):
        name = key.decode() if isinstance(key, bytes) else str(key)
        yield name, await client.lrange(name, 0, -1)
