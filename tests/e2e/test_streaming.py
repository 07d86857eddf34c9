"""Streams are copied as they arrive, and a client going away stops the upstream call."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from tests.conftest import Running
from tests.fakes import FakeProvider


async def test_first_event_reaches_client_before_provider_pause_ends(
    gw: Running, provider: FakeProvider
) -> None:
    provider.behaviour.pause_after_first = 2.0
    body = {"model": "gpt-test", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as s:
        started = time.perf_counter()
        async with s.post(gw.v1 + "/chat/completions", json=body) as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/event-stream")
            first = await r.content.readline()
            first_at = time.perf_counter() - started
            rest = await r.read()
            done_at = time.perf_counter() - started
    assert first.startswith(b"data: {")
    assert first_at < 1.0, f"first event took {first_at:.2f}s: the stream was buffered"
    assert done_at >= 2.0
    assert rest.endswith(b"data: [DONE]\n\n")


async def test_stream_bytes_reach_client_unchanged(gw: Running, provider: FakeProvider) -> None:
    body = {"model": "gpt-same", "stream": True, "messages": []}
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.v1 + "/chat/completions", json=body) as r:
            got = await r.read()
    assert got == b"".join(provider.events({"model": "gpt-same"}, anthropic=False))


async def test_client_disconnect_cancels_upstream_stream(gw: Running, provider: FakeProvider) -> None:
    provider.behaviour.chunk_interval = 0.3
    body = {"model": "gpt-test", "stream": True, "messages": []}
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.v1 + "/chat/completions", json=body) as r:
            await r.content.readline()
        # leaving the block closes the connection mid-stream
    for _ in range(50):
        if provider.disconnects:
            break
        await asyncio.sleep(0.05)
    assert provider.disconnects == 1
    assert provider.completed_streams == 0


async def test_client_disconnect_before_headers_cancels_upstream(
    gw: Running, provider: FakeProvider
) -> None:
    provider.behaviour.delay_headers = 5.0
    body = {"model": "gpt-test", "messages": []}
    async with aiohttp.ClientSession() as s:
        try:
            async with asyncio.timeout(0.5):
                await s.post(gw.v1 + "/chat/completions", json=body)
        except TimeoutError:
            pass
    # The proxy's upstream request is cancelled too: the fake's handler is
    # cancelled when its client (the proxy) disconnects.
    await asyncio.sleep(0.3)
    assert len(provider.received) == 1
    runner = provider.runner
    assert runner is not None and runner.server is not None
    assert len(runner.server.connections) == 0


async def test_provider_cut_mid_event_ends_with_a_whole_error_event_the_sdk_reads(
    gw: Running, provider: FakeProvider
) -> None:
    import openai

    provider.behaviour.cut_after, provider.behaviour.cut_mid_event = 3, True
    body = {"model": "gpt-test", "stream": True, "messages": []}
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.v1 + "/chat/completions", json=body) as r:
            got = await r.read()
    events = got.split(b"\n\n")
    assert got.count(b'"chat.completion.chunk"') == 3  # the half event never left
    assert events[-2].startswith(b"data: {\"error\"") and events[-1] == b""
    provider.behaviour.cut_after = 3
    async with openai.AsyncOpenAI(base_url=gw.v1, api_key="sk-test", max_retries=0) as client:
        stream = await client.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "hi"}], stream=True)
        with pytest.raises(openai.APIError, match="broke off"):
            async for _ in stream:
                pass


async def test_provider_cut_mid_stream_ends_with_error_event(gw: Running, provider: FakeProvider) -> None:
    provider.behaviour.cut_after = 3
    body = {"model": "gpt-test", "stream": True, "messages": []}
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.v1 + "/chat/completions", json=body) as r:
            assert r.status == 200
            got = await r.read()
    events = got.split(b"\n\n")
    assert got.count(b'"chat.completion.chunk"') == 3
    assert b'"code":"upstream_error"' in events[-2]
    assert b"[DONE]" not in got
