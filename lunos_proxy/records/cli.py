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
import sys
from typing import Any

from . import RecordsError, open_records

__all__ = ["add_db_commands"]

NOT_READY = 1


def add_db_commands(sub: Any) -> None:
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
        p.set_defaults(func=func)


def _records_of(args: argparse.Namespace) -> tuple[str, dict[str, Any]] | int:
    from ..cli import CONFIG_PROBLEM, _config_path, _load_or_report

    config = _load_or_report(_config_path(args))
    if config is None:
        return CONFIG_PROBLEM
    return config.records.url, config.records.options()


def _migrate(args: argparse.Namespace) -> int:
    where = _records_of(args)
    if isinstance(where, int):
        return where

    async def run() -> list[str]:
        records = open_records(where[0], **where[1])
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


def _check(args: argparse.Namespace) -> int:
    where = _records_of(args)
    if isinstance(where, int):
        return where
    url, options = where
    if url.startswith("sqlite:"):
        print("records on sqlite: migrated at start")
        return 0

    async def run() -> None:
        records = open_records(url, **options)
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
