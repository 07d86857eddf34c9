"""One API for every model: the official SDKs reach providers of another format.

The providers are the demo app (it answers in every format as the real
APIs do, tools and structured output included) on loopback, configured as
an Anthropic-format and an OpenAI-format provider, with a recorder that
keeps what each received; a failing OpenAI-format provider is the fake.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import pydantic
import pytest
from aiohttp import web
from aiohttp.typedefs import Handler

from lunos_proxy.demo import ANSWER, demo_app
from tests.conftest import GatewayFactory, Running
from tests.fakes import FakeProvider, start_site
from tests.logcapture import Captured
from tests.meter_support import KEY_A1, cost, flushed_usage, meter_config

WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city", "days"],
}
WEATHER_ARGS = {"city": "demo", "days": 1}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n-not-really-an-image").decode()


class Demo:
    """The demo app on loopback, keeping each request's path and JSON body."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.gemini_keys: list[str | None] = []
        self.url = ""

    @web.middleware
    async def record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.received.append((request.path_qs, json.loads(await request.read())))
        if request.path.startswith("/v1beta/"):
            self.gemini_keys.append(request.headers.get("x-goog-api-key"))
        return await handler(request)


@pytest.fixture
async def demo() -> AsyncIterator[Demo]:
    found = Demo()
    app = demo_app()
    app.middlewares.append(found.record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    found.url = f"http://127.0.0.1:{await start_site(runner)}/v1"
    yield found
    await runner.cleanup()


def config(demo: Demo, failing: FakeProvider, tmp_path: Path) -> dict[str, Any]:
    cfg = meter_config(failing.base_url, tmp_path)
    cfg["providers"] = {
        "claude": {"format": "anthropic", "base_url": demo.url, "api_key": "sk-ant-x"},
        "oai": {"format": "openai", "base_url": demo.url, "api_key": "sk-x"},
        "broken": {"format": "openai", "base_url": failing.base_url, "api_key": "sk-y"},
        "google": {
            "format": "gemini",
            "base_url": demo.url.removesuffix("/v1") + "/v1beta",
            "api_key": "goog-key",
        },
    }
    cfg["models"] = {
        "claude-test": {"deployments": [{"provider": "claude", "model": "claude-upstream"}]},
        "gpt-test": {"deployments": [{"provider": "oai", "model": "gpt-upstream"}]},
        "gemini-test": {"deployments": [{"provider": "google", "model": "gemini-upstream"}]},
        "gpt-same": {
            "fallbacks": ["claude-test"],
            "deployments": [{"provider": "broken", "model": "gpt-broken"}],
        },
        "gpt-mixed": {
            "deployments": [
                {"provider": "broken", "model": "gpt-broken", "priority": 1},
                {"provider": "claude", "model": "claude-upstream", "priority": 2},
            ]
        },
    }
    cfg["pipeline"].insert(1, {"name": "logger"})
    cfg["pipeline"].append(
        {"name": "router", "settings": {"max_attempts": 2, "breaker": {"min_requests": 1000}}}
    )
    return cfg


@pytest.fixture
async def gw(
    demo: Demo, provider: FakeProvider, make_gateway: GatewayFactory, tmp_path: Path
) -> Running:
    return await make_gateway(config(demo, provider, tmp_path))


def oai(gw: Running) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.v1, api_key=KEY_A1, max_retries=0)


def claude(gw: Running) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=gw.url, api_key=KEY_A1, max_retries=0)


