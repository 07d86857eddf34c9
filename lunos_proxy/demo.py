"""The built-in demo provider: deterministic OpenAI- and Anthropic-format answers.

For trying Lunos with no provider account. A provider with ``format: demo``
is served by this app on a loopback port the proxy picks at start; calls to
it go through the same forwarder as any real provider. Answers are fixed
text whose token counts are real: `usage` counts whitespace-separated words
of the request's message text and of the answer.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import msgspec
from aiohttp import web

ANSWER = "Hello from the Lunos demo provider. Your request went through the proxy and back."
_WORDS = ANSWER.split(" ")
_encode = msgspec.json.encode


def _text_of(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, list):
        for item in node:
            yield from _text_of(item)
    elif isinstance(node, dict):
        for key in ("content", "text", "input", "prompt", "system", "messages"):
            if key in node:
                yield from _text_of(node[key])


def _prompt_tokens(body: dict[str, Any]) -> int:
    return max(1, sum(len(t.split()) for t in _text_of(body)))


def _sse(data: bytes, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + data + b"\n\n"


async def _read(request: web.Request) -> dict[str, Any]:
    try:
        body = msgspec.json.decode(await request.read())
    except msgspec.DecodeError:
        raise web.HTTPBadRequest(text='{"error":{"message":"invalid JSON"}}') from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text='{"error":{"message":"expected an object"}}')
    return body


async def chat(request: web.Request) -> web.StreamResponse:
    body = await _read(request)
    model = str(body.get("model", "demo"))
    usage = {
        "prompt_tokens": _prompt_tokens(body),
        "completion_tokens": len(_WORDS),
        "total_tokens": _prompt_tokens(body) + len(_WORDS),
    }
    ident, created = "chatcmpl-demo", int(time.time())
    if not body.get("stream"):
        return web.json_response(
            {
                "id": ident,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": ANSWER},
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            }
        )
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)

    def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    await resp.write(_sse(_encode(chunk({"role": "assistant", "content": ""}, None))))
    for i, word in enumerate(_WORDS):
        text = word if i == 0 else " " + word
        await resp.write(_sse(_encode(chunk({"content": text}, None))))
    await resp.write(_sse(_encode(chunk({}, "stop"))))
    if (body.get("stream_options") or {}).get("include_usage"):
        final = chunk({}, None)
        final["choices"] = []
        final["usage"] = usage
        await resp.write(_sse(_encode(final)))
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


async def completions(request: web.Request) -> web.Response:
    body = await _read(request)
    prompt = _prompt_tokens(body)
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
    body = await _read(request)
    inputs = body.get("input", "")
    items = inputs if isinstance(inputs, list) else [inputs]
    prompt = _prompt_tokens(body)
    return web.json_response(
        {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": [0.125, -0.25, 0.5, 1.0]}
                for i in range(len(items))
            ],
            "model": str(body.get("model", "demo")),
            "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
        }
    )


async def responses(request: web.Request) -> web.Response:
    body = await _read(request)
    prompt = _prompt_tokens(body)
    return web.json_response(
        {
            "id": "resp_demo",
            "object": "response",
            "created_at": int(time.time()),
            "status": "completed",
            "model": str(body.get("model", "demo")),
            "output": [
                {
                    "type": "message",
                    "id": "msg_demo",
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": ANSWER, "annotations": []}],
                }
            ],
            "usage": {
                "input_tokens": prompt,
                "output_tokens": len(_WORDS),
                "total_tokens": prompt + len(_WORDS),
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": 0},
            },
        }
    )


async def messages(request: web.Request) -> web.StreamResponse:
    body = await _read(request)
    model = str(body.get("model", "demo"))
    prompt = _prompt_tokens(body)
    message: dict[str, Any] = {
        "id": "msg_demo",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": ANSWER}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": prompt, "output_tokens": len(_WORDS)},
    }
    if not body.get("stream"):
        return web.json_response(message)
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    start = dict(
        message, content=[], stop_reason=None, usage={"input_tokens": prompt, "output_tokens": 1}
    )
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": start}),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
    ]
    for i, word in enumerate(_WORDS):
        text = word if i == 0 else " " + word
        events.append(
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": text},
                },
            )
        )
    events += [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": len(_WORDS)},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    for name, data in events:
        await resp.write(_sse(_encode(data), name))
    await resp.write_eof()
    return resp


async def count_tokens(request: web.Request) -> web.Response:
    body = await _read(request)
    return web.json_response({"input_tokens": _prompt_tokens(body)})


def demo_app() -> web.Application:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_post("/v1/responses", responses)
    app.router.add_post("/v1/messages", messages)
    app.router.add_post("/v1/messages/count_tokens", count_tokens)
    return app
