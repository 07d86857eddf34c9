"""An Anthropic Messages client served by an OpenAI Chat Completions provider.

Request: `system` becomes the first message; `tool_result` blocks become
`tool` messages (placed right after the assistant turn that called them,
before the rest of the user's turn); `tool_use` blocks become `tool_calls`
with the same ids; image blocks become `image_url` parts (base64 as a data
URL); `max_tokens` becomes `max_completion_tokens`; `stop_sequences`
becomes `stop`; `thinking` becomes `reasoning_effort` by its budget; the
stream always asks for usage, which the client sees in `message_delta`.
Thinking blocks in the history are left out: Chat Completions takes no
reasoning input. `top_k`, documents, server tools, MCP servers and any
parameter not listed here are refused by name.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ..sse import NOT_JSON
from .translate import (
    DONE,
    Event,
    Untranslatable,
    field_type_error,
    iter_blocks,
    required_array,
)

__all__ = ["STOP_REASONS", "AnthropicToOpenAI", "openai_usage_to_anthropic"]

PROVIDER = "OpenAI Chat Completions"
# OpenAI finish_reason -> Anthropic stop_reason
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
_HANDLED = frozenset(
    {
        "model",
        "messages",
        "system",
        "max_tokens",
        "temperature",
        "top_p",
        "stop_sequences",
        "stream",
        "tools",
        "tool_choice",
        "thinking",
        "metadata",
        "service_tier",
    }
)


def effort_for(budget: int) -> str:
    """reasoning_effort for an Anthropic thinking budget (the inverse of
    openai_anthropic.THINKING_BUDGET)."""
    if budget < 2048:
        return "low"
    return "medium" if budget < 8192 else "high"


def _image(source: dict[str, Any]) -> dict[str, Any]:
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    elif source.get("type") == "url":
        url = source.get("url", "")
    else:
        raise Untranslatable("messages[].content[].source.type", PROVIDER)
    return {"type": "image_url", "image_url": {"url": url}}


def _parts(blocks: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for block in blocks:
        kind = block.get("type")
        if kind == "text":
            out.append({"type": "text", "text": block.get("text", "")})
        elif kind == "image":
            out.append(_image(block.get("source") or {}))
        else:
            raise Untranslatable(f"{where}.{kind}", PROVIDER)
    return out


def _user(content: Any) -> list[dict[str, Any]]:
    """One user turn: its tool results as tool messages first, then the rest."""
    results: list[dict[str, Any]] = []
    rest: list[dict[str, Any]] = []
    for block in iter_blocks(content):
        if block.get("type") == "tool_result":
            inner = block.get("content")
            parts = _parts(list(iter_blocks(inner)), "messages[].content[].content[]")
            if any(p["type"] != "text" for p in parts):
                raise Untranslatable(
                    "messages[].content[].content[].image", PROVIDER, "tool results are text"
                )
            text = "".join(p["text"] for p in parts)
            if block.get("is_error"):
                text = f"Error: {text}"
            results.append(
                {"role": "tool", "tool_call_id": block.get("tool_use_id", ""), "content": text}
            )
        else:
            rest.append(block)
    out = results
    if rest:
        parts = _parts(rest, "messages[].content[]")
        plain = all(p["type"] == "text" for p in parts)
        content_out: Any = "".join(p["text"] for p in parts) if plain else parts
        out.append({"role": "user", "content": content_out})
    return out


def _assistant(content: Any) -> dict[str, Any]:
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in iter_blocks(content):
        kind = block.get("type")
        if kind == "text":
            text.append(block.get("text", ""))
        elif kind == "tool_use":
            calls.append(
                {
                    "id": block.get("id", ""),
                    "type": "function",
                    "function": {
                        "name": block.get("name", ""),
                        "arguments": msgspec.json.encode(block.get("input") or {}).decode(),
                    },
                }
            )
        elif kind in ("thinking", "redacted_thinking"):
            continue
        else:
            raise Untranslatable(f"messages[].content[].{kind}", PROVIDER)
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text else None}
    if calls:
        message["tool_calls"] = calls
    return message


def _tools(tools: Any) -> list[dict[str, Any]]:
    out = []
    for tool in tools or ():
        if tool.get("type") not in (None, "custom"):
            raise Untranslatable("tools[].type", PROVIDER, "only client tools")
        fn: dict[str, Any] = {
            "name": tool.get("name", ""),
            "parameters": tool.get("input_schema") or {"type": "object", "properties": {}},
        }
        if tool.get("description"):
            fn["description"] = tool["description"]
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice: dict[str, Any]) -> Any:
    kind = choice.get("type")
    if kind == "auto":
        return "auto"
    if kind == "any":
        return "required"
    if kind == "none":
        return "none"
    if kind == "tool":
        return {"type": "function", "function": {"name": choice.get("name", "")}}
    raise Untranslatable("tool_choice.type", PROVIDER)


class AnthropicToOpenAI:
    provider = "openai"

    def request(self, body: dict[str, Any], model: str) -> tuple[str, dict[str, Any]]:
        for key in body:
            if key not in _HANDLED:
                raise Untranslatable(key, PROVIDER)
        turns = required_array(body, "messages")
        messages: list[dict[str, Any]] = []
        system = body.get("system")
        if not isinstance(system, str | list | None):
            raise field_type_error(body, "system", "str | array")
        if system:
            text = (
                system
                if isinstance(system, str)
                else "".join(b.get("text", "") for b in iter_blocks(system))
            )
            messages.append({"role": "system", "content": text})
        for m in turns:
            if m.get("role") == "assistant":
                messages.append(_assistant(m.get("content")))
            elif m.get("role") == "user":
                messages += _user(m.get("content"))
            else:
                raise Untranslatable("messages[].role", PROVIDER)
        out: dict[str, Any] = {"model": model, "messages": messages}
        if body.get("max_tokens") is not None:
            out["max_completion_tokens"] = body["max_tokens"]
        for key in ("temperature", "top_p"):
            if body.get(key) is not None:
                out[key] = body[key]
        if body.get("stop_sequences"):
            out["stop"] = list(body["stop_sequences"])
        if body.get("stream"):
            out["stream"] = True
            out["stream_options"] = {"include_usage": True}
        tools = _tools(body.get("tools"))
        if tools:
            out["tools"] = tools
        choice = body.get("tool_choice")
        if isinstance(choice, dict):
            if tools or choice.get("type") == "none":
                out["tool_choice"] = _tool_choice(choice)
            if choice.get("disable_parallel_tool_use") and tools:
                out["parallel_tool_calls"] = False
        thinking = body.get("thinking")
        if isinstance(thinking, dict) and thinking.get("type") == "enabled":
            out["reasoning_effort"] = effort_for(int(thinking.get("budget_tokens") or 0))
        user = (body.get("metadata") or {}).get("user_id")
        if user:
            out["user"] = str(user)
        tier = body.get("service_tier")
        if tier not in (None, "auto"):
            raise Untranslatable("service_tier", PROVIDER)
        return "chat/completions", out

    def response(self, body: dict[str, Any]) -> dict[str, Any]:
        choices = body.get("choices") or [{}]
        choice = choices[0]
        message = choice.get("message") or {}
        content: list[dict[str, Any]] = []
        text = message.get("content") or message.get("refusal")
        if text:
            content.append({"type": "text", "text": text})
        for call in message.get("tool_calls") or ():
            fn = call.get("function") or {}
            content.append(
                {
                    "type": "tool_use",
                    "id": call.get("id", ""),
                    "name": fn.get("name", ""),
                    "input": _input(fn.get("arguments")),
                }
            )
        return {
            "id": body.get("id", ""),
            "type": "message",
            "role": "assistant",
            "model": body.get("model", ""),
            "content": content,
            "stop_reason": STOP_REASONS.get(choice.get("finish_reason") or "", "end_turn"),
            "stop_sequence": None,
            "usage": openai_usage_to_anthropic(body.get("usage") or {}),
        }

    def stream(self) -> OpenAIStreamToAnthropic:
        return OpenAIStreamToAnthropic()


def _input(arguments: Any) -> Any:
    if not isinstance(arguments, str):
        return arguments or {}
    try:
        value = msgspec.json.decode(arguments or "{}")
    except NOT_JSON:
        return {}
    return value if isinstance(value, dict) else {}


def openai_usage_to_anthropic(usage: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's prompt_tokens include the cached ones; Anthropic's
    input_tokens do not (cache reads are counted apart)."""
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return {
        "input_tokens": max(0, (usage.get("prompt_tokens") or 0) - cached),
        "output_tokens": usage.get("completion_tokens") or 0,
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": 0,
    }