async def openai_tool_round_trip(client: openai.AsyncOpenAI, model: str) -> str:
    """A tool call (plain and streamed), then its result sent back under the
    call's id and answered in text; the call's id."""
    tools: Any = [{"type": "function", "function": {"name": "weather", "parameters": WEATHER}}]
    done = await client.chat.completions.create(model=model, messages=ASK, tools=tools)
    assert done.choices[0].finish_reason == "tool_calls"
    call = done.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.type == "function"
    assert (call.function.name, json.loads(call.function.arguments)) == ("weather", WEATHER_ARGS)
    async with client.chat.completions.stream(model=model, messages=ASK, tools=tools) as stream:
        final = await stream.get_final_completion()
    streamed = final.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert json.loads(streamed.function.arguments) == WEATHER_ARGS  # type: ignore[union-attr]
    answered: Any = [
        *ASK,
        {"role": "assistant", "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    after = await client.chat.completions.create(model=model, messages=answered, tools=tools)
    assert after.choices[0].message.content == ANSWER
    return call.id


# -- the OpenAI SDK against an Anthropic-format provider -----------------------------


async def test_openai_sdk_plain_call_reaches_a_claude_deployment(gw: Running, demo: Demo) -> None:
    done = await oai(gw).chat.completions.create(
        model="claude-test",
        messages=[{"role": "system", "content": "Be brief."}, *ASK],
        temperature=0.3,
        stop=["END"],
    )
    assert done.choices[0].message.content == ANSWER
    assert done.choices[0].finish_reason == "stop"
    assert done.usage is not None
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (8, len(ANSWER.split()))
    path, sent = demo.received[-1]
    assert path == "/v1/messages"
    assert sent == {
        "model": "claude-upstream",
        "system": [{"type": "text", "text": "Be brief."}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": ASK[0]["content"]}]}],
        "max_tokens": 4096,
        "temperature": 0.3,
        "stop_sequences": ["END"],
    }


async def test_openai_sdk_stream_from_a_claude_deployment(gw: Running) -> None:
    stream = await oai(gw).chat.completions.create(
        model="claude-test", messages=ASK, stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ANSWER
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert [c.usage.prompt_tokens for c in chunks if c.usage] == [6]
    assert chunks[-1].choices == []


async def test_openai_sdk_stream_without_include_usage_gets_no_usage_chunk(gw: Running) -> None:
    stream = await oai(gw).chat.completions.create(model="claude-test", messages=ASK, stream=True)
    chunks = [c async for c in stream]
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)


async def test_openai_sdk_tools_plain_and_streamed_from_claude(gw: Running, demo: Demo) -> None:
    assert await openai_tool_round_trip(oai(gw), "claude-test") == "toolu_demo"
    _, sent = demo.received[-1]
    assert sent["messages"][-1] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "toolu_demo", "content": "sunny"}],
    }


class Weather(pydantic.BaseModel):
    city: str
    days: int


async def test_openai_sdk_structured_output_from_claude(gw: Running, demo: Demo) -> None:
    done = await oai(gw).chat.completions.parse(
        model="claude-test", messages=ASK, response_format=Weather
    )
    assert done.choices[0].message.parsed == Weather(city="demo", days=1)
    _, sent = demo.received[-1]
    assert sent["tool_choice"] == {"type": "tool", "name": "structured_output"}


