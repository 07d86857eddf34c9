"""The usage API on the admin listener: per account, by day and model, JSON and CSV."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import aiohttp
import openai

from tests.auth_support import ADMIN_TOKEN, admin
from tests.conftest import GatewayFactory
from tests.fakes import COMPLETION_TOKENS, PROMPT_TOKENS, FakeProvider
from tests.meter_support import (
    KEY_A1,
    KEY_A2,
    cost,
    flushed_records,
    key_id,
    meter_config,
)

TODAY = time.strftime("%Y-%m-%d", time.gmtime())


async def test_usage_by_day_and_model_with_totals_in_json_and_csv(
    provider: FakeProvider, make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw = await make_gateway(meter_config(provider.base_url, tmp_path))
    async with openai.AsyncOpenAI(base_url=gw.v1, api_key=KEY_A1, max_retries=0) as c1, \
            openai.AsyncOpenAI(base_url=gw.v1, api_key=KEY_A2, max_retries=0) as c2:
        for client in (c1, c2, c2):
            await client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "x"}])
        await c1.chat.completions.create(model="gpt-same", messages=[{"role": "user", "content": "x"}])
    await flushed_records(gw.gateway)
    one = cost("gpt-test", PROMPT_TOKENS, COMPLETION_TOKENS)
    same = cost("gpt-same", PROMPT_TOKENS, COMPLETION_TOKENS)

    status, doc = await admin(gw, "GET", f"/admin/usage/acct-a?from={TODAY}&to={TODAY}")
    assert status == 200
    assert (doc["account_id"], doc["currency"], doc["from"], doc["to"]) == ("acct-a", "USD", TODAY, TODAY)
    assert doc["rows"] == [
        {"day": TODAY, "model": "gpt-same", "requests": 1, "input_tokens": PROMPT_TOKENS,
         "output_tokens": COMPLETION_TOKENS, "cached_input_tokens": 0, "cost_micros": same},
        {"day": TODAY, "model": "gpt-test", "requests": 3, "input_tokens": 3 * PROMPT_TOKENS,
         "output_tokens": 3 * COMPLETION_TOKENS, "cached_input_tokens": 0, "cost_micros": 3 * one},
    ]
    assert doc["totals"] == {"requests": 4, "input_tokens": 4 * PROMPT_TOKENS,
                             "output_tokens": 4 * COMPLETION_TOKENS, "cached_input_tokens": 0,
                             "cost_micros": 3 * one + same}

    status, by_key = await admin(gw, "GET", f"/admin/usage/acct-a?from={TODAY}&to={TODAY}&by=key")
    assert [(r["model"], r["key_id"], r["requests"]) for r in by_key["rows"]] == [
        ("gpt-same", key_id(KEY_A1), 1), ("gpt-test", key_id(KEY_A1), 1), ("gpt-test", key_id(KEY_A2), 2)]

    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as s:
        async with s.get(gw.admin_url + f"/admin/usage/acct-a?from={TODAY}&to={TODAY}&format=csv") as r:
            assert r.status == 200 and r.content_type == "text/csv"
            text = await r.text()
        async with s.get(gw.admin_url + f"/admin/usage/acct-a/events?from={TODAY}&to={TODAY}&format=csv") as r:
            events_csv = await r.text()
    assert text.splitlines() == [
        "day,model,requests,input_tokens,output_tokens,cached_input_tokens,cost_micros",
        f"{TODAY},gpt-same,1,{PROMPT_TOKENS},{COMPLETION_TOKENS},0,{same}",
        f"{TODAY},gpt-test,3,{3 * PROMPT_TOKENS},{3 * COMPLETION_TOKENS},0,{3 * one}",
    ]
    lines = events_csv.splitlines()
    assert len(lines) == 5 and lines[0].startswith("request_id,account_id,key_id,model,provider,time,day")
    assert lines[0].endswith(",usage_source,endpoint,latency_ms")

    status, events = await admin(gw, "GET", f"/admin/usage/acct-a/events?from={TODAY}&to={TODAY}")
    assert [e["model"] for e in events["events"]] == ["gpt-test", "gpt-test", "gpt-test", "gpt-same"]
    assert all(e["usage_source"] == "reported" and e["request_id"] for e in events["events"])
    assert events["next"] == ""

    # Paged, and filtered by key and model: the pages join up with nothing lost or repeated.
    url = f"/admin/usage/acct-a/events?from={TODAY}&to={TODAY}&limit=3"
    status, first = await admin(gw, "GET", url)
    assert status == 200 and len(first["events"]) == 3 and first["next"]
    status, rest = await admin(gw, "GET", url + "&after=" + first["next"])
    assert (len(rest["events"]), rest["next"]) == (1, "")
    assert [e["request_id"] for e in first["events"] + rest["events"]] == [
        e["request_id"] for e in events["events"]]
    status, of_key = await admin(gw, "GET", f"/admin/usage/acct-a/events?from={TODAY}&key={key_id(KEY_A2)}")
    assert [e["key_id"] for e in of_key["events"]] == [key_id(KEY_A2)] * 2
    status, of_model = await admin(gw, "GET", f"/admin/usage/acct-a/events?from={TODAY}&model=gpt-same")
    assert [e["model"] for e in of_model["events"]] == ["gpt-same"]
    status, of_route = await admin(gw, "GET", f"/admin/usage/acct-a/events?from={TODAY}&endpoint=chat/completions")
    assert [e["endpoint"] for e in of_route["events"]] == ["chat/completions"] * 4
    assert all(isinstance(e["latency_ms"], int) for e in of_route["events"])
    status, none = await admin(gw, "GET", f"/admin/usage/acct-a/events?from={TODAY}&endpoint=embeddings")
    assert none["events"] == []
    status, bad = await admin(gw, "GET", f"{url}&after=CANARY-cursor")
    assert (status, bad["error"]["message"]) == (400, "'after' must be the 'next' of a previous page")
    # Forged cursors: a sequence number past 64 bits, a time that is no number.
    for forged in ([1.0, 2**63], [1.0, 1e23], [1.0, -1], [1.0, -2**70]):
        text = base64.urlsafe_b64encode(json.dumps(forged).encode()).decode()
        status, bad = await admin(gw, "GET", f"{url}&after={text}")
        assert (status, bad["error"]["message"]) == (400, "'after' must be the 'next' of a previous page")
    for limit in ("CANARY", "%C2%B2", "%D9%A1", "9" * 5000, "0", "10001"):
        status, bad = await admin(gw, "GET", f"/admin/usage/acct-a/events?limit={limit}")
        assert (status, bad["error"]["message"]) == (400, "'limit' must be a number from 1 to 10000")


async def test_usage_api_needs_an_admin_token_and_valid_dates(
    provider: FakeProvider, make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw = await make_gateway(meter_config(provider.base_url, tmp_path))
    status, _ = await admin(gw, "GET", "/admin/usage/acct-a", token="")
    assert status == 401
    status, doc = await admin(gw, "GET", "/admin/usage/acct-a?from=yesterday")
    assert (status, doc["error"]["message"]) == (400, "'from' must be a date, YYYY-MM-DD")
    status, doc = await admin(gw, "GET", "/admin/usage/acct-a?from=2026-02-01&to=2026-01-01")
    assert status == 400
    status, doc = await admin(gw, "GET", "/admin/usage/nobody?from=2026-01-01&to=2026-01-31")
    assert (status, doc["rows"], doc["totals"]["cost_micros"]) == (200, [], 0)
