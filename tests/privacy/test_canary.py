"""The privacy proof: a request's content appears nowhere but in the answer.

Every case of `cases.CASES` is sent with a fresh canary in every place a
client's content goes, and the fake provider puts the canary in its answers
and its error messages. Then everything the proxy wrote or shows is read:
every log line (the proxy's and its libraries'), every key and value in
Redis or the embedded store's data file, every row of the records database
(PostgreSQL beside Redis, the SQLite file beside the embedded store), the
/metrics exposition, every page
of the account console (signed in with the key), and the
output of every GET route of the admin API. The canary must be in none of
them; it must be in what the provider received and in answers the client
got. Neither may any API key, provider credential, admin token or secret,
nor the account's name and email (stored encrypted) outside the admin API.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.auth_support import ADMIN_TOKEN, HASH_SECRET, STATIC_KEY, auth_config, static_entry
from tests.conftest import GatewayFactory, Running
from tests.fakes import Behaviour, FakeProvider
from tests.logcapture import Captured
from tests.privacy.cases import CASES, Case, behaviour_for
from tests.privacy.scan import (
    admin_outputs,
    console_outputs,
    findings,
    migrated,
    postgres_contents,
    redis_contents,
)

PROVIDER_SECRETS = {"openai provider key": "sk-provider-secret", "anthropic provider key": "sk-ant-provider-secret"}


def config(provider_url: str, store_url: str, records_url: str = "sqlite://") -> dict[str, Any]:
    cfg = auth_config(provider_url, store_url=store_url, static=[static_entry()])  # account static-acc
    cfg["records"] = {"url": records_url}
    cfg["server"] = {"max_body_bytes": 65536}
    cfg["console"] = {"enabled": True}
    cfg["pipeline"] = [
        {"name": "request_id"},
        {"name": "logger", "settings": {"address": "full"}},
        cfg["pipeline"][1],  # auth
        {"name": "abuse", "settings": {
            "plans": {"free": {"account": {"requests_per_day": 10_000}},
                      "tiny": {"account": {"requests_per_day": 1}}},
            "default_plan": "free",
            "auth_failures": {"limit": 1000},
        }},
        # Usage written behind quickly, with per-request usage events kept.
        {"name": "meter", "settings": {"flush_interval_seconds": 0.1, "events_retention_days": 30,
                                       "budgets": {"prepaid": ["static-acc"]}}},
        {"name": "router", "settings": {"max_attempts": 2}},
    ]
    return cfg


async def admin_call(gw: Running, method: str, path: str, body: Any = None) -> Any:
    async with aiohttp.ClientSession() as s, s.request(
        method, gw.admin_url + path, json=body, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    ) as r:
        assert r.status in (200, 201), f"{method} {path}: {r.status} {await r.text()}"
        return await r.json()


async def send(s: aiohttp.ClientSession, gw: Running, case: Case, canary: str, key: str | None) -> tuple[int | None, bytes]:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["x-api-key" if case.path.startswith("/v1/messages") else "Authorization"] = (
            key if case.path.startswith("/v1/messages") else f"Bearer {key}"
        )
    method = "GET" if case.body is None else "POST"
    data = None if case.body is None else case.body(canary)
    try:
        async with asyncio.timeout(case.give_up_after or 30):
            async with s.request(method, gw.url + case.path, data=data, headers=headers) as r:
                if case.abort_after_first_line:
                    first = await r.content.readline()
                    r.close()
                    return r.status, first
                return r.status, await r.read()
    except TimeoutError:
        assert case.give_up_after is not None, f"{case.name}: no answer in time"
        return None, b""


async def wait_for_lines(logs: Captured, count: int) -> None:
    for _ in range(200):
        if len(logs.requests()) >= count:
            return
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("store", ["redis", "embedded"])
async def test_canary_appears_only_in_what_the_client_receives(
    store: str, request: pytest.FixtureRequest, tmp_path: Path, captured_logs: Captured,
    provider: FakeProvider, make_gateway: GatewayFactory,
) -> None:
    data_file = tmp_path / "lunos.json"
    store_url = request.getfixturevalue("redis_server").url if store == "redis" else f"memory://{data_file}"
    records_file = tmp_path / "records.db"
    records_url = request.getfixturevalue("pg_url") if store == "redis" else f"sqlite://{records_file}"
    if store == "redis":
        await migrated(records_url)
    gw = await make_gateway(config(provider.base_url, store_url, records_url))
    pii = f"pii{uuid.uuid4().hex[:12]}"

    # Admin calls: the accounts and keys the requests use.
    account = await admin_call(gw, "POST", "/admin/accounts", {"name": f"Ada {pii}", "email": f"{pii}@example.com"})
    tiny = await admin_call(gw, "POST", "/admin/accounts", {"name": "Tiny", "plan": "tiny"})
    created = await admin_call(gw, "POST", f"/admin/accounts/{account['id']}/keys", {"name": "main"})
    tiny_key = (await admin_call(gw, "POST", f"/admin/accounts/{tiny['id']}/keys", {"name": "t"}))["key"]
    token = await admin_call(gw, "POST", "/admin/tokens", {"name": "reader", "scope": "read"})
    keys = {"valid": created["key"], "tiny": tiny_key, "prepaid": STATIC_KEY, "none": None}

    canaries: dict[str, str] = {}
    delivered: list[bytes] = []
    calls = 0
    async with aiohttp.ClientSession() as s:
        for case in CASES:
            canary = canaries[case.name] = f"CANARY{uuid.uuid4().hex}"
            provider.behaviour = Behaviour(**behaviour_for(case, canary))
            key = keys.get(case.key, f"lk-{canary}")
            received_before = len(provider.received)
            for _ in range(case.calls):
                status, body = await send(s, gw, case, canary, key)
                calls += 1
                delivered.append(body)
            assert status == case.status, f"{case.name}: {status} {body[:300]!r}"
            if case.reaches_provider:  # the content did travel: the proof is not vacuous
                assert any(canary.encode() in r.body for r in provider.received[received_before:]), case.name
            else:
                assert len(provider.received) == received_before + (case.calls - 1), case.name
    await wait_for_lines(captured_logs, calls)
    await asyncio.sleep(0.5)  # the meter's write-behind (every 0.1 s) has reached the store
    assert len(captured_logs.requests()) == calls  # every request, aborted ones too, was logged
    assert any(c.encode() in b"".join(delivered) for c in canaries.values())  # answers carried it

    ids = {"account_id": account["id"], "key_id": created["id"], "token_id": token["id"]}
    admin = await admin_outputs(gw, ids)
    console = await console_outputs(gw, created["key"])
    async with aiohttp.ClientSession() as s, s.get(gw.admin_url + "/metrics") as r:
        metrics = await r.read()
    if store == "redis":
        stored = await redis_contents(store_url)
    else:
        await gw.gateway.store.close()  # writes the data file now
        stored = data_file.read_bytes()
    assert account["id"].encode() in stored and created["prefix"].encode() in stored  # it is the store
    await gw.gateway.records.close()  # SQLite: the write-ahead log goes into the file
    records = await postgres_contents(records_url) if store == "redis" else records_file.read_bytes()
    assert account["id"].encode() in records  # it is the records database

    secrets = {
        **PROVIDER_SECRETS,
        "API key": created["key"], "tiny API key": tiny_key, "admin token": ADMIN_TOKEN,
        "new admin token": token["token"], "hash secret": HASH_SECRET, "static key": STATIC_KEY,
    }
    content = {f"canary of {name!r}": c for name, c in canaries.items()}
    kept = {"logs": captured_logs.text.encode(), "store": stored, "records": records,
            "/metrics": metrics}
    assert findings(kept, {**content, **secrets, "account name/email": pii}) == []
    shown = {f"GET {p}": b for p, b in {**admin, **console}.items()}
    assert findings(shown, {**content, **secrets}) == []
    assert "/console/" in console and "/console/privacy/export" in console
    assert {"/admin/audit", f"/admin/accounts/{account['id']}/export", f"/admin/usage/{account['id']}/events"} <= set(admin)
    events = admin[f"/admin/usage/{account['id']}/events"]
    assert events.count(b'"request_id"') >= 8, events[:300]  # usage events were written and read
