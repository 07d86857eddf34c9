"""Fixtures for the router: several fake providers, a principal from headers,
and a config builder with the router in the pipeline."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import ADMIN_HEADERS, ADMIN_TOKEN
from tests.entry_points import register_plugins
from tests.fakes import FakeProvider

ProviderFactory = Callable[[int], Awaitable[list[FakeProvider]]]


@pytest.fixture(autouse=True)
def principal_plugin(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Register tests/routing/principal.py under the plugin entry point."""
    where = tmp_path_factory.mktemp("entry-points")
    plugins = {"test_principal": "tests.routing.principal:PrincipalFromHeaders"}
    register_plugins(where, "lunos-test-principal", plugins, monkeypatch)
    yield


@pytest.fixture
async def fakes() -> AsyncIterator[ProviderFactory]:
    started: list[FakeProvider] = []

    async def make(n: int) -> list[FakeProvider]:
        out = []
        for _ in range(n):
            fake = FakeProvider()
            await fake.start()
            started.append(fake)
            out.append(fake)
        return out

    yield make
    for fake in started:
        await fake.close()


def router_config(
    providers: dict[str, FakeProvider],
    models: dict[str, Any],
    *,
    router: dict[str, Any] | None = None,
    regions: dict[str, str] | None = None,
    store: str = "memory://",
    store_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Each fake provider under its name (OpenAI format), the given models,
    and the pipeline test_principal → router."""
    regions = regions or {}
    return {
        "store": {"url": store, "options": store_options or {}},
        "admin": {"token": ADMIN_TOKEN},
        "providers": {
            name: {"format": "openai", "base_url": fake.base_url, "api_key": f"sk-{name}",
                   "region": regions.get(name, "")}
            for name, fake in providers.items()
        },
        "models": models,
        "pipeline": [
            {"name": "request_id"},
            {"name": "test_principal"},
            {"name": "router", "settings": {"seed": 1, **(router or {})}},
        ],
    }


def deployment(provider: str, model: str = "up", **extra: Any) -> dict[str, Any]:
    return {"provider": provider, "model": model, **extra}


async def chat(url: str, model: str = "m", *, stream: bool = False, headers: dict[str, str] | None = None
               ) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as s:
        body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
        async with s.post(url + "/v1/chat/completions", json=body, headers=headers or {}) as r:
            return r.status, dict(r.headers), await r.read()


def error_of(body: bytes) -> dict[str, Any]:
    err: dict[str, Any] = json.loads(body)["error"]
    return err


async def admin_json(admin_url: str, path: str) -> Any:
    async with aiohttp.ClientSession() as s:
        async with s.get(admin_url + path, headers=ADMIN_HEADERS) as r:
            assert r.status == 200, await r.text()
            return await r.json()


async def metric(admin_url: str, line_prefix: str) -> float:
    """The value of the first /metrics sample line starting with `line_prefix`."""
    async with aiohttp.ClientSession() as s:
        async with s.get(admin_url + "/metrics") as r:
            text = await r.text()
    for line in text.splitlines():
        if line.startswith(line_prefix):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def write_yaml(path: Path, config: dict[str, Any]) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(config))
    return path


class ShiftedClock:
    """The router's clock, moved forward by the test instead of slept on."""

    def __init__(self) -> None:
        import time

        self._now = time.monotonic
        self.offset = 0.0

    def __call__(self) -> float:
        return self._now() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def shift_clock(gateway: Any) -> ShiftedClock:
    """Put a running gateway's breakers and cooldowns on a clock the test moves."""
    from lunos_proxy.routing.state import Registry

    registry = gateway.lasting["router"]
    assert isinstance(registry, Registry)
    clock = ShiftedClock()
    registry.set_clock(clock)
    return clock
