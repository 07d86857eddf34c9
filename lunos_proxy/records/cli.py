"""`lunos-proxy db migrate | check`: the records database's schema.

    lunos-proxy db migrate [--config FILE]   create or upgrade the schema (idempotent;
                                             safe from several hosts at once)
    lunos-proxy db check   [--config FILE]   exit 0 if the schema is current, 1 if not

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
from typing import Any

from . import RecordsError, open_records
from .settings import RecordsConfig

__all__ = ["add_db_commands"]

NOT_READY = 1

# Reads the --config a command names: the records section, or the exit
# status after the config's problems were reported (the CLI's own loader).
Loader = Callable[[argparse.Namespace], "RecordsConfig | int"]


def add_db_commands(sub: Any, load: Loader) -> None:
    """Add `db migrate` and `db check` to the top-level subparsers `sub`."""
    group = sub.add_parser("db", help="the usage-records database").add_subparsers(
        dest="action", required=True
    )
    for name, helptext, func in (
        ("migrate", "create or upgrade the records schema", _migrate),
        ("check", "exit 0 if the records schema is current", _check),
    ):
        p = group.add_parser(name, help=helptext)
        p.add_argument("--config", help="YAML file (default $LUNOS_CONFIG or config/lunos.yaml)")
        p.set_defaults(func=functools.partial(func, load))


def _migrate(load: Loader, args: argparse.Namespace) -> int:
    config = load(args)
    if isinstance(config, int):
        return config

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
    config = load(args)
    if isinstance(config, int):
        return config
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
