"""Fixtures of the records tests: every backend, on a real database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lunos_proxy.records import Records, open_records


async def open_backend(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Records:
    if kind == "sqlite":
        records = open_records(f"sqlite://{tmp_path}/records.db")
    else:
        records = open_records(request.getfixturevalue("pg_url"))
        await records.migrate()
    await records.start()
    return records


@pytest.fixture(params=["sqlite", "postgresql"])
async def records(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Records]:
    backend = await open_backend(request.param, tmp_path, request)
    yield backend
    await backend.close()
