"""A fake provider on loopback whose behaviour each test sets.

It speaks OpenAI and Anthropic formats, records every request it receives
(headers and body), and can answer with an error status, stall before its
headers, pause mid-stream, or cut a stream off. Every answer carries real
`usage` fields so metering can be checked exactly.
"""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

CHUNKS = ["Hel", "lo", ", ", "wor", "ld", "!"]
# What a broken provider sends where JSON belongs (a canary for the logs too).
GARBLED = b'{"id": "upstream-garbled-canary", "choices": [{"delta": {"content": "Hel'  # cut off
PROMPT_TOKENS = 11
COMPLETION_TOKENS = len(CHUNKS)


async def start_site(runner: web.BaseRunner) -> int:
    """Serve `runner` on a loopback socket bound before the site starts, so no
    other process can take the port in between; returns the port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    return int(sock.getsockname()[1])


@dataclass
class Received:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Behaviour:
    status: int = 200
    error_body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_headers: float = 0.0  # stall before sending response headers
    pause_after_first: float = 0.0  # stream: wait after the first event
    cut_after: int | None = None  # stream: drop the connection after N events
    cut_mid_event: bool = False  # ... having sent the first half of the next one
    chunk_interval: float = 0.0
    reply: list[str] | None = None  # the answer's text, in stream chunks (default CHUNKS)
    # Statuses for the next requests, one each, before `status` applies again.
    statuses: list[int] = field(default_factory=list)
    # When set, requests wait for it before answering (held until the test says).
    gate: asyncio.Event | None = None
    report_usage: bool = True  # False: a provider that never reports usage
    vary_usage: bool = False  # prompt tokens depend on the request body (ledger sums)
    cached_tokens: int = 0  # reported as cached input (OpenAI) / cache reads (Anthropic)
    garble_event: int | None = None  # stream: event N's data is `garbled`, the rest follow
    garbled: bytes = GARBLED  # what event N carries in place of its data
    garble_body: bool = False  # a 200 JSON answer whose body is `garbled`


class FakeProvider:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.behaviour = Behaviour()
        self.disconnects = 0  # streams whose client (the proxy) went away
        self.completed_streams = 0
        # (prompt tokens, completion tokens) of every usage report sent
        self.reported: list[tuple[int, int]] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application(client_max_size=32 * 1024 * 1024)  # providers take long prompts
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self.runner.setup()
        self.port = await start_site(self.runner)

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.received.append(
            Received(request.method, request.path, request.query_string, dict(request.headers), body)
        )
        b = self.behaviour
        if b.delay_headers:
            await asyncio.sleep(b.delay_headers)
        if b.gate is not None:
            await b.gate.wait()
        status = b.statuses.pop(0) if b.statuses else b.status
        if status >= 400:
            return web.Response(
                status=status,
                body=b.error_body or b'{"error":{"message":"fake failure","type":"server_error"}}',
                content_type="application/json",
                headers=b.headers,
            )
        payload = json.loads(body) if body else {}
        anthropic = request.path.endswith("/messages")
        if payload.get("stream"):
            return await self.stream(request, payload, anthropic)
        if b.garble_body:
            return web.Response(body=b.garbled, content_type="application/json", headers=b.headers)
        return web.json_response(self.answer(request.path, payload), headers=b.headers)

    def prompt_tokens(self, payload: dict[str, Any]) -> int:
        if not self.behaviour.vary_usage:
            return PROMPT_TOKENS
        return PROMPT_TOKENS + len(json.dumps(payload.get("messages", ""))) % 97

    def answer(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        out = self._answer(path, payload)
        usage = out.get("usage")
        if usage is not None and not self.behaviour.report_usage:
            del out["usage"]
        elif usage is not None:
            prompt = usage.get("prompt_tokens", usage.get("input_tokens", 0))
            self.reported.append((prompt, usage.get("completion_tokens", usage.get("output_tokens", 0))))
        return out

    def _answer(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        model = payload.get("model", "")
        text = "".join(self.behaviour.reply or CHUNKS)
        prompt_tokens = self.prompt_tokens(payload)
        cached = self.behaviour.cached_tokens
        if path.endswith("/messages/count_tokens"):
            return {"input_tokens": PROMPT_TOKENS}
        if path.endswith("/messages"):
            return {
                "id": "msg_fake",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": prompt_tokens - cached, "output_tokens": COMPLETION_TOKENS,
                          **({"cache_read_input_tokens": cached} if cached else {})},
            }
        if path.endswith("/embeddings"):
            return {
                "object": "list",
                "data": [{"object": "embedding", "index": 0, "embedding": [0.5, 0.25]}],
                "model": model,
                "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
            }
        usage: dict[str, Any] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": prompt_tokens + COMPLETION_TOKENS,
        }
        if cached:
            usage["prompt_tokens_details"] = {"cached_tokens": cached}
        if path.endswith("/completions") and not path.endswith("/chat/completions"):
            return {
                "id": "cmpl-fake",
                "object": "text_completion",
                "created": 1,
                "model": model,
                "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}],
                "usage": usage,
            }
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 1,
            "model": model,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            ],
            "usage": usage,
        }

    def events(self, payload: dict[str, Any], anthropic: bool) -> list[bytes]:
        model = payload.get("model", "")
        prompt_tokens = self.prompt_tokens(payload)
        report = self.behaviour.report_usage
        if anthropic:
            evs: list[tuple[str, dict[str, Any]]] = [
                ("message_start", {"type": "message_start", "message": {
                    "id": "msg_fake", "type": "message", "role": "assistant", "model": model,
                    "content": [], "stop_reason": None, "stop_sequence": None,
                    **({"usage": {"input_tokens": prompt_tokens, "output_tokens": 1}} if report else {})}}),
                ("content_block_start", {"type": "content_block_start", "index": 0,
                                         "content_block": {"type": "text", "text": ""}}),
            ]
            for c in self.behaviour.reply or CHUNKS:
                evs.append(("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                    "delta": {"type": "text_delta", "text": c}}))
            evs += [
                ("content_block_stop", {"type": "content_block_stop", "index": 0}),
                ("message_delta", {"type": "message_delta",
                                   "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                   **({"usage": {"output_tokens": COMPLETION_TOKENS}} if report else {})}),
                ("message_stop", {"type": "message_stop"}),
            ]
            return [f"event: {n}\ndata: {json.dumps(d)}\n\n".encode() for n, d in evs]

        def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
            return {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1,
                    "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        out = [chunk({"role": "assistant", "content": ""}, None)]
        out += [chunk({"content": c}, None) for c in self.behaviour.reply or CHUNKS]
        out.append(chunk({}, "stop"))
        if (payload.get("stream_options") or {}).get("include_usage") and report:
            # As OpenAI does: every chunk then says "usage": null, and one more
            # chunk with no choices carries the counts.
            for c in out:
                c["usage"] = None
            final = chunk({}, None)
            final["choices"] = []
            final["usage"] = {"prompt_tokens": prompt_tokens, "completion_tokens": COMPLETION_TOKENS,
                              "total_tokens": prompt_tokens + COMPLETION_TOKENS}
            out.append(final)
        return [f"data: {json.dumps(c)}\n\n".encode() for c in out] + [b"data: [DONE]\n\n"]

    async def stream(
        self, request: web.Request, payload: dict[str, Any], anthropic: bool
    ) -> web.StreamResponse:
        b = self.behaviour
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", **b.headers})
        await resp.prepare(request)
        try:
            for i, event in enumerate(self.events(payload, anthropic)):
                if i == b.garble_event:
                    name = event.split(b"\n")[0] + b"\n" if anthropic else b""
                    event = name + b"data: " + b.garbled + b"\n\n"
                if b.cut_after is not None and i == b.cut_after:
                    if b.cut_mid_event:
                        await resp.write(event[: len(event) // 2])
                        await asyncio.sleep(0.05)  # the half reaches the proxy alone
                    assert request.transport is not None
                    request.transport.close()
                    return resp
                await resp.write(event)
                if i == 0 and b.pause_after_first:
                    await asyncio.sleep(b.pause_after_first)
                elif b.chunk_interval:
                    await asyncio.sleep(b.chunk_interval)
            await resp.write_eof()
            self.completed_streams += 1
            if b.report_usage and (anthropic or (payload.get("stream_options") or {}).get("include_usage")):
                self.reported.append((self.prompt_tokens(payload), COMPLETION_TOKENS))
        except (ConnectionResetError, asyncio.CancelledError):
            self.disconnects += 1
            raise
        return resp
