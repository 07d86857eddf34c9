"""The built-in demo provider: deterministic answers in every wire format.

For trying Lunos with no provider account. A provider with ``format: demo``
is served by this app on a loopback port the proxy picks at start; calls to
it go through the same forwarder as any real provider. Answers are fixed
text whose token counts are real: `usage` counts whitespace-separated words
of the request's message text and of the answer.

It answers as the real APIs do, streams included, so that SDKs and
frameworks work against it unchanged: OpenAI Chat Completions, Completions,
Embeddings (floats, or base64 when `encoding_format` asks) and Responses;
Anthropic Messages and count_tokens; Google Gemini's generateContent and
streamGenerateContent (see gemini.py). When the request offers tools
and its last turn is not a tool's result, the answer calls one: the
`tool_choice` one, else the first, with arguments made from its JSON
schema. A requested JSON schema (structured output) is answered with JSON
made from that schema.

One module past 400 lines on purpose: it is one fake API per section, and
the sections share the answer, the schema filler and the stream helpers.
"""

from __future__ import annotations

import base64
import struct
import time
from collections.abc import Iterator
from typing import Any

import msgspec
from aiohttp import web

ANSWER = "Hello from the Lunos demo provider. Your request went through the proxy and back."
_WORDS = ANSWER.split(" ")
_VECTOR = (0.125, -0.25, 0.5, 1.0)
_encode = msgspec.json.encode


def _text_of(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, list):
        for item in node:
            yield from _text_of(item)
    elif isinstance(node, dict):
        for key in (
            "content",
            "text",
            "input",
            "prompt",
            "system",
            "messages",
            "contents",
            "parts",
            "systemInstruction",
        ):
            if key in node:
                yield from _text_of(node[key])


def prompt_tokens(body: dict[str, Any]) -> int:
    return max(1, sum(len(t.split()) for t in _text_of(body)))


def example(schema: Any) -> Any:
    """A value that satisfies a (simple) JSON schema: every property filled."""
    if not isinstance(schema, dict):
        return "demo"
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return example(schema[key][0])
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    kind = str(kind).lower()  # Gemini writes OBJECT, STRING, ...
    if kind == "object":
        props = schema.get("properties") or {}
        return {name: example(sub) for name, sub in props.items()}
    if kind == "array":
        return [example(schema.get("items"))]
    if kind == "integer":
        return 1
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return "demo"


def words() -> Iterator[str]:
    """The answer's stream pieces: a word each, spaces before all but the first."""
    for i, word in enumerate(_WORDS):
        yield word if i == 0 else " " + word


def sse(data: bytes, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + data + b"\n\n"


async def read_json(request: web.Request) -> dict[str, Any]:
    try:
        body = msgspec.json.decode(await request.read())
    except msgspec.DecodeError:
        raise web.HTTPBadRequest(text='{"error":{"message":"invalid JSON"}}') from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text='{"error":{"message":"expected an object"}}')
    return body


