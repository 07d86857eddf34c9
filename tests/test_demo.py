"""The demo provider answers as the real APIs do, read by the official SDKs."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import openai
import pytest
from aiohttp import web
from google import genai
from google.genai import types as genai_types

from lunos_proxy.demo import ANSWER, demo_app
from tests.fakes import start_site

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer"},
    },
    "required": ["city", "unit", "days"],
}
WEATHER_ARGS = {"city": "demo", "unit": "celsius", "days": 1}


@pytest.fixture
async def demo_url() -> AsyncIterator[str]:
    runner = web.AppRunner(demo_app(), access_log=None)
    await runner.setup()
    yield f"http://127.0.0.1:{await start_site(runner)}"
    await runner.cleanup()


def oai(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


def claude(url: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=url, api_key="unused", max_retries=0)


async def test_responses_stream_sends_the_responses_events(demo_url: str) -> None:
    stream = await oai(demo_url).responses.create(model="demo", input="Say hello", stream=True)
    events = [event async for event in stream]
    types = [e.type for e in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == ANSWER
    final = events[-1].response  # type: ignore[union-attr]
    assert final.output_text == ANSWER
    assert final.usage is not None and final.usage.input_tokens == 2


async def test_responses_stream_helper_ends_with_the_answer(demo_url: str) -> None:
    async with oai(demo_url).responses.stream(model="demo", input="Say hello") as stream:
        final = await stream.get_final_response()
    assert final.output_text == ANSWER
    assert final.status == "completed"


async def test_responses_call_a_tool_when_tools_are_offered(demo_url: str) -> None:
    tools: Any = [{"type": "function", "name": "weather", "parameters": WEATHER}]
    plain = await oai(demo_url).responses.create(model="demo", input="Weather?", tools=tools)
    call = plain.output[0]
    assert call.type == "function_call"
    assert (call.name, json.loads(call.arguments)) == ("weather", WEATHER_ARGS)
    async with oai(demo_url).responses.stream(model="demo", input="Weather?", tools=tools) as s:
        streamed = await s.get_final_response()
    item = streamed.output[0]
    assert item.type == "function_call" and json.loads(item.arguments) == WEATHER_ARGS


async def test_embeddings_honour_base64_encoding(demo_url: str) -> None:
    raw = await oai(demo_url).embeddings.create(
        model="demo", input=["a", "b"], encoding_format="base64"
    )
    packed = raw.data[1].embedding
    assert isinstance(packed, str)
    assert struct.unpack("<4f", base64.b64decode(packed)) == (0.125, -0.25, 0.5, 1.0)
    floats = await oai(demo_url).embeddings.create(model="demo", input="a", encoding_format="float")
    assert floats.data[0].embedding == [0.125, -0.25, 0.5, 1.0]
    # The SDK's own default (base64, decoded by the SDK) ends in the same floats.
    default = await oai(demo_url).embeddings.create(model="demo", input="a")
    assert default.data[0].embedding == [0.125, -0.25, 0.5, 1.0]


async def test_anthropic_stream_message_delta_carries_full_usage(demo_url: str) -> None:
    stream = await claude(demo_url).messages.create(
        model="demo",
        max_tokens=50,
        messages=[{"role": "user", "content": "one two three"}],
        stream=True,
    )
    deltas = [e async for e in stream if e.type == "message_delta"]
    assert len(deltas) == 1
    usage = deltas[0].usage
    assert (usage.input_tokens, usage.output_tokens) == (3, len(ANSWER.split()))
    assert (usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (0, 0)


async def test_anthropic_tool_use_plain_and_streamed(demo_url: str) -> None:
    tools: Any = [{"name": "weather", "description": "Weather", "input_schema": WEATHER}]
    asked: Any = [{"role": "user", "content": "Weather in Paris?"}]
    msg = await claude(demo_url).messages.create(
        model="demo", max_tokens=50, messages=asked, tools=tools
    )
    block = msg.content[0]
    assert msg.stop_reason == "tool_use"
    assert block.type == "tool_use" and (block.name, block.input) == ("weather", WEATHER_ARGS)
    async with claude(demo_url).messages.stream(
        model="demo", max_tokens=50, messages=asked, tools=tools
    ) as stream:
        final = await stream.get_final_message()
    streamed = final.content[0]
    assert streamed.type == "tool_use" and streamed.input == WEATHER_ARGS
    answered: Any = [
        *asked,
        {"role": "assistant", "content": [block.model_dump()]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "sunny"}],
        },
    ]
    after = await claude(demo_url).messages.create(
        model="demo", max_tokens=50, messages=answered, tools=tools
    )
    assert after.stop_reason == "end_turn" and after.content[0].type == "text"


async def test_chat_calls_the_chosen_tool_plain_and_streamed(demo_url: str) -> None:
    tools: Any = [
        {"type": "function", "function": {"name": "other", "parameters": {"type": "object"}}},
        {"type": "function", "function": {"name": "weather", "parameters": WEATHER}},
    ]
    choice: Any = {"type": "function", "function": {"name": "weather"}}
    asked: Any = [{"role": "user", "content": "Weather in Paris?"}]
    client = oai(demo_url)
    done = await client.chat.completions.create(
        model="demo", messages=asked, tools=tools, tool_choice=choice
    )
    assert done.choices[0].finish_reason == "tool_calls"
    call = done.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.type == "function"
    assert (call.function.name, json.loads(call.function.arguments)) == ("weather", WEATHER_ARGS)
    async with client.chat.completions.stream(
        model="demo", messages=asked, tools=tools, tool_choice=choice
    ) as stream:
        final = await stream.get_final_completion()
    streamed = final.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert json.loads(streamed.function.arguments) == WEATHER_ARGS  # type: ignore[union-attr]
    answered: Any = [
        *asked,
        {"role": "assistant", "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    after = await client.chat.completions.create(model="demo", messages=answered, tools=tools)
    assert after.choices[0].message.content == ANSWER


async def test_chat_structured_output_follows_the_schema(demo_url: str) -> None:
    fmt: Any = {"type": "json_schema", "json_schema": {"name": "w", "schema": WEATHER}}
    done = await oai(demo_url).chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "Weather?"}], response_format=fmt
    )
    assert json.loads(done.choices[0].message.content or "") == WEATHER_ARGS


def gemini(url: str) -> genai.Client:
    options = genai_types.HttpOptions(base_url=url, api_version="v1beta")
    return genai.Client(api_key="unused", http_options=options)


async def test_gemini_generate_content_plain_and_streamed(demo_url: str) -> None:
    client = gemini(demo_url).aio
    done = await client.models.generate_content(model="gemini-demo", contents="one two three")
    assert done.text == ANSWER
    assert done.usage_metadata is not None and done.usage_metadata.prompt_token_count == 3
    assert done.candidates is not None and done.candidates[0].finish_reason == "STOP"
    pieces = [
        chunk.text
        async for chunk in await client.models.generate_content_stream(
            model="gemini-demo", contents="one two three"
        )
    ]
    assert "".join(p or "" for p in pieces) == ANSWER
    assert len(pieces) == len(ANSWER.split())


async def test_gemini_calls_a_function_and_follows_a_schema(demo_url: str) -> None:
    client = gemini(demo_url).aio
    weather = genai_types.FunctionDeclaration(
        name="weather", parameters_json_schema=WEATHER, description="Weather"
    )
    config = genai_types.GenerateContentConfig(tools=[genai_types.Tool(function_declarations=[weather])])
    done = await client.models.generate_content(
        model="gemini-demo", contents="Weather?", config=config
    )
    assert done.function_calls is not None
    assert (done.function_calls[0].name, done.function_calls[0].args) == ("weather", WEATHER_ARGS)
    shaped = await client.models.generate_content(
        model="gemini-demo",
        contents="Weather?",
        config=genai_types.GenerateContentConfig(
            response_mime_type="application/json",
            response_schema={"type": "OBJECT", "properties": {"city": {"type": "STRING"}}},
        ),
    )
    assert json.loads(shaped.text or "") == {"city": "demo"}
