"""Golden tests: OpenAI Chat Completions and Anthropic Messages <-> Google Gemini.

Gemini's side follows the generateContent reference: contents with parts,
systemInstruction, functionDeclarations, generationConfig, and the
GenerateContentResponse (candidates, usageMetadata) of plain and
streamed (alt=sse) answers.
"""

from __future__ import annotations

from typing import Any

import pytest

from lunos_proxy.providers.gemini import STREAM
from lunos_proxy.providers.openai_gemini import OpenAIToGemini
from lunos_proxy.providers.translate import StreamTranslator, Untranslatable
from lunos_proxy.providers.translations import translation_for
from tests.providers.test_translate_openai_anthropic import parse, run_stream, sse

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "note": {"type": ["string", "null"]}},
    "required": ["city", "note"],
    "additionalProperties": False,
}


def test_openai_request_becomes_generate_content() -> None:
    body = {
        "model": "gpt-4o",
        "messages": [
            {"role": "developer", "content": "Answer in JSON."},
            {"role": "user", "content": [
                {"type": "text", "text": "Weather here?"},
                {"type": "image_url", "image_url": {"url": "data:image/webp;base64,UklGR"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/street.png"}},
            ]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_9", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Rome\"}"}}]},
            {"role": "tool", "tool_call_id": "call_9", "content": "sunny"},
        ],
        "tools": [{"type": "function", "function": {"name": "weather", "description": "Weather", "parameters": SCHEMA}}],
        "tool_choice": {"type": "function", "function": {"name": "weather"}},
        "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": SCHEMA, "strict": True}},
        "n": 2,
        "stop": ["END"],
        "max_tokens": 200,
        "temperature": 1.2,
        "top_p": 0.8,
        "seed": 3,
        "presence_penalty": 0.5,
        "reasoning_effort": "low",
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    gemini_schema = {"type": "object", "properties": {"city": {"type": "string"},
                                                      "note": {"type": "string", "nullable": True}},
                     "required": ["city", "note"]}
    endpoint, out = OpenAIToGemini().request(body, "gemini-2.5-flash")
    assert endpoint == STREAM
    assert out == {
        "systemInstruction": {"parts": [{"text": "Answer in JSON."}]},
        "contents": [
            {"role": "user", "parts": [
                {"text": "Weather here?"},
                {"inlineData": {"mimeType": "image/webp", "data": "UklGR"}},
                {"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/street.png"}},
            ]},
            {"role": "model", "parts": [{"functionCall": {"id": "call_9", "name": "weather", "args": {"city": "Rome"}}}]},
            {"role": "user", "parts": [{"functionResponse": {"id": "call_9", "name": "weather",
                                                             "response": {"result": "sunny"}}}]},
        ],
        "generationConfig": {
            "temperature": 1.2, "topP": 0.8, "presencePenalty": 0.5, "seed": 3, "maxOutputTokens": 200,
            "candidateCount": 2, "stopSequences": ["END"], "responseMimeType": "application/json",
            "responseSchema": gemini_schema, "thinkingConfig": {"thinkingBudget": 1024},
        },
        "tools": [{"functionDeclarations": [{"name": "weather", "description": "Weather",
                                             "parameters": gemini_schema}]}],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["weather"]}},
    }


@pytest.mark.parametrize(("param", "value"), [("logprobs", True), ("logit_bias", {"1": 2}),
                                              ("parallel_tool_calls", False), ("audio", {})])
def test_what_gemini_cannot_do_is_a_400_naming_the_parameter(param: str, value: Any) -> None:
    with pytest.raises(Untranslatable) as caught:
        OpenAIToGemini().request({"model": "m", "messages": [], param: value}, "g")
    assert caught.value.param == param and caught.value.status == 400


def test_generate_content_response_becomes_a_chat_completion() -> None:
    body = {
        "candidates": [
            {"content": {"role": "model", "parts": [{"text": "thinking...", "thought": True},
                                                    {"text": "Let me check."},
                                                    {"functionCall": {"name": "weather", "args": {"city": "Rome"}}}]},
             "finishReason": "STOP", "index": 0},
            {"content": {"role": "model", "parts": [{"text": "Cut"}]}, "finishReason": "MAX_TOKENS", "index": 1},
        ],
        "usageMetadata": {"promptTokenCount": 40, "candidatesTokenCount": 12, "thoughtsTokenCount": 30,
                          "cachedContentTokenCount": 8, "totalTokenCount": 82},
        "modelVersion": "gemini-2.5-flash",
        "responseId": "resp-1",
    }
    out = OpenAIToGemini().response(body)
    assert isinstance(out.pop("created"), int)
    assert out == {
        "id": "resp-1", "object": "chat.completion", "model": "gemini-2.5-flash",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Let me check.", "refusal": None,
                                     "tool_calls": [{"id": "call_0", "type": "function", "function": {
                                         "name": "weather", "arguments": "{\"city\":\"Rome\"}"}}]},
             "finish_reason": "tool_calls", "logprobs": None},
            {"index": 1, "message": {"role": "assistant", "content": "Cut", "refusal": None},
             "finish_reason": "length", "logprobs": None},
        ],
        "usage": {"prompt_tokens": 40, "completion_tokens": 42, "total_tokens": 82,
                  "prompt_tokens_details": {"cached_tokens": 8},
                  "completion_tokens_details": {"reasoning_tokens": 30}},
    }


