"""A broken provider's output ends in a clean error the SDKs raise, never in a decode error."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import anthropic
import openai
import pytest
from prometheus_client import generate_latest

from lunos_proxy import forward
from plugins.meter.metrics import MeterMetrics
from tests.conftest import GatewayFactory, Running, basic_config
from tests.fakes import GARBLED, FakeProvider
from tests.logcapture import Captured
from tests.meter_support import KEY_B1, flushed_usage, meter_config, meter_of, recorded_events

MESSAGES = [{"role": "user", "content": "hi"}]


def oai(gw: Running, key: str = "lk-client-key") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.v1, api_key=key, max_retries=0)


def ant(gw: Running, key: str = "lk-client-key") -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=gw.url, api_key=key, max_retries=0)


# Valid JSON syntax, yet no SDK could read it: bytes that are not UTF-8 in a
# string (the check skips strings unread), and nesting past any decoder's depth.
NOT_UTF8 = b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"\xff\xfe"}}'
TOO_DEEP = b'{"type":"ping","x":' + b"[" * 2000 + b"]" * 2000 + b"}"


# Whatever the data is instead of a JSON object; through a translation,
# decoding each event is its check, with the same rule.
NOT_AN_OBJECT = [GARBLED, b'[{"type": "ping"}]', b'"text"', b"null", NOT_UTF8, TOO_DEEP]


@pytest.mark.parametrize("garbled", NOT_AN_OBJECT)
@pytest.mark.parametrize(
    ("model", "good"),
    [("gpt-test", ["Hel", "lo"]), ("claude-test", ["Hel"])],  # as sent; translated
)
async def test_openai_stream_with_a_broken_event_raises_the_sdks_api_error_after_the_good_chunks(
    gw: Running, provider: FakeProvider, garbled: bytes, model: str, good: list[str]
) -> None:
    # The events before the garbage (role, text...), then garbage, then the rest
    provider.behaviour.garble_event = 3
    provider.behaviour.garbled = garbled
    pieces: list[str] = []
    async with oai(gw) as client:
        stream = await client.chat.completions.create(model=model, messages=MESSAGES, stream=True)
        with pytest.raises(openai.APIError, match="malformed event") as e:
            async for c in stream:
                if c.choices and c.choices[0].delta.content:
                    pieces.append(c.choices[0].delta.content)
    assert pieces == good
    assert e.value.code == "upstream_invalid"
    assert not isinstance(e.value, json.JSONDecodeError)


async def test_openai_stream_bytes_end_with_one_error_event_in_place_of_the_broken_one(
    gw: Running, provider: FakeProvider
) -> None:
    provider.behaviour.garble_event = 3
    body = {"model": "gpt-same", "stream": True, "messages": MESSAGES}
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.v1 + "/chat/completions", json=body) as r:
            assert r.status == 200
            got = await r.read()
    good = b"".join(provider.events({"model": "gpt-same"}, anthropic=False)[:3])
    error = (b'data: {"error":{"message":"The provider sent a malformed event.","type":"server_error",'
             b'"param":null,"code":"upstream_invalid"}}\n\n')
    assert got == good + error


@pytest.mark.parametrize("garbled", NOT_AN_OBJECT)
@pytest.mark.parametrize(
    ("model", "good"),
    [("claude-test", ["Hel"]), ("gpt-test", ["Hel", "lo"])],  # as sent; translated
)
async def test_anthropic_stream_with_a_broken_event_raises_the_sdks_api_error_after_the_good_events(
    gw: Running, provider: FakeProvider, garbled: bytes, model: str, good: list[str]
) -> None:
    provider.behaviour.garble_event = 3  # the events before the garbage, then garbage
    provider.behaviour.garbled = garbled
    pieces: list[str] = []
    async with ant(gw) as client:
        with pytest.raises(anthropic.APIStatusError, match="malformed event") as e:
            async with client.messages.stream(model=model, max_tokens=64, messages=MESSAGES) as s:
                async for text in s.text_stream:
                    pieces.append(text)
    assert pieces == good
    assert e.value.body == {"type": "error", "error": {"type": "api_error",
                                                       "message": "The provider sent a malformed event."}}


async def test_translated_openai_stream_bytes_end_with_one_error_event_after_the_translated_ones(
    gw: Running, provider: FakeProvider
) -> None:
    provider.behaviour.garble_event = 3
    body = {"model": "claude-test", "stream": True, "messages": MESSAGES,
            "stream_options": {"include_usage": True}}
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.v1 + "/chat/completions", json=body) as r:
            assert r.status == 200
            got = await r.read()
    *chunks, error, end = got.split(b"\n\n")
    assert end == b""
    assert error == (b'data: {"error":{"message":"The provider sent a malformed event.","type":"server_error",'
                     b'"param":null,"code":"upstream_invalid"}}')
    deltas = [json.loads(c.removeprefix(b"data: "))["choices"][0]["delta"] for c in chunks]
    assert deltas == [{"role": "assistant", "content": ""}, {"content": "Hel"}]


async def test_non_json_success_is_a_502_in_each_sdks_shape(gw: Running, provider: FakeProvider) -> None:
    provider.behaviour.garble_body = True
    async with oai(gw) as client:
        with pytest.raises(openai.InternalServerError) as e:
            await client.chat.completions.create(model="gpt-test", messages=MESSAGES)
    assert e.value.status_code == 502
    assert e.value.body == {"message": "The provider sent a malformed answer.", "type": "server_error",
                            "param": None, "code": "upstream_invalid"}
    async with ant(gw) as aclient:
        with pytest.raises(anthropic.InternalServerError) as ae:
            await aclient.messages.create(model="claude-test", max_tokens=64, messages=MESSAGES)
    assert ae.value.status_code == 502
    assert ae.value.body == {"type": "error", "error": {"type": "api_error",
                                                        "message": "The provider sent a malformed answer."}}
    assert len(provider.received) == 2  # answered, not retried


@pytest.mark.parametrize("garbled", NOT_AN_OBJECT)
@pytest.mark.parametrize("model", ["gpt-test", "claude-test"])  # as sent; translated
async def test_an_answer_that_is_not_a_json_object_is_a_502_sent_or_translated(
    gw: Running, provider: FakeProvider, garbled: bytes, model: str
) -> None:
    provider.behaviour.garble_body = True
    provider.behaviour.garbled = garbled
    async with oai(gw) as client:
        with pytest.raises(openai.InternalServerError) as e:
            await client.chat.completions.create(model=model, messages=MESSAGES)
    assert e.value.status_code == 502
    assert e.value.body == {"message": "The provider sent a malformed answer.", "type": "server_error",
                            "param": None, "code": "upstream_invalid"}
    assert len(provider.received) == 1  # answered, not retried


async def test_an_answer_past_the_size_bound_is_a_502_and_an_event_past_it_ends_the_stream(
    provider: FakeProvider, make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The bounds (64 MiB, 4 MiB) made small, so the provider's answer need not be;
    # the first is the upstream client's, set when the gateway starts.
    monkeypatch.setattr(forward, "_MAX_ANSWER", 200_000)
    monkeypatch.setattr(forward, "_MAX_EVENT", 100_000)
    gw = await make_gateway(basic_config(provider.base_url))
    provider.behaviour.reply = ["Hel", "x" * 250_000, "lo"]
    async with oai(gw) as client:
        with pytest.raises(openai.InternalServerError) as e:
            await client.chat.completions.create(model="gpt-test", messages=MESSAGES)
        assert e.value.status_code == 502
        assert e.value.body == {"message": "The provider sent a malformed answer.", "type": "server_error",
                                "param": None, "code": "upstream_invalid"}
        pieces: list[str] = []
        stream = await client.chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True)
        with pytest.raises(openai.APIError, match="malformed event") as se:
            async for c in stream:
                if c.choices and c.choices[0].delta.content:
                    pieces.append(c.choices[0].delta.content)
    assert pieces == ["Hel"]
    assert se.value.code == "upstream_invalid"
    provider.behaviour.reply = ["Hel", "x" * 90_000, "lo"]  # under both bounds: whole
    async with oai(gw) as client:
        answer = await client.chat.completions.create(model="gpt-test", messages=MESSAGES)
        assert answer.choices[0].message.content == "Hel" + "x" * 90_000 + "lo"
    assert len(provider.received) == 3  # answered, not retried


async def _settled(gw: Running) -> None:
    meter = meter_of(gw.gateway)
    for _ in range(100):
        if meter.ledger.backlog:
            return
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("stream", [True, False])
async def test_a_broken_answer_is_billed_as_an_estimate(
    provider: FakeProvider, make_gateway: GatewayFactory, tmp_path: Path, stream: bool
) -> None:
    if stream:
        # The usage chunk the meter asks for comes after the garbage: never read.
        provider.behaviour.garble_event = 3
    else:
        provider.behaviour.garble_body = True
    gw = await make_gateway(meter_config(provider.base_url, tmp_path))
    async with oai(gw, KEY_B1) as client:
        with pytest.raises(openai.APIError):
            answer = await client.chat.completions.create(model="gpt-test", messages=MESSAGES, stream=stream)
            async for _ in answer:  # type: ignore[union-attr]
                pass
    await _settled(gw)
    [row] = await flushed_usage(gw.gateway, "acct-b")
    prompt = 3 + (3 + 1 + 1)  # priming 3 + message (3 + "user" + "hi")
    # "Hel" + "lo" reached the client: "Hello" is one token.
    assert (row.requests, row.input_tokens, row.output_tokens) == (1, prompt, 1 if stream else 0)
    [event] = await recorded_events(gw.gateway, "acct-b")
    assert (event.usage_source, event.status) == ("estimated", 200 if stream else 502)
    assert gw.gateway.metrics.add(MeterMetrics).usage_estimated.labels("gpt-test", "fake")._value.get() == 1


@pytest.mark.parametrize("stream", [True, False])
async def test_a_broken_answer_is_logged_and_counted_as_a_provider_error_without_its_bytes(
    captured_logs: Captured, provider: FakeProvider, make_gateway: GatewayFactory, stream: bool
) -> None:
    gw = await make_gateway(basic_config(provider.base_url, pipeline=[{"name": "request_id"}, {"name": "logger"}]))
    if stream:
        provider.behaviour.garble_event = 3
    else:
        provider.behaviour.garble_body = True
    body = {"model": "gpt-test", "stream": stream, "messages": MESSAGES}
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.v1 + "/chat/completions", json=body) as r:
            await r.read()
    [line] = captured_logs.requests()
    status = 200 if stream else 502
    assert (line["status"], line["error_type"], line["error_code"]) == (status, "provider", "upstream_invalid")
    registry = gw.gateway.metrics.registry
    sample = registry.get_sample_value(
        "lunos_requests_total",
        {"model": "gpt-test", "provider": "fake", "status_class": f"{status // 100}xx", "error_type": "provider"},
    )
    assert sample == 1
    assert b"garbled-canary" in GARBLED
    assert "garbled-canary" not in captured_logs.text
    assert b"garbled-canary" not in generate_latest(registry)