async def test_openai_sdk_images_reach_claude_as_image_blocks(gw: Running, demo: Demo) -> None:
    content: Any = [
        {"type": "text", "text": "Two images"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
    ]
    done = await oai(gw).chat.completions.create(
        model="claude-test", messages=[{"role": "user", "content": content}]
    )
    assert done.choices[0].message.content == ANSWER
    _, sent = demo.received[-1]
    assert sent["messages"][0]["content"][1:] == [
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
    ]


async def test_a_parameter_claude_lacks_is_a_400_naming_it(gw: Running, demo: Demo) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await oai(gw).chat.completions.create(model="claude-test", messages=ASK, n=2)
    assert caught.value.status_code == 400
    assert caught.value.param == "n"
    assert caught.value.code == "unsupported_parameter"
    assert demo.received == []


# -- the Anthropic SDK against an OpenAI-format provider -----------------------------


async def test_anthropic_sdk_plain_and_streamed_from_an_openai_deployment(
    gw: Running, demo: Demo
) -> None:
    client = claude(gw)
    msg = await client.messages.create(
        model="gpt-test", max_tokens=100, system="Be brief.", messages=ASK
    )
    assert msg.content[0].type == "text" and msg.content[0].text == ANSWER
    assert msg.stop_reason == "end_turn"
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (8, len(ANSWER.split()))
    path, sent = demo.received[-1]
    assert path == "/v1/chat/completions"
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["max_completion_tokens"] == 100
    async with client.messages.stream(model="gpt-test", max_tokens=100, messages=ASK) as stream:
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    assert text == ANSWER
    assert final.usage.input_tokens == 6 and final.usage.output_tokens == len(ANSWER.split())
    assert final.stop_reason == "end_turn"


async def test_anthropic_sdk_tools_from_an_openai_deployment(gw: Running) -> None:
    tools: Any = [{"name": "weather", "description": "Weather", "input_schema": WEATHER}]
    client = claude(gw)
    msg = await client.messages.create(model="gpt-test", max_tokens=100, messages=ASK, tools=tools)
    block = msg.content[0]
    assert msg.stop_reason == "tool_use"
    assert block.type == "tool_use" and (block.id, block.input) == ("call_demo", WEATHER_ARGS)
    async with client.messages.stream(
        model="gpt-test", max_tokens=100, messages=ASK, tools=tools
    ) as stream:
        final = await stream.get_final_message()
    assert final.content[0].type == "tool_use" and final.content[0].input == WEATHER_ARGS


# -- across formats, under failure ---------------------------------------------------


async def test_cross_format_fallback_answers_in_openai_shape(
    gw: Running, provider: FakeProvider
) -> None:
    provider.behaviour.status = 503
    client = oai(gw)
    for model in ("gpt-same", "gpt-mixed"):
        for _ in range(3):
            done = await client.chat.completions.create(model=model, messages=ASK)
            assert done.choices[0].message.content == ANSWER
            stream = await client.chat.completions.create(model=model, messages=ASK, stream=True)
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            assert text == ANSWER
    assert provider.received  # the OpenAI-format deployment was tried, and failed
    # Billed at the public model that answered: gpt-same's answers came from
    # its fallback claude-test; gpt-mixed's from its own second tier.
    rows = {r.model: r for r in await flushed_usage(gw.gateway, "acct-a")}
    assert sorted(rows) == ["claude-test", "gpt-mixed"]
    words = len(ANSWER.split())
    for model in rows:
        assert (rows[model].input_tokens, rows[model].output_tokens) == (6 * 6, 6 * words)
    assert rows["claude-test"].cost_micros == 6 * cost("claude-test", 6, words)


async def test_provider_429_stays_429_with_retry_after_in_the_client_shape(
    make_gateway: GatewayFactory, provider: FakeProvider, demo: Demo, tmp_path: Path
) -> None:
    cfg = config(demo, provider, tmp_path)
    cfg["providers"]["broken"]["format"] = "anthropic"
    cfg["models"]["limited"] = {"deployments": [{"provider": "broken", "model": "claude-x"}]}
    running = await make_gateway(cfg)
    provider.behaviour.status = 429
    provider.behaviour.headers = {"Retry-After": "7"}
    provider.behaviour.error_body = (
        b'{"type":"error","error":{"type":"rate_limit_error","message":"quoted prompt"}}'
    )
    with pytest.raises(openai.RateLimitError) as caught:
        await oai(running).chat.completions.create(model="limited", messages=ASK)
    assert caught.value.status_code == 429
    assert caught.value.response.headers["retry-after"] == "7"
    assert "quoted prompt" not in caught.value.response.text
    assert caught.value.body["type"] == "rate_limit_exceeded"  # type: ignore[index]


async def test_translated_exchange_is_metered_and_logged_with_both_formats(
    captured_logs: Captured,
    demo: Demo,
    provider: FakeProvider,
    make_gateway: GatewayFactory,
    tmp_path: Path,
) -> None:
    gw = await make_gateway(config(demo, provider, tmp_path))
    done = await oai(gw).chat.completions.create(model="claude-test", messages=ASK)
    stream = await oai(gw).chat.completions.create(model="claude-test", messages=ASK, stream=True)
    [c async for c in stream]
    assert done.usage is not None
    rows = await flushed_usage(gw.gateway, "acct-a")
    assert [(r.model, r.input_tokens, r.output_tokens) for r in rows] == [
        ("claude-test", 12, 2 * len(ANSWER.split()))
    ]
    assert rows[0].cost_micros == 2 * cost("claude-test", 6, len(ANSWER.split()))
    lines = [r for r in captured_logs.requests() if r.get("model") == "claude-test"]
    assert [(r["wire"], r["provider_wire"], r["usage_source"]) for r in lines] == [
        ("openai", "anthropic", "reported")
    ] * 2
    assert ANSWER not in captured_logs.text


# -- both SDKs against a Gemini-format provider --------------------------------------


async def test_openai_sdk_plain_stream_tools_and_schema_from_gemini(
    gw: Running, demo: Demo
) -> None:
    client = oai(gw)
    done = await client.chat.completions.create(model="gemini-test", messages=ASK)
    assert done.choices[0].message.content == ANSWER
    assert done.usage is not None and done.usage.prompt_tokens == 6
    path, sent = demo.received[-1]
    assert path == "/v1beta/models/gemini-upstream:generateContent"
    assert sent == {"contents": [{"role": "user", "parts": [{"text": ASK[0]["content"]}]}]}
    assert demo.gemini_keys[-1] == "goog-key"
    stream = await client.chat.completions.create(
        model="gemini-test", messages=ASK, stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ANSWER
    assert [c.usage.prompt_tokens for c in chunks if c.usage] == [6]
    assert demo.received[-1][0] == "/v1beta/models/gemini-upstream:streamGenerateContent?alt=sse"
    call_id = await openai_tool_round_trip(client, "gemini-test")
    assert demo.received[-1][1]["contents"][-1] == {
        "role": "user",
        "parts": [
            {"functionResponse": {"id": call_id, "name": "weather", "response": {"result": "sunny"}}}
        ],
    }
    parsed = await client.chat.completions.parse(
        model="gemini-test", messages=ASK, response_format=Weather
    )
    assert parsed.choices[0].message.parsed == Weather(city="demo", days=1)


async def test_openai_sdk_images_reach_gemini_as_parts(gw: Running, demo: Demo) -> None:
    content: Any = [
        {"type": "text", "text": "Two images"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
    ]
    done = await oai(gw).chat.completions.create(
        model="gemini-test", messages=[{"role": "user", "content": content}]
    )
    assert done.choices[0].message.content == ANSWER
    assert demo.received[-1][1]["contents"][0]["parts"][1:] == [
        {"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/a.png"}},
        {"inlineData": {"mimeType": "image/png", "data": PNG}},
    ]


async def test_logprobs_to_gemini_is_a_400_naming_it(gw: Running, demo: Demo) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await oai(gw).chat.completions.create(model="gemini-test", messages=ASK, logprobs=True)
    assert caught.value.param == "logprobs"
    assert demo.received == []


async def test_anthropic_sdk_plain_stream_and_tools_from_gemini(gw: Running) -> None:
    client = claude(gw)
    msg = await client.messages.create(model="gemini-test", max_tokens=100, messages=ASK)
    assert msg.content[0].type == "text" and msg.content[0].text == ANSWER
    assert (msg.usage.input_tokens, msg.stop_reason) == (6, "end_turn")
    async with client.messages.stream(model="gemini-test", max_tokens=100, messages=ASK) as s:
        text = "".join([t async for t in s.text_stream])
        final = await s.get_final_message()
    assert text == ANSWER and final.usage.input_tokens == 6
    tools: Any = [{"name": "weather", "description": "Weather", "input_schema": WEATHER}]
    async with client.messages.stream(
        model="gemini-test", max_tokens=100, messages=ASK, tools=tools
    ) as s:
        called = await s.get_final_message()
    block = called.content[0]
    assert called.stop_reason == "tool_use"
    assert block.type == "tool_use" and block.input == WEATHER_ARGS


# -- /v1/models ----------------------------------------------------------------------


async def test_models_are_listed_to_both_sdks_in_their_shapes(gw: Running) -> None:
    # In the config file's order (the test writes its YAML with sorted keys).
    everything = ["claude-test", "gemini-test", "gpt-mixed", "gpt-same", "gpt-test"]
    listed = [m async for m in oai(gw).models.list()]
    assert [(m.id, m.object, m.owned_by) for m in listed] == [
        (name, "model", "lunos") for name in everything
    ]
    page = await claude(gw).models.list(limit=2)
    assert [(m.id, m.type, m.display_name) for m in page.data] == [
        ("claude-test", "model", "claude-test"),
        ("gemini-test", "model", "gemini-test"),
    ]
    assert page.has_more and page.last_id == "gemini-test"
    every = [m.id async for m in claude(gw).models.list(limit=2)]  # the SDK follows the pages
    assert every == everything
    one = await claude(gw).models.list(limit=1, after_id="gpt-mixed")
    assert [m.id for m in one.data] == ["gpt-same"]


async def test_one_model_is_retrieved_by_both_sdks_and_an_unknown_one_is_404_in_each_shape(
    gw: Running,
) -> None:
    got = await oai(gw).models.retrieve("claude-test")
    assert (got.id, got.object, got.owned_by) == ("claude-test", "model", "lunos")
    info = await claude(gw).models.retrieve("gpt-test")
    assert (info.id, info.type, info.display_name) == ("gpt-test", "model", "gpt-test")
    with pytest.raises(openai.NotFoundError) as e:
        await oai(gw).models.retrieve("<b>no-such-model</b>")
    assert e.value.body == {"message": "The requested model does not exist or you do not have access to it.",
                            "type": "invalid_request_error", "param": "model",
                            "code": "model_not_found"}
    with pytest.raises(anthropic.NotFoundError) as f:
        await claude(gw).models.retrieve("<b>no-such-model</b>")
    assert f.value.body == {"type": "error", "error": {
        "type": "not_found_error",
        "message": "The requested model does not exist or you do not have access to it."}}
    # A method the path does not take: 405 in the caller's shape too.
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.v1 + "/models", headers={"anthropic-version": "2023-06-01"}) as r:
            assert r.status == 405 and r.headers["Allow"] == "GET"
            assert (await r.json())["type"] == "error"


async def test_a_translated_stream_reaches_the_client_as_it_arrives(
    make_gateway: GatewayFactory, provider: FakeProvider, demo: Demo, tmp_path: Path
) -> None:
    # The Anthropic-format fake pauses after its first event: the client
    # has its first chunk while the provider is still waiting.
    cfg = config(demo, provider, tmp_path)
    cfg["providers"]["broken"]["format"] = "anthropic"
    cfg["models"]["slow"] = {"deployments": [{"provider": "broken", "model": "claude-x"}]}
    running = await make_gateway(cfg)
    provider.behaviour.pause_after_first = 1.5
    loop = asyncio.get_running_loop()
    started = loop.time()
    stream = await oai(running).chat.completions.create(model="slow", messages=ASK, stream=True)
    first = await stream.__anext__()
    first_at = loop.time() - started
    rest = [c async for c in stream]
    done_at = loop.time() - started
    assert first.choices[0].delta.role == "assistant"
    assert first_at < 1.0 <= done_at
    assert "".join(c.choices[0].delta.content or "" for c in rest if c.choices) == "Hello, world!"


async def test_anthropic_overload_is_a_retryable_503_for_the_openai_sdk(
    make_gateway: GatewayFactory, provider: FakeProvider, demo: Demo, tmp_path: Path
) -> None:
    cfg = config(demo, provider, tmp_path)
    cfg["providers"]["broken"]["format"] = "anthropic"
    cfg["models"]["busy"] = {"deployments": [{"provider": "broken", "model": "claude-x"}]}
    cfg["models"]["busy-or-gemini"] = {
        "deployments": [
            {"provider": "broken", "model": "claude-x", "priority": 1},
            {"provider": "google", "model": "gemini-upstream", "priority": 2},
        ]
    }
    running = await make_gateway(cfg)
    provider.behaviour.status = 529
    provider.behaviour.error_body = b'{"type":"error","error":{"type":"overloaded_error","message":"x"}}'
    with pytest.raises(openai.InternalServerError) as caught:
        await oai(running).chat.completions.create(model="busy", messages=ASK)
    assert caught.value.status_code == 503
    assert caught.value.body["type"] == "server_error"  # type: ignore[index]
    # Retryable: the next deployment (another format again) answers.
    done = await oai(running).chat.completions.create(model="busy-or-gemini", messages=ASK)
    assert done.choices[0].message.content == ANSWER


async def test_anthropic_count_tokens_reaches_gemini_but_not_openai(gw: Running, demo: Demo) -> None:
    counted = await claude(gw).messages.count_tokens(
        model="gemini-test", system="Be brief.", messages=ASK
    )
    assert counted.input_tokens == 8
    path, sent = demo.received[-1]
    assert path == "/v1beta/models/gemini-upstream:countTokens"
    assert sent == {
        "generateContentRequest": {
            "model": "models/gemini-upstream",
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
            "contents": [{"role": "user", "parts": [{"text": ASK[0]["content"]}]}],
        }
    }
    # OpenAI has no token-counting endpoint.
    with pytest.raises(anthropic.BadRequestError) as caught:
        await claude(gw).messages.count_tokens(model="gpt-test", messages=ASK)
    assert caught.value.status_code == 400
    assert demo.received[-1][0] == "/v1beta/models/gemini-upstream:countTokens"


async def test_matching_formats_still_pass_the_bytes_untouched(
    make_gateway: GatewayFactory, provider: FakeProvider, demo: Demo, tmp_path: Path
) -> None:
    # A model mixing formats: the OpenAI client's request to its OpenAI-format
    # deployment is the client's bytes, not a re-encoding.
    cfg = config(demo, provider, tmp_path)
    cfg["models"]["mixed"] = {
        "deployments": [
            {"provider": "broken", "model": "mixed", "priority": 1},
            {"provider": "claude", "model": "claude-upstream", "priority": 2},
        ]
    }
    running = await make_gateway(cfg)
    raw = b'{"model":"mixed",  "messages":[{"role":"user","content":"hi"}], "n": 3, "x_extra": [1, 2]}'
    async with aiohttp.ClientSession() as s, s.post(
        running.v1 + "/chat/completions",
        data=raw,
        headers={"Authorization": f"Bearer {KEY_A1}", "Content-Type": "application/json"},
    ) as r:
        assert r.status == 200
        answer = await r.read()
    assert provider.received[-1].path == "/v1/chat/completions"
    assert provider.received[-1].body == raw
    assert json.loads(answer)["id"] == "chatcmpl-fake"
    assert demo.received == []
