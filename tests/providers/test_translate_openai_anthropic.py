"""Golden tests: OpenAI Chat Completions <-> Anthropic Messages, both ways.

The inputs follow the examples of each provider's API reference (request
bodies, responses and stream events as documented); the expected outputs
are what the other format's reference says the same exchange looks like.
"""

from __future__ import annotations

import json
import random
from typing import Any

import msgspec
import pytest

from lunos_proxy.errors import BadRequest
from lunos_proxy.providers.anthropic_openai import AnthropicToOpenAI
from lunos_proxy.providers.openai_anthropic import (
    DEFAULT_MAX_TOKENS,
    OUTPUT_TOOL,
    AnthropicStreamToOpenAI,
    OpenAIToAnthropic,
)
from lunos_proxy.providers.openai_gemini import OpenAIToGemini
from lunos_proxy.providers.translate import (
    Chain,
    MalformedAnswer,
    StreamTranslator,
    Untranslatable,
    translate_request,
    translate_response,
)

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"location": {"type": "string", "description": "The city and state"}},
    "required": ["location"],
}


def sse(events: list[tuple[str | None, Any]]) -> bytes:
    out = b""
    for name, data in events:
        head = f"event: {name}\n".encode() if name else b""
        body = data if isinstance(data, bytes) else json.dumps(data).encode()
        out += head + b"data: " + body + b"\n\n"
    return out


def parse(stream: bytes) -> list[tuple[str | None, Any]]:
    out: list[tuple[str | None, Any]] = []
    for raw in stream.split(b"\n\n"):
        if not raw:
            continue
        name = None
        data = b""
        for line in raw.split(b"\n"):
            if line.startswith(b"event: "):
                name = line[7:].decode()
            elif line.startswith(b"data: "):
                data = line[6:]
        out.append((name, "[DONE]" if data == b"[DONE]" else json.loads(data)))
    return out


def run_stream(translator: StreamTranslator, stream: bytes, pieces: int = 1) -> bytes:
    """Feed `stream` cut at random places into `pieces` chunks."""
    cuts = sorted(random.Random(pieces).sample(range(1, len(stream)), pieces - 1))
    out = b""
    start = 0
    for cut in [*cuts, len(stream)]:
        out += translator.feed(stream[start:cut])
        start = cut
    return out + translator.flush()


# -- OpenAI client -> Anthropic provider ------------------------------------------


def test_openai_request_becomes_anthropic_messages() -> None:
    body = {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What's in this image, and the weather there?"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/boardwalk.jpg"}},
                    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "get_current_weather", "arguments": "{\"location\": \"Boston, MA\"}"}},
                    {"id": "call_2", "type": "function",
                     "function": {"name": "get_current_weather", "arguments": "{\"location\": \"Paris\"}"}},
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "22C"},
            {"role": "tool", "tool_call_id": "call_2", "content": "18C"},
            {"role": "user", "content": "Thanks"},
        ],
        "tools": [{"type": "function", "function": {
            "name": "get_current_weather", "description": "Get the current weather",
            "parameters": WEATHER_SCHEMA}}],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "temperature": 0.5,
        "top_p": 0.9,
        "stop": "END",
        "max_completion_tokens": 300,
        "user": "user-123",
        "n": 1,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    endpoint, out = OpenAIToAnthropic().request(body, "claude-sonnet-4-5")
    assert endpoint == "messages"
    assert out == {
        "model": "claude-sonnet-4-5",
        "system": [{"type": "text", "text": "You are a helpful assistant."}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "What's in this image, and the weather there?"},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/boardwalk.jpg"}},
                {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
            ]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "call_1", "name": "get_current_weather", "input": {"location": "Boston, MA"}},
                {"type": "tool_use", "id": "call_2", "name": "get_current_weather", "input": {"location": "Paris"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "22C"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": "18C"},
                {"type": "text", "text": "Thanks"},
            ]},
        ],
        "max_tokens": 300,
        "temperature": 0.5,
        "top_p": 0.9,
        "stop_sequences": ["END"],
        "stream": True,
        "tools": [{"name": "get_current_weather", "description": "Get the current weather",
                   "input_schema": WEATHER_SCHEMA}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "metadata": {"user_id": "user-123"},
    }


