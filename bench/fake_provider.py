"""A fast fake OpenAI provider: the upstream every benchmark target talks to.

`POST /v1/chat/completions` answers a small fixed completion with a `usage`
field, or, when the body asks for `"stream": true`, a short SSE stream: a few
content chunks, a usage chunk, then `data: [DONE]`. `POST /v1/messages`
answers the same in Anthropic's format (the "translated" case). Responses
are prebuilt bytes; the only parsing is msgspec reading the `stream` flag.

The model `bench-slow` answers after `SLOW_SECONDS`: the bench's clients
that hang up mid-request ask for it, so that the proxy's attempt is in
flight when they leave (see run.py, "after hang-ups").

    python bench/fake_provider.py --port 9101
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from collections.abc import Callable, Coroutine
from typing import Any

import msgspec
from aiohttp import web

MODEL = "bench-model"
SLOW_MODEL = b'"bench-slow"'
SLOW_SECONDS = 0.5
CREATED = 1_700_000_000
USAGE = {"prompt_tokens": 9, "completion_tokens": 6, "total_tokens": 15}


class _Flags(msgspec.Struct):
    stream: bool = False


_decode_flags = msgspec.json.Decoder(_Flags).decode


def _completion() -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": CREATED,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hello from the bench."},
                    "finish_reason": "stop",
                }
            ],
            "usage": USAGE,
        },
        separators=(",", ":"),
    ).encode()


def _chunk(delta: dict[str, str], finish: str | None = None) -> dict[str, object]:
    return {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _stream_events() -> list[bytes]:
    usage_chunk = {**_chunk({}), "choices": [], "usage": USAGE}
    events = [
        _chunk({"role": "assistant", "content": ""}),
        _chunk({"content": "Hello"}),
        _chunk({"content": " from the"}),
        _chunk({"content": " bench."}),
        _chunk({}, finish="stop"),
        usage_chunk,
    ]
    out = [b"data: " + json.dumps(e, separators=(",", ":")).encode() + b"\n\n" for e in events]
    return [*out, b"data: [DONE]\n\n"]


def _message() -> bytes:
    return json.dumps(
        {
            "id": "msg_bench",
            "type": "message",
            "role": "assistant",
            "model": MODEL,
            "content": [{"type": "text", "text": "Hello from the bench."}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 9, "output_tokens": 6},
        },
        separators=(",", ":"),
    ).encode()


def _message_events() -> list[bytes]:
    start = {"id": "msg_bench", "type": "message", "role": "assistant", "model": MODEL,
             "content": [], "stop_reason": None, "usage": {"input_tokens": 9, "output_tokens": 1}}
    events: list[tuple[str, dict[str, object]]] = [
        ("message_start", {"type": "message_start", "message": start}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
    ]
    for text in ("Hello", " from the", " bench."):
        events.append(("content_block_delta", {"type": "content_block_delta", "index": 0,
                                               "delta": {"type": "text_delta", "text": text}}))
    events += [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                           "usage": {"input_tokens": 9, "output_tokens": 6}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    return [f"event: {n}\ndata: {json.dumps(d, separators=(',', ':'))}\n\n".encode()
            for n, d in events]


COMPLETION = _completion()
MESSAGE = _message()
MESSAGE_EVENTS = _message_events()
STREAM_EVENTS = _stream_events()
JSON_HEADERS = {"Content-Type": "application/json"}
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _answer(request, COMPLETION, STREAM_EVENTS)


async def messages(request: web.Request) -> web.StreamResponse:
    return await _answer(request, MESSAGE, MESSAGE_EVENTS)


async def _answer(request: web.Request, plain: bytes, events: list[bytes]) -> web.StreamResponse:
    body = await request.read()
    try:
        stream = _decode_flags(body).stream
    except msgspec.DecodeError:
        return web.Response(
            status=400,
            body=b'{"error":{"message":"invalid JSON body","type":"invalid_request_error",'
            b'"param":null,"code":null}}',
            headers=JSON_HEADERS,
        )
    if SLOW_MODEL in body:
        await asyncio.sleep(SLOW_SECONDS)
    if not stream:
        return web.Response(body=plain, headers=JSON_HEADERS)
    response = web.StreamResponse(headers=SSE_HEADERS)
    await response.prepare(request)
    for event in events:
        await response.write(event)
    await response.write_eof()
    return response


async def models(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [{"id": MODEL, "object": "model"}]})


async def traces(request: web.Request) -> web.Response:
    """An OTLP/HTTP trace receiver that keeps nothing (the "traced" case exports here)."""
    await request.read()
    return web.Response(body=b"", content_type="application/x-protobuf")


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/messages", messages)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/traces", traces)
    return app


async def serve(app: web.Application, host: str, port: int, name: str) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=1024).start()
    print(f"{name} listening on http://{host}:{port}", flush=True)
    await asyncio.Event().wait()


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run a server coroutine on uvloop when it is installed."""
    try:
        import uvloop
    except ImportError:
        runner: Callable[[Coroutine[Any, Any, None]], None] = asyncio.run
    else:
        runner = uvloop.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(main)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9101)
    args = parser.parse_args()
    run(serve(make_app(), args.host, args.port, "fake provider"))


if __name__ == "__main__":
    main()
