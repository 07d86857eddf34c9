"""Fixtures of the store tests: every backend, started on a real server where it has one."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.redis_servers import *  # noqa: F403 - the Redis server fixtures
from tests.store.backends import FULL, SMOKE, Backend, open_backend


@pytest.fixture(params=FULL)
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    async for b in open_backend(request, request.param):
        yield b


@pytest.fixture(params=SMOKE)
async def any_backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    async for b in open_backend(request, request.param):
        yield b


@pytest.fixture(params=["redis", "cluster"])
async def shared_backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    async for b in open_backend(request, request.param):
        yield b
