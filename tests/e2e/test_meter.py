"""The meter end to end: real SDKs through a real gateway, the ledger checked exactly."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import anthropic
import msgspec
import openai
import pytest

from lunos_proxy.store.base import UsageRow
from plugins.meter.metrics import MeterMetrics
from tests.conftest import GatewayFactory
from tests.fakes import CHUNKS, COMPLETION_TOKENS, PROMPT_TOKENS, FakeProvider
from tests.meter_support import (
    KEY_A1,
    KEY_A2,
    KEY_B1,
    cost,
    flushed_usage,
    key_id,
    meter_config,
    meter_of,
    recorded_billing,
    recorded_events,
)

MESSAGES = [{"role": "user", "content": "hi"}]


async def test_plain_and_streamed_calls_are_billed_exactly_as_the_provider_reported(
    provider: FakeProvider, make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    provider.behaviour.vary_usage = True
    gw = await make_gateway(meter_config(provider.base_url, tmp_path))
    async with openai.AsyncOpenAI(base_url=gw.v1, api_key=KEY_A1, max_retries=0) as client:
        plain = await client.chat.completions.create(model="gpt-test", messages=MESSAGES)
        stream = await client.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "longer prompt"}], stream=True
        )
        pieces = [c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content]
        usage_chunks = []
        asked = await client.chat.completions.create(
            model="gpt-test", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        async for c in asked:
            if c.usage is not None:
                usage_chunks.append(c.usage)
    async with anthropic.AsyncAnthropic(base_url=gw.url, api_key=KEY_A2, max_retries=0) as ant:
        async with ant.messages.stream(model="claude-test", max_tokens=64, messages=MESSAGES) as s:
            [t async for t in s.text_stream]
    assert pieces == CHUNKS
    assert len(usage_chunks) == 1  # the client that asked still gets its usage chunk
    assert plain.usage is not None
    reported = provider.reported
    assert len(reported) == 4
    (p1, c1), (p2, c2), (p3, c3), (p4, c4) = reported
    assert plain.usage.prompt_tokens == p1
    rows = await flushed_usage(gw.gateway, "acct-a")
    assert [(r.key_id, r.model) for r in rows] == [(key_id(KEY_A1), "gpt-test"), (key_id(KEY_A2), "claude-test")]
    gpt, claude = rows
    assert (gpt.requests, gpt.input_tokens, gpt.output_tokens) == (3, p1 + p2 + p3, c1 + c2 + c3)
    assert gpt.cost_micros == cost("gpt-test", p1, c1) + cost("gpt-test", p2, c2) + cost("gpt-test", p3, c3)
    assert (claude.requests, claude.input_tokens, claude.output_tokens) == (1, p4, c4)
    assert claude.cost_micros == cost("claude-test", p4, c4)
    # The include_usage the meter added reached the provider; the client's own was kept.
    sent = [r.json() for r in provider.received]
    assert sent[1]["stream_options"] == {"include_usage": True}
    assert sent[2]["stream_options"] == {"include_usage": True}


async def test_stream_is_byte_identical_when_the_client_asked_for_no_usage(
    provider: FakeProvider, make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw = await make_gateway(meter_config(provider.base_url, tmp_path))
    body = {"model": "gpt-same", "stream": True, "messages": MESSAGES, "stream_options": {"foo": 1}}
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.v1 + "/chat/completions", json=body,
                          headers={"Authorization": f"Bearer {KEY_B1}"}) as r:
            got = await r.read()
    expected = b"".join(provider.events({"model": "gpt-same", "messages": MESSAGES}, anthropic=False))
    assert got == expected
    upstream = provider.received[0].json()
    assert upstream["stream_options"] == {"foo": 1, "include_usage": True}
    [row] = await flushed_usage(gw.gateway, "acct-b")
    assert (row.input_tokens, row.output_tokens) == (PROMPT_TOKENS, COMPLETION_TOKENS)


async def test_cached_input_tokens_are_metered_and_priced_at_the_cached_rate(
    provider: FakeProvider, make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    provider.behaviour.cached_tokens = 4
    gw = await make_gateway(meter_config(provider.base_url, tmp_path))
    async with openai.AsyncOpenAI(base_url=gw.v1, api_key=KEY_B1, max_retries=0) as client:
        await client.chat.completions.create(model="gpt-test", messages=MESSAGES)
    async with anthropic.AsyncAnthropic(base_url=gw.url, api_key=KEY_B1, max_retries=0) as ant:
        await ant.messages.create(model="claude-test", max_tokens=64, messages=MESSAGES)
    rows = {r.model: r for r in await flushed_usage(gw.gateway, "acct-b")}
    assert (rows["gpt-test"].input_tokens, rows["gpt-test"].cached_input_tokens) == (PROMPT_TOKENS, 4)
    assert rows["gpt-test"].cost_micros == cost("gpt-test", PROMPT_TOKENS, COMPLETION_TOKENS, cached=4)
    assert (rows["claude-test"].input_tokens, rows["claude-test"].cached_input_tokens) == (PROMPT_TOKENS, 4)
    assert rows["claude-test"].cost_micros == cost("claude-test", PROMPT_TOKENS, COMPLETION_TOKENS, cached=4)


async def test_client_that_disconnects_mid_stream_is_billed_for_what_it_received(
    provider: FakeProvider, make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    provider.behaviour.chunk_interval = 0.2
    gw = await make_gateway(meter_config(provider.base_url, tmp_path))
    body = {"model": "gpt-test", "stream": True, "messages": MESSAGES}
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.v1 + "/chat/completions", json=body,
                          headers={"Authorization": f"Bearer {KEY_B1}"}) as r:
            # role chunk, then "Hel" and "lo": three events, then we leave
            for _ in range(3):
                assert (await r.content.readuntil(b"\n\n")).startswith(b"data: {")
    meter = meter_of(gw.gateway)
    for _ in range(100):
        if meter.ledger.backlog:
            break
        await _sleep(0.05)
    [row] = await flushed_usage(gw.gateway, "acct-b")
    # o200k_base: "Hel" + "lo" read is "Hello", 1 token; ", " may have been in flight
    # ("Hello, " is 2 tokens). The prompt is counted with OpenAI's chat framing.
    assert row.output_tokens in (1, 2)
    assert row.input_tokens == 3 + (3 + 1 + 1) + 0  # priming 3 + message (3 + "user" + "hi")
    [event] = await recorded_events(gw.gateway, "acct-b")
    assert event.usage_source == "estimated"
    assert gw.gateway.metrics.add(MeterMetrics).usage_estimated.labels("gpt-test", "fake")._value.get() == 1


async def test_client_that_leaves_before_the_answer_begins_is_billed_an_estimate(
    provider: FakeProvider, make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    provider.behaviour.delay_headers = 1.0  # a model thinking before its first byte
    gw = await make_gateway(meter_config(provider.base_url, tmp_path))
    body = {"model": "gpt-test", "messages": MESSAGES}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.3)) as s:
        with pytest.raises(TimeoutError):
            await s.post(gw.v1 + "/chat/completions", json=body,
                         headers={"Authorization": f"Bearer {KEY_B1}"})
    meter = meter_of(gw.gateway)
    for _ in range(100):
        if meter.ledger.backlog:
            break
        await _sleep(0.05)
    assert len(provider.received) == 1
    [row] = await flushed_usage(gw.gateway, "acct-b")
    assert (row.requests, row.input_tokens, row.output_tokens) == (1, 3 + (3 + 1 + 1), 0)
    [event] = await recorded_events(gw.gateway, "acct-b")
    assert event.usage_source == "estimated"


async def test_a_fallback_is_metered_and_priced_as_the_model_that_answered(
    provider: FakeProvider, make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    config = meter_config(provider.base_url, tmp_path)
    config["models"]["gpt-test"]["fallbacks"] = ["gpt-same"]
    config["pipeline"].append({"name": "router"})  # inside the meter: it sees the last attempt
    gw = await make_gateway(config)
    provider.behaviour.statuses = [500]  # gpt-test's deployment fails once
    async with openai.AsyncOpenAI(base_url=gw.v1, api_key=KEY_B1, max_retries=0) as client:
        answer = await client.chat.completions.create(model="gpt-test", messages=MESSAGES)
    assert [r.json()["model"] for r in provider.received] == ["gpt-upstream", "gpt-same"]
    assert answer.usage is not None
    [row] = await flushed_usage(gw.gateway, "acct-b")
    assert (row.model, row.cost_micros) == (
        "gpt-same", cost("gpt-same", answer.usage.prompt_tokens, answer.usage.completion_tokens))


async def test_provider_that_reports_no_usage_is_metered_by_counting_tokens(
    provider: FakeProvider, make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    provider.behaviour.report_usage = False
    gw = await make_gateway(meter_config(provider.base_url, tmp_path))
    async with openai.AsyncOpenAI(base_url=gw.v1, api_key=KEY_B1, max_retries=0) as client:
        stream = await client.chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "Hello, world!"
    [row] = await flushed_usage(gw.gateway, "acct-b")
    assert (row.input_tokens, row.output_tokens) == (3 + 3 + 1 + 1, 4)  # "Hello, world!" is 4 tokens
    [event] = await recorded_events(gw.gateway, "acct-b")
    assert (event.usage_source, event.model, event.key_id) == ("estimated", "gpt-test", key_id(KEY_B1))


async def test_usage_events_hold_metadata_only(
    provider: FakeProvider, make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw = await make_gateway(meter_config(provider.base_url, tmp_path))
    canary = "CANARY-7f3a-prompt-text"
    async with openai.AsyncOpenAI(base_url=gw.v1, api_key=KEY_A1, max_retries=0) as client:
        await client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": canary}])
    await meter_of(gw.gateway).ledger.flush()
    [event] = await recorded_events(gw.gateway, "acct-a")
    assert (event.input_tokens, event.output_tokens, event.usage_source) == (PROMPT_TOKENS, COMPLETION_TOKENS, "reported")
    assert event.cost_micros == cost("gpt-test", PROMPT_TOKENS, COMPLETION_TOKENS)
    billing = await recorded_billing(gw.gateway, "acct-a")
    dumped = msgspec.json.encode([event, billing]).decode()
    assert billing[0].input_tokens == PROMPT_TOKENS
    assert canary not in dumped and "Hello" not in dumped


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


def _row(rows: list[UsageRow], model: str) -> UsageRow:
    return next(r for r in rows if r.model == model)


async def test_usage_waiting_to_be_written_is_flushed_on_shutdown(
    provider: FakeProvider, make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    from lunos_proxy.records import EventQuery, open_records
    from lunos_proxy.store.memory import MemoryStore

    path = tmp_path / "store.json"
    gw = await make_gateway(meter_config(provider.base_url, tmp_path, store_url=f"memory://{path}",
                                         meter={"flush_interval_seconds": 3600},
                                         records={"url": f"sqlite://{tmp_path}/records.db"}))
    async with openai.AsyncOpenAI(base_url=gw.v1, api_key=KEY_B1, max_retries=0) as client:
        for _ in range(3):
            await client.chat.completions.create(model="gpt-test", messages=MESSAGES)
    assert meter_of(gw.gateway).ledger.backlog > 0  # nothing written yet: an hour to go
    await gw.gateway.close()  # what SIGTERM does after the grace period
    reopened = MemoryStore(str(path))
    [row] = await reopened.usage("acct-b", "2000-01-01", "2999-12-31")
    assert (row.requests, row.input_tokens, row.cost_micros) == (
        3, 3 * PROMPT_TOKENS, 3 * cost("gpt-test", PROMPT_TOKENS, COMPLETION_TOKENS))
    records = open_records(f"sqlite://{tmp_path}/records.db")
    await records.start()
    assert len((await records.events(EventQuery(account_id="acct-b"))).events) == 3
    assert [b.requests for b in await records.billing("acct-b")] == [3]
    await records.close()