def test_anthropic_requires_max_tokens_so_a_documented_default_is_sent() -> None:
    _, out = OpenAIToAnthropic().request({"model": "m", "messages": [{"role": "user", "content": "Hi"}]}, "c")
    assert out == {"model": "c", "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
                   "max_tokens": DEFAULT_MAX_TOKENS}


@pytest.mark.parametrize(
    ("param", "value"),
    [("n", 2), ("logprobs", True), ("presence_penalty", 0.5), ("logit_bias", {"50256": -100}),
     ("seed", 7), ("temperature", 1.5), ("audio", {"voice": "alloy"})],
)
def test_what_anthropic_cannot_do_is_a_400_naming_the_parameter(param: str, value: Any) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "Hi"}], param: value}
    with pytest.raises(Untranslatable) as caught:
        OpenAIToAnthropic().request(body, "c")
    err = caught.value
    assert isinstance(err, BadRequest) and err.status == 400
    assert err.param == param and f"'{param}'" in err.message


def test_anthropic_response_becomes_a_chat_completion() -> None:
    # The Messages API reference's example response, with a tool call added.
    body = {
        "content": [
            {"text": "Hi! My name is Claude.", "type": "text"},
            {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather",
             "input": {"location": "San Francisco, CA"}},
        ],
        "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
        "model": "claude-sonnet-4-5",
        "role": "assistant",
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "type": "message",
        "usage": {"input_tokens": 2095, "output_tokens": 503, "cache_read_input_tokens": 100,
                  "cache_creation_input_tokens": 5},
    }
    out = OpenAIToAnthropic().response(body)
    assert isinstance(out.pop("created"), int)
    assert out == {
        "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
        "object": "chat.completion",
        "model": "claude-sonnet-4-5",
        "choices": [{
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Hi! My name is Claude.",
                "refusal": None,
                "tool_calls": [{"id": "toolu_01A09q90qw90lq917835lq9", "type": "function",
                                "function": {"name": "get_weather",
                                             "arguments": "{\"location\":\"San Francisco, CA\"}"}}],
            },
            "finish_reason": "tool_calls",
            "logprobs": None,
        }],
        "usage": {"prompt_tokens": 2200, "completion_tokens": 503, "total_tokens": 2703,
                  "prompt_tokens_details": {"cached_tokens": 100}},
    }


@pytest.mark.parametrize(
    ("stop", "finish"),
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("refusal", "content_filter")],
)
def test_stop_reasons_map_to_finish_reasons(stop: str, finish: str) -> None:
    body = {"id": "m", "model": "c", "content": [{"type": "text", "text": "x"}], "stop_reason": stop, "usage": {}}
    assert OpenAIToAnthropic().response(body)["choices"][0]["finish_reason"] == finish


# The Messages streaming reference's tool-use example, abridged.
ANTHROPIC_TOOL_STREAM = sse([
    ("message_start", {"type": "message_start", "message": {
        "id": "msg_014p7gG3wDgGV9EUtLvnow3U", "type": "message", "role": "assistant",
        "model": "claude-sonnet-4-5", "stop_sequence": None,
        "usage": {"input_tokens": 472, "output_tokens": 2}, "content": [], "stop_reason": None}}),
    ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ("ping", {"type": "ping"}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Okay"}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": ", let's check"}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {
        "type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather", "input": {}}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"location\":"}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": " \"San Francisco, CA\"}"}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 1}),
    ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                       "usage": {"output_tokens": 89}}),
    ("message_stop", {"type": "message_stop"}),
])


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "msg_014p7gG3wDgGV9EUtLvnow3U", "object": "chat.completion.chunk",
            "model": "claude-sonnet-4-5",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}


