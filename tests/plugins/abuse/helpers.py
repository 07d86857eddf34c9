"""Config and request helpers for the abuse plugin's tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from multidict import CIMultiDict

from tests.conftest import Running, basic_config

CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100}


def abuse_config(provider_url: str, settings: dict[str, Any], *, store: str = "memory://",
                 meter: bool = True, **store_options: Any) -> dict[str, Any]:
    """request_id → fake_principal → abuse(settings) → fake_meter, on `store`."""
    cfg = basic_config(provider_url)
    cfg["store"] = {"url": store, "options": store_options}
    cfg["pipeline"] = [
        {"name": "request_id"},
        {"name": "fake_principal"},
        {"name": "abuse", "settings": settings},
        *([{"name": "fake_meter"}] if meter else []),
    ]
    return cfg


def plan(**scopes: dict[str, Any]) -> dict[str, Any]:
    return {"plans": {"basic": scopes}, "default_plan": "basic"}


def metric(gw: Running, name: str, **labels: str) -> float:
    return gw.gateway.metrics.registry.get_sample_value(name, labels) or 0.0


def refusals(gw: Running, rule: str, mode: str = "enforced") -> float:
    return metric(gw, "lunos_abuse_refusals_total", rule=rule, mode=mode)


async def post(s: aiohttp.ClientSession, gw: Running, key: str = "acct1.key1",
               body: dict[str, Any] | None = None, path: str = "/chat/completions",
               **headers: str) -> tuple[int, CIMultiDict[str], Any]:
    async with s.post(gw.v1 + path, json=body or CHAT,
                      headers={"Authorization": f"Bearer {key}", **headers}) as r:
        return r.status, r.headers.copy(), await r.json()


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:  # noqa: ASYNC109
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition never became true"
        await asyncio.sleep(0.01)


async def eventually_async(check: Callable[[], Awaitable[bool]],
                           timeout: float = 5.0) -> None:  # noqa: ASYNC109
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition never became true"
        await asyncio.sleep(0.02)
