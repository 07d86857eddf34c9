"""Budgets across instances: hard limits refuse before forwarding, thresholds notify once."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import uuid
from pathlib import Path
from typing import Any

import openai
import pytest
from aiohttp import web

from tests.auth_support import admin
from tests.conftest import GatewayFactory, Running, start_site
from tests.fakes import COMPLETION_TOKENS, PROMPT_TOKENS, FakeProvider
from tests.meter_support import KEY_A1, KEY_A2, KEY_B1, cost, meter_config, meter_of

PER_REQUEST = cost("gpt-test", PROMPT_TOKENS, COMPLETION_TOKENS)  # 88 micro-dollars
MESSAGES = [{"role": "user", "content": "hi"}]
SECRET = "whsec-test-0123456789"


class Receiver:
    """A webhook endpoint on loopback that fails its first `fail_first` calls."""

    def __init__(self, fail_first: int = 0) -> None:
        self.calls: list[tuple[dict[str, str], bytes]] = []
        self.fail_first = fail_first
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.calls.append((dict(request.headers), await request.read()))
        return web.Response(status=500 if len(self.calls) <= self.fail_first else 204)

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        port = await start_site(self.runner)
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


async def two_gateways(make_gateway: GatewayFactory, provider: FakeProvider, tmp_path: Path,
                       redis_url: str, meter: dict[str, Any]) -> tuple[Running, Running]:
    options = {"prefix": f"t{uuid.uuid4().hex[:10]}:"}
    cfg = meter_config(provider.base_url, tmp_path, store_url=redis_url, store_options=options, meter=meter)
    return await make_gateway(cfg), await make_gateway(cfg)


async def chat(gw: Running, key: str) -> None:
    async with openai.AsyncOpenAI(base_url=gw.v1, api_key=key, max_retries=0) as client:
        await client.chat.completions.create(model="gpt-test", messages=MESSAGES)


async def test_spent_daily_budget_refuses_the_next_request_on_every_instance(
    provider: FakeProvider, make_gateway: GatewayFactory, tmp_path: Path, redis_url: str
) -> None:
    budgets = {"accounts": {"acct-a": {"daily": "0.0001"}}}  # 100 micro-dollars: two requests
    gw1, gw2 = await two_gateways(make_gateway, provider, tmp_path, redis_url, {"budgets": budgets})
    await chat(gw1, KEY_A1)
    await chat(gw1, KEY_A2)
    with pytest.raises(openai.RateLimitError) as refused:
        await chat(gw1, KEY_A1)
    assert refused.value.code == "insufficient_quota"
    assert refused.value.response.headers["x-should-retry"] == "false"
    assert await meter_of(gw1.gateway).ledger.flush()
    with pytest.raises(openai.RateLimitError) as elsewhere:
        await chat(gw2, KEY_A2)
    assert elsewhere.value.code == "insufficient_quota"
    assert len(provider.received) == 2  # refusals never reached the provider
    await chat(gw2, KEY_B1)  # another account is not affected
    assert len(provider.received) == 3


async def test_key_budget_limits_only_that_key(
    provider: FakeProvider, make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw = await make_gateway(meter_config(provider.base_url, tmp_path, meter={
        "budgets": {"keys": {"static:" + KEY_A1[:20]: {"monthly": "0.00005"}}}}))
    await chat(gw, KEY_A1)
    with pytest.raises(openai.RateLimitError):
        await chat(gw, KEY_A1)
    await chat(gw, KEY_A2)  # same account, other key


async def test_soft_thresholds_notify_once_each_signed_across_instances(
    provider: FakeProvider, make_gateway: GatewayFactory, tmp_path: Path, redis_url: str
) -> None:
    async with Receiver(fail_first=1) as hook:
        meter = {
            "budgets": {"refresh_seconds": 0, "accounts": {"acct-a": {"daily": "0.0003", "soft": [0.5, 0.8, 1]}}},
            "webhook": {"url": hook.url, "secret": SECRET, "backoff_seconds": 0.05},
        }
        gw1, gw2 = await two_gateways(make_gateway, provider, tmp_path, redis_url, meter)
        for gw in (gw1, gw2, gw1, gw2):  # 88, 176, 264, 352 of 300
            await chat(gw, KEY_A1)
            assert await meter_of(gw.gateway).ledger.flush()
        with pytest.raises(openai.RateLimitError):
            await chat(gw1, KEY_A1)
        for gw in (gw1, gw2):
            notifier = meter_of(gw.gateway).notifier
            assert notifier is not None
            await notifier.close()
    delivered = [(h, b) for h, b in hook.calls[1:]]  # the first attempt got a 500 and was retried
    payloads = sorted((json.loads(b) for _, b in delivered), key=lambda p: p["threshold"])
    assert [p["threshold"] for p in payloads] == [0.5, 0.8, 1.0]
    assert {(p["subject"], p["subject_id"], p["budget"], p["limit_micros"]) for p in payloads} == {
        ("account", "acct-a", "daily", 300)}
    assert [p["spent_micros"] for p in payloads] == [2 * PER_REQUEST, 3 * PER_REQUEST, 4 * PER_REQUEST]
    assert len({p["id"] for p in payloads}) == 3
    for headers, body in hook.calls:
        t, v1 = (part.split("=", 1)[1] for part in headers["Lunos-Signature"].split(","))
        expected = hmac.new(SECRET.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(v1, expected)


async def test_prepaid_account_is_served_while_its_credit_lasts(
    provider: FakeProvider, make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw = await make_gateway(meter_config(provider.base_url, tmp_path, meter={
        "budgets": {"prepaid": ["acct-b"], "refresh_seconds": 0}}))
    with pytest.raises(openai.RateLimitError):
        await chat(gw, KEY_B1)
    status, doc = await admin(gw, "POST", "/admin/usage/acct-b/credits", {"amount": "0.0002"})
    assert (status, doc["credit_micros"], doc["prepaid_left_micros"]) == (200, 200, 200)
    for _ in range(3):  # 0, 88, 176 spent before each: under 200, served (the last overruns)
        await chat(gw, KEY_B1)
    with pytest.raises(openai.RateLimitError):
        await chat(gw, KEY_B1)  # 264 spent
    await meter_of(gw.gateway).ledger.flush()
    status, balance = await admin(gw, "GET", "/admin/usage/acct-b/balance")
    assert (balance["spent_total_micros"], balance["credit_micros"]) == (3 * PER_REQUEST, 200)
    status, _ = await admin(gw, "POST", "/admin/usage/acct-b/credits", {"amount": "-1"})
    assert status == 400


async def test_the_last_threshold_is_told_when_the_ledger_wrote_between_check_and_answer() -> None:
    """Requests A and B are both admitted; A ends, the ledger writes its spend
    while B still runs, and B ends past the limit: its alert must go out,
    since every later request is refused before it gets to cross anything."""
    import time
    from decimal import Decimal

    from lunos_proxy.metrics import Metrics
    from lunos_proxy.store.base import UsageEvent
    from lunos_proxy.store.memory import MemoryStore
    from plugins.meter.budgets import BudgetRule, BudgetSettings, Guard, Rules
    from plugins.meter.ledger import Ledger
    from plugins.meter.webhooks import Notifier

    store, metrics = MemoryStore(), Metrics()
    ledger = Ledger(store, metrics, flush_interval=3600)
    rules = Rules(BudgetSettings(accounts={"acct-a": BudgetRule(daily=Decimal(1), soft=[1.0])}))
    async with Receiver() as hook:
        notifier = Notifier(store, metrics, hook.url, SECRET, backoff=0.05)
        guard = Guard(rules, store, ledger, notifier, currency="USD")
        at = time.time()
        limits = rules.limits("acct-a", "k-1", None, at)

        def ended(micros: int) -> None:
            event = UsageEvent(request_id="r", account_id="acct-a", key_id="k-1",
                               model="gpt-test", time=at, day="2026-11-30", input_tokens=1,
                               output_tokens=1, cost_micros=micros)
            ledger.record(event, rules.spend_periods("acct-a", "k-1", at))
            guard.after(limits, at)

        await guard.check(limits)  # A
        await guard.check(limits)  # B
        ended(600_000)  # A: 60 %
        assert await ledger.flush()  # written behind while B runs
        ended(500_000)  # B: 110 %
        with pytest.raises(Exception, match="budget is spent"):
            await guard.check(limits)  # C is refused: nothing else will cross 100 %
        for _ in range(100):
            if hook.calls:
                break
            await asyncio.sleep(0.02)
        await notifier.close()
    [(_, body)] = hook.calls
    payload = json.loads(body)
    assert (payload["threshold"], payload["spent_micros"]) == (1.0, 1_100_000)