@pytest.mark.parametrize("pieces", [1, 7, 300])
def test_anthropic_stream_becomes_chat_chunks_event_by_event(pieces: int) -> None:
    translation = OpenAIToAnthropic()
    translation.request({"model": "m", "messages": [], "stream": True,
                         "stream_options": {"include_usage": True}}, "c")
    events = parse(run_stream(StreamTranslator(translation.stream()), ANTHROPIC_TOOL_STREAM, pieces))
    for _, data in events:
        if isinstance(data, dict):
            assert isinstance(data.pop("created"), int)
    usage_chunk = _chunk({})
    usage_chunk["choices"] = []
    usage_chunk["usage"] = {"prompt_tokens": 472, "completion_tokens": 89, "total_tokens": 561,
                            "prompt_tokens_details": {"cached_tokens": 0}}
    assert events == [(None, e) for e in [
        _chunk({"role": "assistant", "content": ""}),
        _chunk({"content": "Okay"}),
        _chunk({"content": ", let's check"}),
        _chunk({"tool_calls": [{"index": 0, "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "type": "function",
                                "function": {"name": "get_weather", "arguments": ""}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{\"location\":"}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": " \"San Francisco, CA\"}"}}]}),
        _chunk({}, "tool_calls"),
        usage_chunk,
        "[DONE]",
    ]]


@pytest.mark.parametrize("bad", [b"{not json", b"[1, 2]", b'"text"', b"3", b""])
def test_an_event_that_is_not_a_json_object_breaks_the_stream_there(bad: bytes) -> None:
    """The events before it come out translated, it and the rest do not,
    however many of them arrive in one chunk."""
    translation = OpenAIToAnthropic()
    translation.request({"model": "m", "messages": [], "stream": True}, "c")
    translator = StreamTranslator(translation.stream())
    good = ANTHROPIC_TOOL_STREAM.split(b"\n\n")
    chunk = b"\n\n".join([*good[:4], b"event: content_block_delta\ndata: " + bad, *good[4:]])
    events = parse(translator.feed(chunk))
    assert translator.broken
    assert [e["choices"][0]["delta"] for _, e in events] == [{"role": "assistant", "content": ""},
                                                            {"content": "Okay"}]


def test_chunks_are_encoded_byte_for_byte_as_their_objects_are() -> None:
    """Each chunk is encoded around its delta; the bytes are msgspec's
    encoding of the whole chunk object, key order included."""
    model, text = 'claude-"q"-\u00e9', "caf\u00e9 \U0001f600\n\"quoted\" \\ \u2028 </script>"
    stream = sse([
        ("message_start", {"type": "message_start", "message": {
            "id": "msg_\u00e9\"1", "model": model, "usage": {"input_tokens": 7, "cache_read_input_tokens": 3}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": text}}),
        ("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {
            "type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "input_json_delta", "partial_json": "{\"city\": \"R\u00f6m"}}),
        ("content_block_start", {"type": "content_block_start", "index": 2, "content_block": {
            "type": "tool_use", "id": "toolu_2", "name": OUTPUT_TOOL, "input": {}}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 2,
                                 "delta": {"type": "input_json_delta", "partial_json": "{\"answer\": 1}"}}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"},
                           "usage": {"output_tokens": 5}}),
        ("message_stop", {"type": "message_stop"}),
    ])
    events = AnthropicStreamToOpenAI(include_usage=True, structured=True)
    out = run_stream(StreamTranslator(events), stream, 5)

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": "msg_\u00e9\"1", "object": "chat.completion.chunk", "created": events.created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}

    usage = chunk({})
    usage["choices"] = []
    usage["usage"] = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
                      "prompt_tokens_details": {"cached_tokens": 3}}
    expected = [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": text}),
        chunk({"tool_calls": [{"index": 0, "id": "toolu_1", "type": "function",
                               "function": {"name": "get_weather", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\": \"R\u00f6m"}}]}),
        chunk({"content": "{\"answer\": 1}"}),
        chunk({}, "tool_calls"),
        usage,
    ]
    assert out == b"".join(b"data: " + msgspec.json.encode(e) + b"\n\n" for e in expected) + b"data: [DONE]\n\n"


