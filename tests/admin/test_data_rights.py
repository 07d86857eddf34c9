"""Encryption at rest, export and deletion, checked by scanning everything the store holds."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as redis

from lunos_proxy.records import EventQuery
from lunos_proxy.store.base import BillingRecord, SpendDelta, UsageDelta, UsageEvent
from tests.auth_support import admin, auth_config, chat
from tests.conftest import GatewayFactory, Running
from tests.fakes import FakeProvider

NAME, EMAIL = "Grace Hopper", "grace.hopper@navy.example"


@pytest.fixture(params=["memory", "redis"])
async def setup(request: pytest.FixtureRequest, provider: FakeProvider, make_gateway: GatewayFactory,
                tmp_path: Path) -> dict[str, Any]:
    if request.param == "memory":
        path = tmp_path / "lunos.json"
        gw = await make_gateway(auth_config(provider.base_url, store_url=f"memory://{path}"))
        return {"gw": gw, "backend": "memory", "path": path}
    url = request.getfixturevalue("redis_url")
    prefix = f"t{uuid.uuid4().hex[:10]}:"
    gw = await make_gateway(auth_config(provider.base_url, store_url=url, store_options={"prefix": prefix}))
    return {"gw": gw, "backend": "redis", "url": url, "prefix": prefix}


async def dump(s: dict[str, Any]) -> bytes:
    store = s["gw"].gateway.store
    if s["backend"] == "memory":
        await store._save()  # what `close` and the write-behind timer do
        return bytes(s["path"].read_bytes())
    client = redis.from_url(s["url"])
    out = []
    try:
        async for key in client.scan_iter(match=s["prefix"] + "*"):
            kind = (await client.type(key)).decode()
            value: Any = {
                "string": client.get, "hash": client.hgetall, "list": lambda k: client.lrange(k, 0, -1),
                "set": client.smembers, "zset": lambda k: client.zrange(k, 0, -1),
            }[kind](key)
            out.append(repr((key, await value)).encode())
    finally:
        await client.aclose()
    return b"\n".join(out)


def traces(blob: bytes, *secrets: str) -> list[str]:
    low = blob.lower()
    return [s for s in secrets if s.lower().encode() in low]


async def make_everything(gw: Running) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    status, account = await admin(gw, "POST", "/admin/accounts", {"name": NAME, "email": EMAIL, "plan": "pro"})
    assert status == 201
    keys = [(await admin(gw, "POST", f"/admin/accounts/{account['id']}/keys", {"name": n}))[1] for n in ("a", "b")]
    assert (await chat(gw, keys[0]["key"]))[0] == 200
    store = gw.gateway.store
    await store.add_usage([
        UsageDelta(account_id=account["id"], key_id=keys[0]["id"], model="gpt-test", day="2026-11-01",
                   input_tokens=11, output_tokens=6, cost_micros=700),
        UsageDelta(account_id=account["id"], key_id=keys[1]["id"], model="gpt-test", day="2026-11-02",
                   input_tokens=5, output_tokens=1, cost_micros=300),
    ])
    events = [
        UsageEvent(request_id=f"req-{i}", account_id=account["id"], key_id=keys[0]["id"], model="gpt-test",
                   time=1_790_000_000.0 + i, day="2026-11-01", status=200, input_tokens=11, output_tokens=6)
        for i in (1, 2)
    ]
    billing = [
        BillingRecord(id=f"bill-{i}", account_id=account["id"], period=f"2026-11-0{i}", model="gpt-test",
                      requests=1, input_tokens=10 * i, output_tokens=i, cost_micros=1000 * i,
                      created=1_790_000_000.0 + i)
        for i in (1, 2, 3)
    ]
    assert await gw.gateway.records.add("setup", events, billing)
    await store.add_spend([
        SpendDelta(subject=f"account:{account['id']}", period="total", micros=1000),
        SpendDelta(subject=f"account:{account['id']}", period="credit", micros=5000),
        SpendDelta(subject=f"key:{keys[1]['id']}", period="m:2026-11", micros=300, ttl=86_400),
    ])
    return account, keys


async def test_name_email_and_keys_are_never_stored_in_plaintext(setup: dict[str, Any]) -> None:
    gw = setup["gw"]
    account, keys = await make_everything(gw)
    blob = await dump(setup)
    assert account["id"].encode() in blob  # the scan does see the records
    assert traces(blob, NAME, EMAIL, "grace", "hopper", keys[0]["key"], keys[1]["key"]) == []


async def test_export_holds_every_record_made_for_the_account(setup: dict[str, Any]) -> None:
    gw = setup["gw"]
    account, keys = await make_everything(gw)
    status, doc = await admin(gw, "GET", f"/admin/accounts/{account['id']}/export")
    assert status == 200
    assert doc["account"] == account
    assert [k["id"] for k in doc["keys"]] == sorted(k["id"] for k in keys)
    assert all("hash" not in k and "key" not in k for k in doc["keys"])
    assert [(u["day"], u["key_id"], u["input_tokens"], u["cost_micros"]) for u in doc["usage"]] == [
        ("2026-11-01", keys[0]["id"], 11, 700), ("2026-11-02", keys[1]["id"], 5, 300)]
    assert [b["id"] for b in doc["billing"]] == ["bill-1", "bill-2", "bill-3"]
    # The request made with the key (if the pipeline meters) and the two events written here.
    assert {"req-1", "req-2"} <= {e["request_id"] for e in doc["usage_events"]}
    assert {e["account_id"] for e in doc["usage_events"]} == {account["id"]}
    assert doc["spend"] == {f"account:{account['id']}": {"total": 1000, "credit": 5000},
                            f"key:{keys[0]['id']}": {}, f"key:{keys[1]['id']}": {"m:2026-11": 300}}
    assert [e["action"] for e in reversed(doc["audit"])] == ["accounts.create", "keys.create", "keys.create"]
    assert {e["account_id"] for e in doc["audit"]} == {account["id"]}


async def test_delete_erases_person_and_keys_keeps_billing_totals_and_is_idempotent(setup: dict[str, Any]) -> None:
    gw = setup["gw"]
    account, keys = await make_everything(gw)
    store = gw.gateway.store
    status, report = await admin(gw, "DELETE", f"/admin/accounts/{account['id']}")
    assert status == 200
    assert report["deleted"] == {"profile": True, "keys": 2, "usage_rows": 2, "usage_events": 2,
                                 "spend_counters": 3}
    assert [(r["data"], r["count"]) for r in report["retained"]] == [("billing_records", 3), ("audit_entries", 3)]
    assert all(r["why"] for r in report["retained"])

    status, body = await chat(gw, keys[0]["key"])
    assert (status, body["error"]["message"]) == (401, "Incorrect API key provided.")
    assert (await admin(gw, "GET", f"/admin/accounts/{account['id']}"))[0] == 404
    assert (await admin(gw, "GET", f"/admin/accounts/{account['id']}/export"))[0] == 404
    records = gw.gateway.records
    assert await records.billing(account["id"]) == []
    assert await store.usage(account["id"], "0000", "9999") == []
    assert (await records.events(EventQuery(account_id=account["id"]))).events == []
    assert await store.spend_counters(f"account:{account['id']}") == {}
    assert await store.spend_counters(f"key:{keys[1]['id']}") == {}

    blob = await dump(setup)
    assert traces(blob, NAME, EMAIL, "grace", "hopper", keys[0]["key"], keys[1]["key"], keys[0]["prefix"],
                  keys[1]["prefix"]) == []
    # The retained ledger lines still add up to the same totals, under a pseudonym.
    anon = {e.account_id for e in await store.audit() if e.account_id.startswith("anon_")}
    [pseudonym] = anon
    assert pseudonym not in json.dumps(report)
    kept = await records.billing(pseudonym)
    assert [b.id for b in kept] == ["bill-1", "bill-2", "bill-3"]
    assert (sum(b.cost_micros for b in kept), sum(b.input_tokens for b in kept)) == (6000, 60)

    status, again = await admin(gw, "DELETE", f"/admin/accounts/{account['id']}")
    assert status == 200
    assert again == {"account_id": account["id"], "retained": [],
                     "deleted": {"profile": False, "keys": 0, "usage_rows": 0, "usage_events": 0,
                                 "spend_counters": 0}}


async def test_rotated_encryption_key_reencrypts_old_accounts(
    provider: FakeProvider, make_gateway: GatewayFactory, redis_url: str
) -> None:
    from lunos_proxy.crypto import generate_encryption_key

    prefix = {"prefix": f"t{uuid.uuid4().hex[:10]}:"}
    old, new = generate_encryption_key(), generate_encryption_key()

    def config(keys: str) -> dict[str, Any]:
        c = auth_config(provider.base_url, store_url=redis_url, store_options=prefix)
        c["secrets"]["encryption_keys"] = keys
        return c

    before = await make_gateway(config(old))
    account = (await admin(before, "POST", "/admin/accounts", {"name": NAME, "email": EMAIL}))[1]
    during = await make_gateway(config(f"{new},{old}"))
    assert (await admin(during, "GET", f"/admin/accounts/{account['id']}"))[1]["name"] == NAME
    status, done = await admin(during, "POST", "/admin/accounts/reencrypt")
    assert (status, done) == (200, {"key_id": new.split(":")[0], "accounts": 1, "reencrypted": 1})
    after = await make_gateway(config(new))  # the old key is gone for good
    shown = (await admin(after, "GET", f"/admin/accounts/{account['id']}"))[1]
    assert (shown["name"], shown["email"]) == (NAME, EMAIL)
    assert (await admin(during, "POST", "/admin/accounts/reencrypt"))[1]["reencrypted"] == 0


async def test_export_and_delete_cover_what_the_meter_recorded_for_a_created_key(
    provider: FakeProvider, make_gateway: GatewayFactory, redis_url: str, tmp_path: Path
) -> None:
    import openai

    from tests.meter_support import flushed_records, meter_config

    prefix = f"t{uuid.uuid4().hex[:10]}:"
    gw = await make_gateway(meter_config(provider.base_url, tmp_path, store_url=redis_url,
                                         store_options={"prefix": prefix}))
    account = (await admin(gw, "POST", "/admin/accounts", {"name": NAME, "email": EMAIL}))[1]
    key = (await admin(gw, "POST", f"/admin/accounts/{account['id']}/keys", {"name": "app"}))[1]
    async with openai.AsyncOpenAI(base_url=gw.v1, api_key=key["key"], max_retries=0) as client:
        for _ in range(3):
            await client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
    await flushed_records(gw.gateway)

    doc = (await admin(gw, "GET", f"/admin/accounts/{account['id']}/export"))[1]
    assert [(u["key_id"], u["requests"]) for u in doc["usage"]] == [(key["id"], 3)]
    assert [(e["key_id"], e["status"]) for e in doc["usage_events"]] == [(key["id"], 200)] * 3
    recorded = [e async for e in gw.gateway.records.all_events(EventQuery(account_id=account["id"]))]
    assert [(e["endpoint"], e["latency_ms"]) for e in doc["usage_events"]] == [
        ("chat/completions", e.latency_ms) for e in recorded]
    billed = sum(b["cost_micros"] for b in doc["billing"])
    assert billed == sum(u["cost_micros"] for u in doc["usage"]) > 0
    spend = doc["spend"]
    assert spend[f"account:{account['id']}"]["total"] == billed
    assert list(spend[f"key:{key['id']}"].values()) == [billed, billed]  # this day and month

    report = (await admin(gw, "DELETE", f"/admin/accounts/{account['id']}"))[1]
    assert report["deleted"] == {"profile": True, "keys": 1, "usage_rows": 1, "usage_events": 3,
                                 "spend_counters": 5}
    for subject in spend:
        assert await gw.gateway.store.spend_counters(subject) == {}
    assert report["retained"][0]["data"] == "billing_records"
    blob = await dump({"gw": gw, "backend": "redis", "url": redis_url, "prefix": prefix})
    assert traces(blob, NAME, EMAIL, "grace", "hopper", key["key"], key["prefix"]) == []
    [pseudonym] = {e.account_id for e in await gw.gateway.store.audit() if e.account_id.startswith("anon_")}
    assert sum(b.cost_micros for b in await gw.gateway.records.billing(pseudonym)) == billed


async def test_usage_another_instance_holds_unwritten_is_not_written_after_the_erasure(
    provider: FakeProvider, make_gateway: GatewayFactory, redis_url: str, tmp_path: Path
) -> None:
    import openai

    from tests.meter_support import meter_config, meter_of
    from tests.store.samples import eventually

    prefix = f"t{uuid.uuid4().hex[:10]}:"
    config = meter_config(provider.base_url, tmp_path, store_url=redis_url,
                          store_options={"prefix": prefix}, meter={"flush_interval_seconds": 3600})
    first, second = await make_gateway(config), await make_gateway(config)
    account = (await admin(first, "POST", "/admin/accounts", {"name": NAME, "email": EMAIL}))[1]
    key = (await admin(first, "POST", f"/admin/accounts/{account['id']}/keys", {"name": "app"}))[1]
    async with openai.AsyncOpenAI(base_url=second.v1, api_key=key["key"], max_retries=0) as client:
        for _ in range(2):
            await client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
    meter = meter_of(second.gateway)
    ledger, writer = meter.ledger, meter.records
    assert writer is not None
    assert ledger.backlog == 6  # one row, five spend counters: none written yet
    assert writer.backlog == 3  # two events, one ledger line

    report = (await admin(first, "DELETE", f"/admin/accounts/{account['id']}"))[1]
    assert report["deleted"]["usage_rows"] == 0  # nothing was written before the erasure
    await eventually(lambda: ledger.backlog == 0 and writer.backlog == 0)  # the second instance heard of it
    # A request that was in flight at the erasure finishes: its usage is not kept either.
    ledger.record(UsageEvent(request_id="late", account_id=account["id"], key_id=key["id"],
                             model="gpt-test", time=1.0, day="2026-11-30", input_tokens=1,
                             output_tokens=1, cost_micros=5),
                  [(f"account:{account['id']}", "total", 0)])
    assert writer.backlog == 0
    assert await ledger.flush() and await writer.flush()
    store, records = second.gateway.store, second.gateway.records
    assert await store.usage(account["id"], "0000", "9999") == []
    assert (await records.events(EventQuery(account_id=account["id"]))).events == []
    assert await records.billing(account["id"]) == []
    assert await store.spend_counters(f"account:{account['id']}") == {}
    assert await store.spend_counters(f"key:{key['id']}") == {}


async def test_a_correction_racing_the_erasure_does_not_bring_the_account_back(
    setup: dict[str, Any],
) -> None:
    from lunos_proxy.admin.accounts import correct
    from lunos_proxy.crypto import load_secrets

    gw = setup["gw"]
    account, _ = await make_everything(gw)
    store = gw.gateway.store
    held = await store.account(account["id"])  # read by a PATCH before the deletion lands
    assert held is not None
    assert (await admin(gw, "DELETE", f"/admin/accounts/{account['id']}"))[0] == 200
    secrets = load_secrets(gw.gateway.config.secrets)
    assert not await correct(store, secrets, held, "Grace H.", EMAIL)
    assert await store.account(account["id"]) is None
    assert await store.accounts() == []