class OpenAIStreamToAnthropic:
    """chat.completion.chunk events -> Anthropic stream events.

    message_start comes with the first chunk; a content delta opens a text
    block, a tool call with an id opens a tool_use block (its argument
    deltas become input_json_delta); a finish_reason closes the open block.
    OpenAI reports usage after the finish, so message_delta (stop reason
    and full usage) and message_stop are sent at ``[DONE]`` or when the
    stream ends. Anthropic blocks cannot interleave: parallel tool calls
    are streamed one after the other, as OpenAI sends them; an argument
    delta for a call whose block was already closed has nowhere to go."""

    def __init__(self) -> None:
        self.started = False
        self.open: tuple[str, int] | None = None  # ("text" | tool call index, block index)
        self.blocks = 0
        self.tool_blocks: dict[int, int] = {}
        self.stop: str | None = None
        self.usage: dict[str, Any] = {}
        self.done = False

    def _start(self, data: dict[str, Any]) -> list[Event]:
        self.started = True
        message = {
            "id": data.get("id", ""),
            "type": "message",
            "role": "assistant",
            "model": data.get("model", ""),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return [("message_start", {"type": "message_start", "message": message})]

    def _close(self) -> list[Event]:
        if self.open is None:
            return []
        index = self.open[1]
        self.open = None
        return [("content_block_stop", {"type": "content_block_stop", "index": index})]

    def _open(self, key: str, block: dict[str, Any]) -> list[Event]:
        out = self._close()
        index = self.blocks
        self.blocks += 1
        self.open = (key, index)
        start = {"type": "content_block_start", "index": index, "content_block": block}
        return [*out, ("content_block_start", start)]

    def _delta(self, delta: dict[str, Any]) -> Event:
        assert self.open is not None
        body = {"type": "content_block_delta", "index": self.open[1], "delta": delta}
        return "content_block_delta", body

    def event(self, name: str, data: dict[str, Any]) -> list[Event]:
        if data is DONE:
            return self.end()
        if "error" in data:
            self.done = True
            err = {"type": "api_error", "message": "The provider reported an error mid-stream."}
            return [("error", {"type": "error", "error": err})]
        out: list[Event] = [] if self.started else self._start(data)
        if data.get("usage"):
            self.usage = data["usage"]
        for choice in data.get("choices") or ():
            delta = choice.get("delta") or {}
            text = delta.get("content") or delta.get("refusal")
            if text:
                if self.open is None or self.open[0] != "text":
                    out += self._open("text", {"type": "text", "text": ""})
                out.append(self._delta({"type": "text_delta", "text": text}))
            for call in delta.get("tool_calls") or ():
                position = call.get("index", 0)
                fn = call.get("function") or {}
                key = f"tool{position}"
                if call.get("id") and position not in self.tool_blocks:
                    block = {
                        "type": "tool_use",
                        "id": call["id"],
                        "name": fn.get("name", ""),
                        "input": {},
                    }
                    out += self._open(key, block)
                    self.tool_blocks[position] = self.blocks - 1
                if fn.get("arguments") and self.open is not None and self.open[0] == key:
                    partial = {"type": "input_json_delta", "partial_json": fn["arguments"]}
                    out.append(self._delta(partial))
            if choice.get("finish_reason"):
                self.stop = STOP_REASONS.get(choice["finish_reason"], "end_turn")
                out += self._close()
        return out

    def end(self) -> list[Event]:
        if self.done:
            return []
        self.done = True
        out = [] if self.started else self._start({})
        out += self._close()
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": self.stop or "end_turn", "stop_sequence": None},
            "usage": openai_usage_to_anthropic(self.usage),
        }
        return [*out, ("message_delta", delta), ("message_stop", {"type": "message_stop"})]