def test_encoded_chunks_pass_through_a_chain_decoded() -> None:
    """A translator that sends its chunks encoded, first in a `Chain`:
    Anthropic -> OpenAI -> Anthropic gives the content events back."""
    back = AnthropicToOpenAI()
    back.request({"model": "m", "max_tokens": 5, "messages": [], "stream": True}, "c")
    chain = Chain(AnthropicStreamToOpenAI(include_usage=True, structured=False), back.stream())
    events = parse(run_stream(StreamTranslator(chain), ANTHROPIC_TOOL_STREAM, 3))
    sent = [e for e in parse(ANTHROPIC_TOOL_STREAM)
            if e[0] != "ping" and e[1].get("delta", {}).get("partial_json") != ""]
    assert events[1:9] == sent[1:9]
    assert [name for name, _ in events] == [name for name, _ in sent]


def test_usage_chunk_only_when_the_client_asked() -> None:
    translation = OpenAIToAnthropic()
    translation.request({"model": "m", "messages": [], "stream": True}, "c")
    events = parse(run_stream(StreamTranslator(translation.stream()), ANTHROPIC_TOOL_STREAM))
    assert not any(isinstance(d, dict) and "usage" in d for _, d in events)
    assert events[-1] == (None, "[DONE]")


def test_structured_output_is_a_forced_tool_read_back_as_content() -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "weather", "schema": WEATHER_SCHEMA, "strict": True}}
    translation = OpenAIToAnthropic()
    _, out = translation.request({"model": "m", "messages": [{"role": "user", "content": "SF?"}],
                                  "response_format": fmt, "stream": True}, "c")
    assert out["tools"] == [{"name": OUTPUT_TOOL, "description": "Give the answer in this shape.",
                             "input_schema": WEATHER_SCHEMA}]
    assert out["tool_choice"] == {"type": "tool", "name": OUTPUT_TOOL}
    answer = {"id": "m1", "model": "c", "stop_reason": "tool_use", "usage": {},
              "content": [{"type": "tool_use", "id": "t", "name": OUTPUT_TOOL, "input": {"location": "SF"}}]}
    choice = translation.response(answer)["choices"][0]
    assert choice["message"]["content"] == "{\"location\":\"SF\"}"
    assert "tool_calls" not in choice["message"] and choice["finish_reason"] == "stop"
    stream = sse([
        ("message_start", {"type": "message_start", "message": {"id": "m1", "model": "c", "usage": {}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {
            "type": "tool_use", "id": "t", "name": OUTPUT_TOOL, "input": {}}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "input_json_delta", "partial_json": "{\"location\": \"SF\"}"}}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 5}}),
        ("message_stop", {"type": "message_stop"}),
    ])
    events = parse(run_stream(StreamTranslator(translation.stream()), stream))
    deltas = [d["choices"][0]["delta"] for _, d in events if isinstance(d, dict) and d["choices"]]
    assert "".join(d.get("content") or "" for d in deltas) == "{\"location\": \"SF\"}"
    assert events[-2][1]["choices"][0]["finish_reason"] == "stop"


def test_reasoning_effort_becomes_a_thinking_budget() -> None:
    _, out = OpenAIToAnthropic().request(
        {"model": "m", "messages": [], "reasoning_effort": "medium", "max_completion_tokens": 8000}, "c")
    assert out["thinking"] == {"type": "enabled", "budget_tokens": 4096}


# -- Anthropic client -> OpenAI provider ------------------------------------------


