"""Each usage event names the API route that served it and the gateway's
latency to the answer's last byte, and nothing the client sent as a path,
query or header."""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp
import anthropic
import msgspec
import openai

from tests.conftest import GatewayFactory
from tests.fakes import FakeProvider
from tests.meter_support import KEY_A1, meter_config, recorded_events, requests_settled

MESSAGES = [{"role": "user", "content": "hi"}]
CANARY = "path-canary-5d1e"


async def test_events_carry_the_route_and_the_latency_to_the_last_byte(
    provider: FakeProvider, make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw = await make_gateway(meter_config(provider.base_url, tmp_path))
    spans: list[float] = []  # each call's wall time as the client saw it, in ms

    async def timed(call: object) -> None:
        start = time.perf_counter()
        await call  # type: ignore[misc]
        spans.append((time.perf_counter() - start) * 1000)

    async with openai.AsyncOpenAI(base_url=gw.v1, api_key=KEY_A1, max_retries=0) as client:
        provider.behaviour.delay_headers = 0.3  # the provider thinks before answering
        await timed(client.chat.completions.create(model="gpt-test", messages=MESSAGES))
        provider.behaviour.delay_headers = 0.0
        provider.behaviour.pause_after_first = 0.4  # a stream that pauses after its first event

        async def streamed() -> None:
            stream = await client.chat.completions.create(
                model="gpt-test", messages=MESSAGES, stream=True)
            [c async for c in stream]

        await timed(streamed())
        provider.behaviour.pause_after_first = 0.0
        await timed(client.embeddings.create(model="gpt-test", input="hi"))
    async with anthropic.AsyncAnthropic(base_url=gw.url, api_key=KEY_A1, max_retries=0) as ant:
        await timed(ant.messages.create(model="claude-test", max_tokens=16, messages=MESSAGES))
    # A query string and headers of the client's choosing name nothing in the event.
    async with aiohttp.ClientSession() as s:
        start = time.perf_counter()
        async with s.post(f"{gw.v1}/chat/completions?{CANARY}=1",
                          json={"model": "gpt-test", "messages": MESSAGES},
                          headers={"Authorization": f"Bearer {KEY_A1}", "X-Route": CANARY,
                                   "User-Agent": CANARY}) as r:
            assert r.status == 200
            await r.read()
        spans.append((time.perf_counter() - start) * 1000)
    await requests_settled(gw.gateway)

    events = await recorded_events(gw.gateway, "acct-a")
    assert [e.endpoint for e in events] == [
        "chat/completions", "chat/completions", "embeddings", "messages", "chat/completions"]
    latencies = [e.latency_ms for e in events]
    assert latencies[0] >= 300  # the provider's wait before its headers
    assert latencies[1] >= 400  # the stream's pause: measured to the last byte, not the first
    for latency, span in zip(latencies, spans, strict=True):
        assert 0 <= latency <= span + 1  # the gateway's share of what the client waited
    assert CANARY.encode() not in msgspec.json.encode(events)