async def open_stream(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    return resp


def _chosen_tool(tools: list[dict[str, Any]], wanted: str | None) -> dict[str, Any]:
    for tool in tools:
        if wanted is not None and tool.get("name") == wanted:
            return tool
    return tools[0]


# -- OpenAI Chat Completions ------------------------------------------------------


def _chat_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    """{"name", "arguments"} of the tool to call, or None to answer in text."""
    tools = [t["function"] for t in body.get("tools") or () if isinstance(t.get("function"), dict)]
    messages = body.get("messages") or [{}]
    choice = body.get("tool_choice")
    if not tools or choice == "none" or messages[-1].get("role") == "tool":
        return None
    wanted = choice["function"].get("name") if isinstance(choice, dict) else None
    tool = _chosen_tool(tools, wanted)
    return {
        "name": tool.get("name", ""),
        "arguments": _encode(example(tool.get("parameters"))).decode(),
    }


def _json_answer(fmt: Any) -> str | None:
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        return _encode(example((fmt.get("json_schema") or {}).get("schema"))).decode()
    return None


async def chat(request: web.Request) -> web.StreamResponse:
    body = await read_json(request)
    model = str(body.get("model", "demo"))
    prompt = prompt_tokens(body)
    tool = _chat_tool(body)
    text = _json_answer(body.get("response_format")) or ANSWER
    pieces = [text] if text is not ANSWER else list(words())
    completion = len(tool["arguments"]) // 4 + 1 if tool else len(text.split())
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    ident, created = "chatcmpl-demo", int(time.time())
    finish = "tool_calls" if tool else "stop"
    call = {"id": "call_demo", "type": "function", "function": tool} if tool else None
    if not body.get("stream"):
        message: dict[str, Any] = {"role": "assistant", "content": None if tool else text}
        if call:
            message["tool_calls"] = [call]
        return web.json_response(
            {
                "id": ident,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": usage,
            }
        )
    resp = await open_stream(request)

    def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    deltas: list[dict[str, Any]]
    if tool:
        args = tool["arguments"]
        half = len(args) // 2
        first = {
            "index": 0,
            "id": "call_demo",
            "type": "function",
            "function": {"name": tool["name"], "arguments": args[:half]},
        }
        deltas = [
            {"role": "assistant", "content": None, "tool_calls": [first]},
            {"tool_calls": [{"index": 0, "function": {"arguments": args[half:]}}]},
        ]
    else:
        deltas = [{"role": "assistant", "content": ""}] + [{"content": p} for p in pieces]
    for delta in deltas:
        await resp.write(sse(_encode(chunk(delta, None))))
    await resp.write(sse(_encode(chunk({}, finish))))
    if (body.get("stream_options") or {}).get("include_usage"):
        final = chunk({}, None)
        final["choices"] = []
        final["usage"] = usage
        await resp.write(sse(_encode(final)))
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


async def completions(request: web.Request) -> web.Response:
    body = await read_json(request)
    prompt = prompt_tokens(body)
    return web.json_response(
        {
            "id": "cmpl-demo",
            "object": "text_completion",
            "created": int(time.time()),
            "model": str(body.get("model", "demo")),
            "choices": [{"index": 0, "text": ANSWER, "finish_reason": "stop", "logprobs": None}],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": len(_WORDS),
                "total_tokens": prompt + len(_WORDS),
            },
        }
    )


async def embeddings(request: web.Request) -> web.Response:
    body = await read_json(request)
    inputs = body.get("input", "")
    items = (
        inputs
        if isinstance(inputs, list) and inputs and not isinstance(inputs[0], int)
        else [inputs]
    )
    prompt = prompt_tokens(body)
    vector: Any = list(_VECTOR)
    if body.get("encoding_format") == "base64":
        # As OpenAI sends it: little-endian float32s, base64-encoded.
        vector = base64.b64encode(struct.pack(f"<{len(_VECTOR)}f", *_VECTOR)).decode()
    return web.json_response(
        {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": vector} for i in range(len(items))
            ],
            "model": str(body.get("model", "demo")),
            "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
        }
    )


# -- OpenAI Responses --------------------------------------------------------------


def _responses_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    tools = [t for t in body.get("tools") or () if t.get("type") == "function"]
    items = body.get("input")
    last = items[-1] if isinstance(items, list) and items else {}
    choice = body.get("tool_choice")
    if (
        not tools
        or choice == "none"
        or (isinstance(last, dict) and last.get("type") == "function_call_output")
    ):
        return None
    wanted = choice.get("name") if isinstance(choice, dict) else None
    tool = _chosen_tool(tools, wanted)
    return {
        "name": tool.get("name", ""),
        "arguments": _encode(example(tool.get("parameters"))).decode(),
    }


async def responses(request: web.Request) -> web.StreamResponse:
    body = await read_json(request)
    prompt = prompt_tokens(body)
    tool = _responses_tool(body)
    output_tokens = len(tool["arguments"]) // 4 + 1 if tool else len(_WORDS)
    item: dict[str, Any]
    if tool:
        item = {
            "type": "function_call",
            "id": "fc_demo",
            "call_id": "call_demo",
            "status": "completed",
            **tool,
        }
    else:
        item = {
            "type": "message",
            "id": "msg_demo",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": ANSWER, "annotations": []}],
        }
    response: dict[str, Any] = {
        "id": "resp_demo",
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "model": str(body.get("model", "demo")),
        "output": [item],
        "parallel_tool_calls": True,
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "metadata": {},
        "usage": {
            "input_tokens": prompt,
            "output_tokens": output_tokens,
            "total_tokens": prompt + output_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        },
    }
    if not body.get("stream"):
        return web.json_response(response)
    resp = await open_stream(request)
    for name, data in _responses_events(response, item):
        await resp.write(sse(_encode(data), name))
    await resp.write_eof()
    return resp