def test_anthropic_request_becomes_chat_completions() -> None:
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "system": [{"type": "text", "text": "You are terse."}],
        "messages": [
            {"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0"}},
                {"type": "text", "text": "Weather where this is?"},
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "...", "signature": "sig"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"location": "SF"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"location": "LA"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "15 degrees"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "25 degrees"}],
                 "is_error": False},
                {"type": "text", "text": "And tomorrow?"},
            ]},
        ],
        "tools": [{"name": "get_weather", "description": "Get the weather", "input_schema": WEATHER_SCHEMA}],
        "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        "stop_sequences": ["\n\nHuman:"],
        "temperature": 0.2,
        "stream": True,
        "thinking": {"type": "enabled", "budget_tokens": 10000},
        "metadata": {"user_id": "u-1"},
    }
    endpoint, out = AnthropicToOpenAI().request(body, "gpt-4o")
    assert endpoint == "chat/completions"
    assert out == {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0"}},
                {"type": "text", "text": "Weather where this is?"},
            ]},
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"SF\"}"}},
                {"id": "toolu_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"LA\"}"}},
            ]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "15 degrees"},
            {"role": "tool", "tool_call_id": "toolu_2", "content": "25 degrees"},
            {"role": "user", "content": "And tomorrow?"},
        ],
        "max_completion_tokens": 1024,
        "temperature": 0.2,
        "stop": ["\n\nHuman:"],
        "stream": True,
        "stream_options": {"include_usage": True},
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA,
                                                    "description": "Get the weather"}}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
        "reasoning_effort": "high",
        "user": "u-1",
    }


@pytest.mark.parametrize("param", ["top_k", "container", "mcp_servers"])
def test_what_openai_cannot_do_is_a_400_naming_the_parameter(param: str) -> None:
    body = {"model": "c", "max_tokens": 5, "messages": [], param: 5}
    with pytest.raises(Untranslatable) as caught:
        AnthropicToOpenAI().request(body, "g")
    assert caught.value.param == param and caught.value.status == 400


def test_chat_completion_becomes_an_anthropic_message() -> None:
    # The Chat Completions reference's example response (tool call variant).
    body = {
        "id": "chatcmpl-abc123", "object": "chat.completion", "created": 1699896916, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_abc123", "type": "function",
             "function": {"name": "get_current_weather", "arguments": "{\n\"location\": \"Boston, MA\"\n}"}}]},
            "logprobs": None, "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 82, "completion_tokens": 17, "total_tokens": 99,
                  "prompt_tokens_details": {"cached_tokens": 64},
                  "completion_tokens_details": {"reasoning_tokens": 0}},
    }
    assert AnthropicToOpenAI().response(body) == {
        "id": "chatcmpl-abc123", "type": "message", "role": "assistant", "model": "gpt-4o-mini",
        "content": [{"type": "tool_use", "id": "call_abc123", "name": "get_current_weather",
                     "input": {"location": "Boston, MA"}}],
        "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": 18, "output_tokens": 17, "cache_read_input_tokens": 64,
                  "cache_creation_input_tokens": 0},
    }


def _oai_chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "chatcmpl-123", "object": "chat.completion.chunk", "created": 1694268190,
            "model": "gpt-4o-mini", "system_fingerprint": "fp_44709d6fcb",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}


OPENAI_STREAM = sse([
    (None, _oai_chunk({"role": "assistant", "content": ""})),
    (None, _oai_chunk({"content": "Hello"})),
    (None, _oai_chunk({"content": "!"})),
    (None, _oai_chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                       "function": {"name": "get_weather", "arguments": ""}}]})),
    (None, _oai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{\"location\":"}}]})),
    (None, _oai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": "\"SF\"}"}}]})),
    (None, _oai_chunk({"tool_calls": [{"index": 1, "id": "call_2", "type": "function",
                                       "function": {"name": "get_weather", "arguments": "{\"location\":\"LA\"}"}}]})),
    (None, _oai_chunk({}, "tool_calls")),
    (None, {"id": "chatcmpl-123", "object": "chat.completion.chunk", "created": 1694268190, "model": "gpt-4o-mini",
            "choices": [], "usage": {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42,
                                     "prompt_tokens_details": {"cached_tokens": 10}}}),
    (None, b"[DONE]"),
])


