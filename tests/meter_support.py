"""Configs and helpers for the meter tests: real auth keys, a pricing file, ledger reads."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from lunos_proxy.app import Gateway
from lunos_proxy.records import EventQuery
from lunos_proxy.store.base import BillingRecord, UsageEvent, UsageRow
from plugins.meter import Meter
from tests.auth_support import auth_config, static_entry

# Two accounts, three keys.
KEY_A1 = "lk-meter-test-key-a1-0123456789abcdefghijklmnopqrstu"
KEY_A2 = "lk-meter-test-key-a2-0123456789abcdefghijklmnopqrstu"
KEY_B1 = "lk-meter-test-key-b1-0123456789abcdefghijklmnopqrstu"
KEYS = {KEY_A1: "acct-a", KEY_A2: "acct-a", KEY_B1: "acct-b"}

# Per million tokens: input $2.50, cached input $1.25, output $10, cache writes $3.75.
PRICING = """\
currency: USD
models:
  gpt-test:
    - {from: 2020-01-01, input: 2.5, cached_input: 1.25, output: 10}
  gpt-same:
    - {from: 2020-01-01, input: 0.15, output: 0.6}
  claude-test:
    - {from: 2020-01-01, input: 3, cached_input: 0.3, cache_write: 3.75, output: 15}
"""


def cost(model: str, prompt: int, completion: int, cached: int = 0) -> int:
    """Expected micro-units, computed independently of the meter's code."""
    rates = {"gpt-test": (2.5, 1.25, 10), "gpt-same": (0.15, 0.15, 0.6), "claude-test": (3, 0.3, 15)}
    inp, cin, out = (round(r * 1_000_000) for r in rates[model])
    total = (prompt - cached) * inp + cached * cin + completion * out
    return (total + 500_000) // 1_000_000


def meter_config(provider_url: str, tmp_path: Path, *, store_url: str = "memory://",
                 meter: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    pricing = tmp_path / "pricing.yaml"
    pricing.write_text(PRICING)
    config = auth_config(provider_url, store_url=store_url,
                         static=[static_entry(k, account=a, prefix=k[:20]) for k, a in KEYS.items()], **extra)
    settings: dict[str, Any] = {"pricing": str(pricing), "flush_interval_seconds": 0.2}
    settings.update(meter or {})
    config["pipeline"].append({"name": "meter", "settings": settings})
    return config


async def requests_settled(gateway: Gateway) -> None:
    """Wait (up to 5 s) for the requests still running to end: a token count
    runs off the loop, after the client has its whole answer, and the
    request's usage reaches the ledger only then."""
    for _ in range(500):
        if gateway.generation is None or not gateway.generation.in_flight:
            break
        await asyncio.sleep(0.01)
    await meter_of(gateway).settled()


def key_id(key: str) -> str:
    return "static:" + key[:20]


def meter_of(gateway: Gateway) -> Meter:
    assert gateway.generation is not None
    [meter] = [p for p in gateway.generation.plugins if isinstance(p, Meter)]
    return meter


async def flushed_usage(gateway: Gateway, account: str, day_from: str = "2000-01-01",
                        day_to: str = "2999-12-31") -> list[UsageRow]:
    await requests_settled(gateway)
    assert await meter_of(gateway).ledger.flush()
    return await gateway.store.usage(account, day_from, day_to)


async def flushed_records(gateway: Gateway) -> None:
    """Write what the meter holds: counters to the store, events and ledger to the records."""
    meter = meter_of(gateway)
    assert await meter.ledger.flush()
    assert meter.records is not None and await meter.records.flush()


async def recorded_events(gateway: Gateway, account: str) -> list[UsageEvent]:
    await flushed_records(gateway)
    return [e async for e in gateway.records.all_events(EventQuery(account_id=account))]


async def recorded_billing(gateway: Gateway, account: str) -> list[BillingRecord]:
    await flushed_records(gateway)
    return await gateway.records.billing(account)
