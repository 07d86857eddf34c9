"""Every way a request can go, as one table: adding an endpoint or an
outcome to the privacy proof is adding one `Case`.

Each case puts the canary where a client's content goes (messages, system
prompts, tool definitions and tool-call arguments, prompts, inputs) and
sets what the fake provider does: answer with the canary in its text,
fail with an error message that quotes the canary, cut the stream, stall.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Body = Callable[[str], bytes]


def _json(build: Callable[[str], dict[str, Any]]) -> Body:
    return lambda canary: json.dumps(build(canary)).encode()


def chat(canary: str, *, stream: bool = False, model: str = "gpt-test") -> dict[str, Any]:
    return {
        "model": model,
        "stream": stream,
        "messages": [
            {"role": "system", "content": f"You are {canary}."},
            {"role": "user", "content": f"Tell me about {canary}."},
            {"role": "assistant", "content": None, "tool_calls": [{
                "id": "call_1", "type": "function",
                "function": {"name": "lookup", "arguments": json.dumps({"q": canary})}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": f"result {canary}"},
        ],
        "tools": [{"type": "function", "function": {
            "name": "lookup", "description": f"Looks up {canary}",
            "parameters": {"type": "object", "properties": {"q": {"type": "string", "description": canary}}}}}],
    }


def messages(canary: str, *, stream: bool = False) -> dict[str, Any]:
    return {
        "model": "claude-test",
        "max_tokens": 50,
        "stream": stream,
        "system": f"You are {canary}.",
        "tools": [{"name": "lookup", "description": canary,
                   "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}],
        "messages": [
            {"role": "user", "content": f"Tell me about {canary}."},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "tu_1", "name": "lookup",
                                               "input": {"q": canary}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tu_1", "content": canary}]},
        ],
    }


@dataclass(frozen=True)
class Case:
    name: str
    path: str
    body: Body | None  # None: a GET
    status: int | None  # expected status; None: the client gives up before one
    # valid | tiny (an account with 1 request a day) | prepaid (no credit) | bad | none
    key: str = "valid"
    behaviour: dict[str, Any] = field(default_factory=dict)  # FakeProvider.behaviour fields
    abort_after_first_line: bool = False
    give_up_after: float | None = None  # seconds, for a provider that stalls
    calls: int = 1  # requests sent (the last one's status is checked)
    reaches_provider: bool = True


def _echo(status: int, canary: str) -> bytes:
    return json.dumps({"error": {"message": f"Your prompt '{canary}' was rejected",
                                 "type": "invalid_request_error", "code": "content_policy"}}).encode()


# `behaviour` values that are callables get the canary.
CASES: list[Case] = [
    Case("chat", "/v1/chat/completions", _json(chat), 200, behaviour={"reply": "canary-reply"}),
    Case("chat stream", "/v1/chat/completions", _json(lambda c: chat(c, stream=True)), 200,
         behaviour={"reply": "canary-reply"}),
    Case("completions", "/v1/completions",
         _json(lambda c: {"model": "gpt-test", "prompt": f"Say {c}", "max_tokens": 5}), 200,
         behaviour={"reply": "canary-reply"}),
    Case("embeddings", "/v1/embeddings", _json(lambda c: {"model": "gpt-test", "input": [c, c]}), 200),
    Case("responses", "/v1/responses",
         _json(lambda c: {"model": "gpt-test", "input": f"About {c}", "instructions": c}), 200,
         behaviour={"reply": "canary-reply"}),
    Case("messages", "/v1/messages", _json(messages), 200, behaviour={"reply": "canary-reply"}),
    Case("messages stream", "/v1/messages", _json(lambda c: messages(c, stream=True)), 200,
         behaviour={"reply": "canary-reply"}),
    Case("count tokens", "/v1/messages/count_tokens", _json(messages), 200),
    # Translated both ways (an OpenAI client to an Anthropic-format provider and back).
    Case("chat translated", "/v1/chat/completions", _json(lambda c: chat(c, model="claude-test")),
         200, behaviour={"reply": "canary-reply"}),
    Case("chat translated stream", "/v1/chat/completions",
         _json(lambda c: chat(c, stream=True, model="claude-test")), 200,
         behaviour={"reply": "canary-reply"}),
    Case("messages translated stream", "/v1/messages",
         _json(lambda c: {**messages(c, stream=True), "model": "gpt-test"}), 200,
         behaviour={"reply": "canary-reply"}),
    Case("translated provider error echoing the prompt", "/v1/chat/completions",
         _json(lambda c: chat(c, model="claude-test")), 400,
         behaviour={"status": 400, "error_body": "canary-echo"}),
    Case("models", "/v1/models", None, 200, reaches_provider=False),
    Case("provider error echoing the prompt", "/v1/chat/completions", _json(chat), 400,
         behaviour={"status": 400, "error_body": "canary-echo"}),
    Case("provider 5xx echoing the prompt, streamed", "/v1/messages",
         _json(lambda c: messages(c, stream=True)), 500,
         behaviour={"status": 500, "error_body": "canary-echo"}),
    Case("provider cuts the stream", "/v1/chat/completions", _json(lambda c: chat(c, stream=True)), 200,
         behaviour={"reply": "canary-reply", "cut_after": 3}),
    Case("client aborts mid-stream", "/v1/chat/completions", _json(lambda c: chat(c, stream=True)), 200,
         behaviour={"reply": "canary-reply", "chunk_interval": 0.2}, abort_after_first_line=True),
    Case("client gives up before the answer", "/v1/chat/completions", _json(chat), None,
         behaviour={"delay_headers": 3.0}, give_up_after=0.3),
    Case("unknown model", "/v1/chat/completions", _json(lambda c: chat(c, model=f"m-{c}")), 404,
         reaches_provider=False),
    Case("malformed JSON", "/v1/chat/completions",
         lambda c: b'{"model": "gpt-test", "messages": [{"content": "' + c.encode() + b'"', 400,
         reaches_provider=False),
    Case("body too large", "/v1/chat/completions",
         lambda c: json.dumps({"model": "gpt-test", "messages": [{"role": "user", "content": c * 4000}]}).encode(),
         413, reaches_provider=False),
    Case("bad key", "/v1/chat/completions", _json(chat), 401, key="bad", reaches_provider=False),
    Case("no key", "/v1/messages", _json(messages), 401, key="none", reaches_provider=False),
    Case("rate limited", "/v1/chat/completions", _json(chat), 429, key="tiny", calls=2),
    Case("prepaid credit used up", "/v1/chat/completions", _json(chat), 429, key="prepaid",
         reaches_provider=False),
]


def behaviour_for(case: Case, canary: str) -> dict[str, Any]:
    """The case's provider behaviour with the canary filled in."""
    out: dict[str, Any] = {}
    for name, value in case.behaviour.items():
        if value == "canary-reply":
            value = ["Sure: ", canary[:9], canary[9:], " is here."]  # split across events
        elif value == "canary-echo":
            value = _echo(case.behaviour.get("status", 400), canary)
        out[name] = value
    return out