def _responses_events(
    response: dict[str, Any], item: dict[str, Any]
) -> Iterator[tuple[str, dict[str, Any]]]:
    """The Responses API's stream: created, in_progress, the output item's
    added / delta / done events, completed; numbered in order."""
    pending = dict(response, status="in_progress", output=[], usage=None)
    where = {"item_id": item["id"], "output_index": 0}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": pending},
        {"type": "response.in_progress", "response": pending},
    ]
    if item["type"] == "function_call":
        events += [
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": dict(item, arguments="", status="in_progress"),
            },
            {"type": "response.function_call_arguments.delta", **where, "delta": item["arguments"]},
            {
                "type": "response.function_call_arguments.done",
                **where,
                "name": item["name"],
                "arguments": item["arguments"],
            },
        ]
    else:
        part = item["content"][0]
        at = dict(where, content_index=0)
        events += [
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": dict(item, content=[], status="in_progress"),
            },
            {"type": "response.content_part.added", **at, "part": dict(part, text="")},
        ]
        events += [
            {"type": "response.output_text.delta", **at, "delta": piece, "logprobs": []}
            for piece in words()
        ]
        events += [
            {"type": "response.output_text.done", **at, "text": part["text"], "logprobs": []},
            {"type": "response.content_part.done", **at, "part": part},
        ]
    events += [
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {"type": "response.completed", "response": response},
    ]
    for number, event in enumerate(events):
        event["sequence_number"] = number
        yield event["type"], event


# -- Anthropic Messages ------------------------------------------------------------


def _messages_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    tools = [t for t in body.get("tools") or () if "input_schema" in t]
    messages = body.get("messages") or [{}]
    last = messages[-1].get("content")
    choice = body.get("tool_choice") or {}
    answered = isinstance(last, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in last
    )
    if not tools or choice.get("type") == "none" or answered:
        return None
    tool = _chosen_tool(tools, choice.get("name") if choice.get("type") == "tool" else None)
    return {
        "type": "tool_use",
        "id": "toolu_demo",
        "name": tool.get("name", ""),
        "input": example(tool.get("input_schema")),
    }


async def messages(request: web.Request) -> web.StreamResponse:
    body = await read_json(request)
    model = str(body.get("model", "demo"))
    prompt = prompt_tokens(body)
    tool = _messages_tool(body)
    block: dict[str, Any] = tool or {"type": "text", "text": ANSWER}
    output = len(_encode(tool["input"])) // 4 + 1 if tool else len(_WORDS)
    usage = {
        "input_tokens": prompt,
        "output_tokens": output,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    stop = "tool_use" if tool else "end_turn"
    message: dict[str, Any] = {
        "id": "msg_demo",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [block],
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage,
    }
    if not body.get("stream"):
        return web.json_response(message)
    resp = await open_stream(request)
    start = dict(message, content=[], stop_reason=None, usage=dict(usage, output_tokens=1))
    if tool:
        opened = dict(tool, input={})
        deltas = [
            {"type": "input_json_delta", "partial_json": ""},
            {"type": "input_json_delta", "partial_json": _encode(tool["input"]).decode()},
        ]
    else:
        opened = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": piece} for piece in words()]
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": start}),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": opened},
        ),
    ]
    events += [
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": d})
        for d in deltas
    ]
    events += [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            # Full usage, as Anthropic sends it: frameworks read input_tokens here.
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": usage,
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    for name, data in events:
        await resp.write(sse(_encode(data), name))
    await resp.write_eof()
    return resp


async def count_tokens(request: web.Request) -> web.Response:
    body = await read_json(request)
    return web.json_response({"input_tokens": prompt_tokens(body)})
