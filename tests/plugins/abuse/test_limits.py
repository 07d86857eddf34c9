"""The abuse plugin on the embedded store: limits, headers, reservations, slots."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import aiohttp
import anthropic
import openai
import pytest

from tests.conftest import GatewayFactory
from tests.fakes import COMPLETION_TOKENS, PROMPT_TOKENS, FakeProvider
from tests.plugins.abuse.fakes import abuse_fakes  # noqa: F401 - fixture
from tests.plugins.abuse.helpers import (
    CHAT,
    abuse_config,
    eventually,
    eventually_async,
    plan,
    post,
    refusals,
)

pytestmark = pytest.mark.usefixtures("abuse_fakes")

USED = PROMPT_TOKENS + COMPLETION_TOKENS


async def test_request_limit_refuses_with_429_retry_after_and_openai_headers(
    provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(abuse_config(provider.base_url, plan(key={"requests_per_minute": 3})))
    async with aiohttp.ClientSession() as s:
        answers = [await post(s, gw) for _ in range(4)]
    assert [a[0] for a in answers] == [200, 200, 200, 429]
    assert [a[1]["x-ratelimit-remaining-requests"] for a in answers] == ["2", "1", "0", "0"]
    assert {a[1]["x-ratelimit-limit-requests"] for a in answers} == {"3"}
    assert answers[0][1]["x-ratelimit-reset-requests"] == "20s"
    _, headers, body = answers[3]
    # one request comes back every 60 s / 3, less the time the four took
    assert 15 <= int(headers["Retry-After"]) <= 20
    assert 15_000 < int(headers["retry-after-ms"]) <= 20_000
    assert int(headers["Retry-After"]) == math.ceil(int(headers["retry-after-ms"]) / 1000)
    assert body["error"]["code"] == "rate_limit_exceeded"
    assert body["error"]["message"].startswith("Rate limit reached for requests")
    assert "x-request-id" in headers
    assert len(provider.received) == 3
    assert refusals(gw, "requests") == 1


async def test_anthropic_clients_get_their_error_shape_and_anthropic_headers(
    provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(abuse_config(
        provider.base_url, plan(key={"requests_per_minute": 1, "tokens_per_minute": 10_000})))
    body = {"model": "claude-test", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as s:
        ok = await post(s, gw, body=body, path="/messages")
        refused = await post(s, gw, body=body, path="/messages")
    assert ok[0] == 200
    assert ok[1]["anthropic-ratelimit-requests-limit"] == "1"
    assert ok[1]["anthropic-ratelimit-requests-remaining"] == "0"
    assert ok[1]["anthropic-ratelimit-requests-reset"].endswith("Z")
    assert ok[1]["anthropic-ratelimit-tokens-limit"] == "10000"
    assert "x-ratelimit-limit-requests" not in ok[1]
    assert refused[0] == 429
    assert refused[2]["type"] == "error"
    assert refused[2]["error"]["type"] == "rate_limit_error"
    assert 55 <= int(refused[1]["Retry-After"]) <= 60


async def test_token_reservation_is_settled_with_the_reported_usage(
    provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    # 1000 per day: a token comes back only every 86 s, so the sums below are exact.
    settings = plan(key={"tokens_per_day": 1000}) | {"tokens": {"bytes_per_token": 1}}
    gw = await make_gateway(abuse_config(provider.base_url, settings))
    async with aiohttp.ClientSession() as s:
        first = await post(s, gw)
        second = await post(s, gw)
    reserved = 1000 - int(first[1]["x-ratelimit-remaining-tokens"])
    # the whole body counts as prompt at 1 byte per token, plus max_tokens
    assert reserved == 100 + len(json.dumps(CHAT))
    # the second request sees the first settled to its real usage, then its own reservation
    assert 1000 - int(second[1]["x-ratelimit-remaining-tokens"]) == USED + reserved


async def test_without_usage_the_reservation_stands(
    provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(abuse_config(provider.base_url, plan(key={"tokens_per_day": 1000}),
                                         meter=False))
    async with aiohttp.ClientSession() as s:
        first = await post(s, gw)
        second = await post(s, gw)
    reserved = 1000 - int(first[1]["x-ratelimit-remaining-tokens"])
    assert 1000 - int(second[1]["x-ratelimit-remaining-tokens"]) == 2 * reserved


async def test_a_request_that_never_reached_a_provider_is_refunded(
    provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(abuse_config(provider.base_url, plan(key={"tokens_per_day": 1000})))
    async with aiohttp.ClientSession() as s:
        missing = await post(s, gw, body={**CHAT, "model": "no-such-model"})
        after = await post(s, gw)
    assert missing[0] == 404
    own = math.ceil(len(json.dumps(CHAT)) / 4) + 100  # 4 bytes per token by default
    assert 1000 - int(after[1]["x-ratelimit-remaining-tokens"]) == own


async def test_shadow_limits_count_but_let_requests_through(
    provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(abuse_config(
        provider.base_url, plan(key={"requests_per_minute": 1, "shadow": True})))
    async with aiohttp.ClientSession() as s:
        statuses = [(await post(s, gw))[0] for _ in range(3)]
    assert statuses == [200, 200, 200]
    assert refusals(gw, "requests", "shadow") == 2
    assert refusals(gw, "requests") == 0


async def test_plans_are_chosen_by_the_principal_and_scopes_are_separate(
    provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    settings = {
        "plans": {"basic": {"key": {"requests_per_minute": 1}},
                  "pro": {"key": {"requests_per_minute": 3}, "account": {"requests_per_minute": 4}}},
        "default_plan": "basic",
    }
    gw = await make_gateway(abuse_config(provider.base_url, settings))
    async with aiohttp.ClientSession() as s:
        basic = [(await post(s, gw, key="a1.k1"))[0] for _ in range(2)]
        pro_k2 = [(await post(s, gw, key="a2.k2.pro"))[0] for _ in range(4)]
        pro_k3 = [(await post(s, gw, key="a2.k3.pro"))[0] for _ in range(2)]
    assert basic == [200, 429]
    assert pro_k2 == [200, 200, 200, 429]  # the key's own limit
    assert pro_k3 == [200, 429]  # the account's 4th request, then the account is full


async def test_account_model_scope_counts_each_model_apart(
    provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(abuse_config(
        provider.base_url, plan(account_model={"requests_per_minute": 1})))
    async with aiohttp.ClientSession() as s:
        a = await post(s, gw)
        b = await post(s, gw, body={**CHAT, "model": "gpt-alias"})  # same public model
        c = await post(s, gw, body={**CHAT, "model": "gpt-same"})
    assert [a[0], b[0], c[0]] == [200, 429, 200]


async def test_unauthenticated_traffic_is_limited_per_address(
    provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(abuse_config(provider.base_url, {"address": {"requests_per_minute": 2}}))
    async with aiohttp.ClientSession() as s:
        statuses = [(await post(s, gw, key="anonymous"))[0] for _ in range(3)]
    assert statuses == [200, 200, 429]


async def test_a_plan_may_have_any_name_and_address_limits_stay_apart(
    provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    settings = {"plans": {"ip": {"key": {"requests_per_minute": 1}}}, "default_plan": "ip",
                "address": {"requests_per_minute": 2}}
    gw = await make_gateway(abuse_config(provider.base_url, settings))
    async with aiohttp.ClientSession() as s:
        keyed = [(await post(s, gw, key="a1.k1"))[0] for _ in range(2)]
        anonymous = [(await post(s, gw, key="anonymous"))[0] for _ in range(3)]
    assert keyed == [200, 429]
    assert anonymous == [200, 200, 429]


async def test_concurrency_slot_is_given_back_after_success_error_and_disconnect(
    provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(abuse_config(provider.base_url, plan(key={"concurrent": 1})))
    async with aiohttp.ClientSession() as s:
        provider.behaviour.delay_headers = 0.5
        slow = asyncio.create_task(post(s, gw))
        await eventually(lambda: len(provider.received) == 1)
        busy = await post(s, gw)
        assert busy[0] == 429 and busy[2]["error"]["message"].startswith("Too many concurrent")
        assert (await slow)[0] == 200
        provider.behaviour.delay_headers = 0.0
        provider.behaviour.status = 500
        assert (await post(s, gw))[0] == 500  # an upstream error gives the slot back too
        provider.behaviour.status = 200
        assert (await post(s, gw))[0] == 200
        # a client that goes away mid-stream
        provider.behaviour.pause_after_first = 5.0
        async with s.post(gw.v1 + "/chat/completions", json={**CHAT, "stream": True},
                          headers={"Authorization": "Bearer acct1.key1"}) as r:
            await r.content.readline()
        provider.behaviour.pause_after_first = 0.0
        await eventually(lambda: provider.disconnects == 1)

        async def admitted() -> bool:
            return (await post(s, gw))[0] == 200

        await eventually_async(admitted)
    assert refusals(gw, "concurrency") >= 1


async def test_concurrent_streams_are_limited_per_key_apart_from_requests(
    provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(abuse_config(
        provider.base_url, plan(key={"concurrent": 5, "concurrent_streams": 1})))
    provider.behaviour.pause_after_first = 0.5
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.v1 + "/chat/completions", json={**CHAT, "stream": True},
                          headers={"Authorization": "Bearer acct1.key1"}) as r:
            await r.content.readline()
            second = await post(s, gw, body={**CHAT, "stream": True})
            plain = await post(s, gw)
            await r.read()
    assert second[0] == 429
    assert second[2]["error"]["message"].startswith("Too many concurrent streams")
    assert plain[0] == 200


# -- the SDKs' retry logic --------------------------------------------------------


async def test_openai_sdk_waits_retry_after_and_then_succeeds(
    provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(abuse_config(provider.base_url, plan(key={"requests_per_second": 1})))
    async with openai.AsyncOpenAI(base_url=gw.v1, api_key="acct1.key1", max_retries=2) as client:
        for _ in range(2):
            reply = await client.chat.completions.create(
                model="gpt-test", messages=[{"role": "user", "content": "hi"}])
            assert reply.choices[0].message.content == "Hello, world!"
    assert len(provider.received) == 2
    assert refusals(gw, "requests") >= 1  # the second call was refused, waited, retried


async def test_openai_sdk_without_retries_raises_rate_limit_error_with_headers(
    provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(abuse_config(provider.base_url, plan(key={"requests_per_minute": 1})))
    messages: Any = [{"role": "user", "content": "x"}]
    async with openai.AsyncOpenAI(base_url=gw.v1, api_key="acct1.key1", max_retries=0) as client:
        await client.chat.completions.create(model="gpt-test", messages=messages)
        with pytest.raises(openai.RateLimitError) as e:
            await client.chat.completions.create(model="gpt-test", messages=messages)
    assert e.value.status_code == 429
    assert 55 <= int(e.value.response.headers["retry-after"]) <= 60
    assert e.value.response.headers["x-ratelimit-remaining-requests"] == "0"


async def test_anthropic_sdk_waits_retry_after_and_then_succeeds(
    provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(abuse_config(provider.base_url, plan(key={"requests_per_second": 1})))
    async with anthropic.AsyncAnthropic(base_url=gw.url, api_key="acct1.key1",
                                        max_retries=2) as client:
        for _ in range(2):
            msg = await client.messages.create(
                model="claude-test", max_tokens=20, messages=[{"role": "user", "content": "hi"}])
            assert msg.content[0].text == "Hello, world!"  # type: ignore[union-attr]
    assert len(provider.received) == 2
    assert refusals(gw, "requests") >= 1


async def test_an_output_budget_below_one_is_refused_and_gives_no_tokens_back(
    provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    # No meter: no usage is known, so each request keeps its reservation.
    gw = await make_gateway(abuse_config(provider.base_url, plan(key={"tokens_per_day": 1000}),
                                         meter=False))
    big = {**CHAT, "max_tokens": 900}
    async with aiohttp.ClientSession() as s:
        assert (await post(s, gw, body=big))[0] == 200
        for field in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
            status, _, answer = await post(s, gw, body={**CHAT, field: -1_000_000_000})
            assert (status, answer["error"]["message"]) == (
                400, f"Invalid request: Expected int >= 1 - at {field}")
        status, _, _ = await post(s, gw, body={**CHAT, "max_tokens": 0})
        assert status == 400
        assert (await post(s, gw, body=big))[0] == 429  # the day's tokens are still spent
    assert len(provider.received) == 1


async def test_a_request_larger_than_a_whole_token_limit_is_a_400_not_a_retry_forever(
    provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(abuse_config(provider.base_url, plan(key={"tokens_per_minute": 1000}),
                                         meter=False))
    async with aiohttp.ClientSession() as s:
        status, headers, answer = await post(s, gw, body={**CHAT, "max_tokens": 2000})
        assert (status, answer["error"]["code"], answer["error"]["param"]) == (
            400, "request_too_large", "max_tokens")
        assert "Retry-After" not in headers
        assert answer["error"]["message"].startswith("Request too large: it needs 20")
        assert (await post(s, gw, body={**CHAT, "max_tokens": 100}))[0] == 200
    assert len(provider.received) == 1