@pytest.mark.parametrize("pieces", [1, 5, 200])
def test_chat_chunks_become_anthropic_events(pieces: int) -> None:
    events = parse(run_stream(StreamTranslator(AnthropicToOpenAI().stream()), OPENAI_STREAM, pieces))

    def delta(index: int, d: dict[str, Any]) -> tuple[str, Any]:
        return ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})

    assert events == [
        ("message_start", {"type": "message_start", "message": {
            "id": "chatcmpl-123", "type": "message", "role": "assistant", "model": "gpt-4o-mini",
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        delta(0, {"type": "text_delta", "text": "Hello"}),
        delta(0, {"type": "text_delta", "text": "!"}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {
            "type": "tool_use", "id": "call_1", "name": "get_weather", "input": {}}}),
        delta(1, {"type": "input_json_delta", "partial_json": "{\"location\":"}),
        delta(1, {"type": "input_json_delta", "partial_json": "\"SF\"}"}),
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
        ("content_block_start", {"type": "content_block_start", "index": 2, "content_block": {
            "type": "tool_use", "id": "call_2", "name": "get_weather", "input": {}}}),
        delta(2, {"type": "input_json_delta", "partial_json": "{\"location\":\"LA\"}"}),
        ("content_block_stop", {"type": "content_block_stop", "index": 2}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                           "usage": {"input_tokens": 20, "output_tokens": 12, "cache_read_input_tokens": 10,
                                     "cache_creation_input_tokens": 0}}),
        ("message_stop", {"type": "message_stop"}),
    ]


def test_a_provider_error_event_mid_stream_never_carries_its_text() -> None:
    stream = sse([(None, _oai_chunk({"content": "Hi"})),
                  (None, {"error": {"message": "secret prompt quoted", "type": "server_error"}})])
    out = run_stream(StreamTranslator(AnthropicToOpenAI().stream()), stream)
    assert b"secret prompt" not in out
    assert parse(out)[-1] == ("error", {"type": "error", "error": {
        "type": "api_error", "message": "The provider reported an error mid-stream."}})


@pytest.mark.parametrize(
    "body",
    [
        {"canary_7f3a_param": 1},
        {"messages": [{"role": "user", "content": [{"type": "canary_7f3a_part"}]}]},
        {"messages": [{"role": "canary_7f3a_role", "content": "x"}]},
    ],
)
def test_a_name_the_client_made_up_is_refused_without_being_echoed(body: dict[str, Any]) -> None:
    with pytest.raises(Untranslatable) as caught:
        OpenAIToAnthropic().request({"model": "m", "messages": [], **body}, "c")
    err = caught.value
    assert "canary" not in err.message and err.param is None
    assert err.message == (
        "A parameter of this request cannot be translated to the Anthropic Messages format "
        "this model is served in."
    )


def test_an_answer_of_the_wrong_shape_is_malformed_not_a_crash() -> None:
    with pytest.raises(MalformedAnswer):
        translate_response(OpenAIToAnthropic(), b'{"content": "not blocks", "usage": 5}')
    stream = sse([("message_start", {"type": "message_start", "message": "not an object"}),
                  ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                           "delta": {"type": "text_delta", "text": "ok"}})])
    events = parse(run_stream(StreamTranslator(OpenAIToAnthropic().stream()), stream))
    assert [d["choices"][0]["delta"] for _, d in events[:1]] == [{"content": "ok"}]


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m", "messages": ["canary-not-a-message"]},
        {"model": "m", "messages": [], "tools": {"canary": 1}},
        {"model": "m", "messages": [{"role": "user", "content": [5]}], "stop": 7},
        {"model": "m", "messages": [{"role": "assistant", "tool_calls": "canary"}]},
    ],
)
def test_a_body_of_the_wrong_shape_is_a_400_not_a_crash(body: dict[str, Any]) -> None:
    for translation in (OpenAIToAnthropic(), OpenAIToGemini()):
        with pytest.raises(BadRequest) as caught:
            translate_request(translation, json.dumps(body).encode(), "c", True)
        assert caught.value.status == 400 and "canary" not in caught.value.message


def test_azure_gets_no_model_in_the_body_its_path_names_the_deployment() -> None:
    body = json.dumps({"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": "Hi"}]})
    endpoint, sent = translate_request(AnthropicToOpenAI(), body.encode(), "prod-4o", False)
    assert endpoint == "chat/completions"
    assert json.loads(sent) == {"messages": [{"role": "user", "content": "Hi"}], "max_completion_tokens": 5}