GEMINI_STREAM = sse([
    (None, {"candidates": [{"content": {"role": "model", "parts": [{"text": "The weather"}]}, "index": 0}],
            "modelVersion": "gemini-2.5-flash", "responseId": "r1",
            "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9}}),
    (None, {"candidates": [{"content": {"role": "model", "parts": [{"text": " is"}]}, "index": 0}],
            "modelVersion": "gemini-2.5-flash", "responseId": "r1"}),
    (None, {"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"name": "weather", "args": {"city": "Rome"}}}]}, "finishReason": "STOP", "index": 0}],
            "modelVersion": "gemini-2.5-flash", "responseId": "r1",
            "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 7, "totalTokenCount": 16}}),
])


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "r1", "object": "chat.completion.chunk", "model": "gemini-2.5-flash",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}


@pytest.mark.parametrize("pieces", [1, 9])
def test_gemini_stream_becomes_chat_chunks_ending_in_done(pieces: int) -> None:
    translation = OpenAIToGemini()
    translation.request({"model": "m", "messages": [], "stream": True, "stream_options": {"include_usage": True}}, "g")
    events = parse(run_stream(StreamTranslator(translation.stream()), GEMINI_STREAM, pieces))
    for _, data in events:
        if isinstance(data, dict):
            assert isinstance(data.pop("created"), int)
    usage = _chunk({})
    usage["choices"] = []
    usage["usage"] = {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16,
                      "prompt_tokens_details": {"cached_tokens": 0},
                      "completion_tokens_details": {"reasoning_tokens": 0}}
    assert events == [(None, e) for e in [
        _chunk({"role": "assistant", "content": ""}),
        _chunk({"content": "The weather"}),
        _chunk({"content": " is"}),
        _chunk({"tool_calls": [{"id": "call_0", "type": "function", "index": 0,
                                "function": {"name": "weather", "arguments": "{\"city\":\"Rome\"}"}}]}),
        _chunk({}, "tool_calls"),
        usage,
        "[DONE]",
    ]]


def test_anthropic_client_reaches_gemini_through_chat_completions() -> None:
    translation = translation_for("anthropic", "gemini", "messages")
    assert translation is not None
    endpoint, out = translation.request({
        "model": "claude", "max_tokens": 64, "system": "Be brief.", "stream": True,
        "messages": [{"role": "user", "content": "Weather?"}],
        "tools": [{"name": "weather", "input_schema": {"type": "object", "properties": {}}}],
        "tool_choice": {"type": "any"},
        "thinking": {"type": "enabled", "budget_tokens": 20000},
    }, "gemini-2.5-pro")
    assert endpoint == STREAM
    assert out == {
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "contents": [{"role": "user", "parts": [{"text": "Weather?"}]}],
        "generationConfig": {"maxOutputTokens": 64, "thinkingConfig": {"thinkingBudget": 24576}},
        "tools": [{"functionDeclarations": [{"name": "weather", "parameters": {"type": "object", "properties": {}}}]}],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY"}},
    }
    events = parse(run_stream(StreamTranslator(translation.stream()), GEMINI_STREAM, 4))
    names = [name for name, _ in events]
    assert names == ["message_start", "content_block_start", "content_block_delta", "content_block_delta",
                     "content_block_stop", "content_block_start", "content_block_delta", "content_block_stop",
                     "message_delta", "message_stop"]
    assert events[5][1]["content_block"] == {"type": "tool_use", "id": "call_0", "name": "weather", "input": {}}
    assert events[8][1] == {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                            "usage": {"input_tokens": 9, "output_tokens": 7, "cache_read_input_tokens": 0,
                                      "cache_creation_input_tokens": 0}}


def test_two_candidates_stream_as_two_choices() -> None:
    translation = OpenAIToGemini()
    _, out = translation.request({"model": "m", "messages": [], "n": 2, "stream": True}, "g")
    assert out["generationConfig"] == {"candidateCount": 2}
    stream = sse([
        (None, {"candidates": [{"content": {"parts": [{"text": "A"}]}, "index": 0},
                               {"content": {"parts": [{"text": "B"}]}, "index": 1}], "responseId": "r"}),
        (None, {"candidates": [{"content": {"parts": [{"text": "a"}]}, "finishReason": "STOP", "index": 0},
                               {"content": {"parts": [{"text": "b"}]}, "finishReason": "MAX_TOKENS", "index": 1}],
                "responseId": "r"}),
    ])
    events = parse(run_stream(StreamTranslator(translation.stream()), stream, 3))
    by_choice: dict[int, list[Any]] = {0: [], 1: []}
    for _, data in events[:-1]:
        choice = data["choices"][0]
        by_choice[choice["index"]].append(choice["delta"].get("content") or choice["finish_reason"])
    assert by_choice == {0: [None, "A", "a", "stop"], 1: [None, "B", "b", "length"]}
    assert events[-1] == (None, "[DONE]")
