"""`lunos-proxy db migrate | check`: the records database's schema.

    lunos-proxy db migrate [--config FILE]   create or upgrade the schema (idempotent;
                                             safe from several hosts at once)
    lunos-proxy db check   [--config FILE]   exit 0 if the schema is current, 1 if not
    lunos-proxy db import-store [--remove]   what an older version kept in the store
                                             (records/legacy.py), into the database

A proxy on PostgreSQL checks the schema at start and refuses an old one;
run `db migrate` before starting a new version (a deploy's init step). The
embedded SQLite store migrates itself at start.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..store.base import StoreError
from . import RecordsError, open_records
from .legacy import Imported, import_store

if TYPE_CHECKING:
    from ..config import Config

__all__ = ["add_db_commands"]

NOT_READY = 1

# Reads the --config a command names: the config, or the exit status after
# its problems were reported (the CLI's own loader).
Loader = Callable[[argparse.Namespace], "Config | int"]


def add_db_commands(sub: Any, load: Loader) -> None:
    """Add the `db` commands to the top-level subparsers `sub`."""
    group = sub.add_parser("db", help="the usage-records database").add_subparsers(
        dest="action", required=True
    )
    for name, helptext, func in (
        ("migrate", "create or upgrade the records schema", _migrate),
        ("check", "exit 0 if the records schema is current", _check),
        ("import-store", "move events and ledger lines an older version kept in the store "
         "into the records database", _import),
    ):
        p = group.add_parser(name, help=helptext)
        p.add_argument("--config", help="YAML file (default $LUNOS_CONFIG or config/lunos.yaml)")
        if name == "import-store":
            p.add_argument("--remove", action="store_true",
                           help="delete each Redis key once what it held is written")
        p.set_defaults(func=functools.partial(func, load))


def _migrate(load: Loader, args: argparse.Namespace) -> int:
    loaded = load(args)
    if isinstance(loaded, int):
        return loaded
    config = loaded.records

    async def run() -> list[str]:
        records = open_records(config.url, **config.options())
        try:
            return await records.migrate()
        finally:
            await records.close()

    try:
        applied = asyncio.run(run())
    except RecordsError as e:
        print(f"db migrate: {e}", file=sys.stderr)
        return NOT_READY
    for step in applied:
        print(f"applied {step}")
    print("records schema is current" + ("" if applied else " (nothing to do)"))
    return 0


def _check(load: Loader, args: argparse.Namespace) -> int:
    loaded = load(args)
    if isinstance(loaded, int):
        return loaded
    config = loaded.records
    if config.url.startswith("sqlite:"):
        print("records on sqlite: migrated at start")
        return 0

    async def run() -> None:
        records = open_records(config.url, **config.options())
        try:
            await records.ping()
            await records.start()
        finally:
            await records.close()

    try:
        asyncio.run(run())
    except RecordsError as e:  # SchemaError included: not migrated
        print(f"db check: {e}", file=sys.stderr)
        return NOT_READY
    print("records schema is current")
    return 0


def _import(load: Loader, args: argparse.Namespace) -> int:
    loaded = load(args)
    if isinstance(loaded, int):
        return loaded
    config = loaded

    async def run() -> Imported:
        records = open_records(config.records.url, **config.records.options())
        try:
            await records.start()
            return await import_store(config.store.url, config.store.options, records,
                                      remove=args.remove)
        finally:
            await records.close()

    try:
        done = asyncio.run(run())
    except (RecordsError, StoreError) as e:
        print(f"db import-store: {e}", file=sys.stderr)
        return NOT_READY
    print(f"imported {done.events} events and {done.billing_lines} ledger lines in "
          f"{done.batches} batches ({done.batches_seen_before} imported before)"
          + (f"; removed {done.keys_removed} keys" if args.remove else ""))
    return 0
