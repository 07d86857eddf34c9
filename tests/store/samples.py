"""Sample records and small waits shared by the store tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from lunos_proxy.store import AccountRecord, BillingRecord, KeyRecord, UsageDelta, UsageRow


async def eventually(check: Callable[[], bool], within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition never became true"
        await asyncio.sleep(0.01)


def make_key(key_id: str, key_hash: str, account_id: str = "acct-1", **fields: Any) -> KeyRecord:
    values = {
        "name": f"name of {key_id}",
        "created": 1_700_000_000.123456,
        "allowed_models": ["gpt-4o-mini", "claude-3-5-sonnet"],
        "budget_micros": 2**60 + 1,  # beyond a double: must come back exact
        **fields,
    }
    prefix = f"lk-{key_id[-4:]}"
    return KeyRecord(id=key_id, hash=key_hash, prefix=prefix, account_id=account_id, **values)


def make_account(account_id: str, index: str = "", **fields: Any) -> AccountRecord:
    values = {
        "name": "gAAAA-ciphertext-name",
        "email": "gAAAA-ciphertext-email",
        "plan": "pro",
        "allowed_regions": ["eu"],
        "created": 1_700_000_000.25,
        "updated": 1_700_000_001.75,
        **fields,
    }
    return AccountRecord(id=account_id, email_index=index, **values)


def delta(account: str, key: str, model: str, day: str, n: int = 1) -> UsageDelta:
    return UsageDelta(
        account_id=account,
        key_id=key,
        model=model,
        day=day,
        requests=n,
        input_tokens=100 * n,
        output_tokens=10 * n,
        cached_input_tokens=n,
        cost_micros=1_000_000_007 * n,
    )


def row(key: str, model: str, day: str, n: int) -> UsageRow:
    return UsageRow(
        key_id=key,
        model=model,
        day=day,
        requests=n,
        input_tokens=100 * n,
        output_tokens=10 * n,
        cached_input_tokens=n,
        cost_micros=1_000_000_007 * n,
    )


def ledger(record_id: str, account: str, created: float) -> BillingRecord:
    return BillingRecord(
        id=record_id,
        account_id=account,
        period="2025-03",
        model="gpt-4o",
        requests=3,
        input_tokens=300,
        output_tokens=30,
        cost_micros=2**55 + 3,
        created=created,
    )
