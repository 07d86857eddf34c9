"""An OpenAI Chat Completions client served by an Anthropic Messages provider.

Request: system and developer messages become `system`; tool messages
become `tool_result` blocks of a user turn (parallel results in one turn);
assistant `tool_calls` become `tool_use` blocks with the same ids; images
by URL or base64 data URL become image blocks; `max_tokens` (Anthropic
requires one) defaults to `DEFAULT_MAX_TOKENS`; `stop` becomes
`stop_sequences`; `response_format` becomes a forced tool whose input is
the answer (`OUTPUT_TOOL`), read back as the message's content;
`reasoning_effort` becomes `thinking` with a budget from `THINKING_BUDGET`.

What Anthropic cannot do is refused by name (`Untranslatable`): n > 1,
logprobs, penalties, logit_bias, seed, audio, predicted outputs, and any
parameter not listed here.

One module past 400 lines on purpose: it is one pair of formats, request,
answer and stream, and all three read the same tables (finish reasons,
usage, the structured-output and thinking mappings).
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from .translate import (
    DONE,
    OPENAI_STREAM_ERROR,
    OPENAI_UNUSED,
    Event,
    Untranslatable,
    add_turn,
    check_params,
    iter_blocks,
    required_array,
    split_data_url,
    tool_arguments,
)

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "FINISH_REASONS",
    "OUTPUT_TOOL",
    "THINKING_BUDGET",
    "OpenAIToAnthropic",
    "anthropic_usage_to_openai",
]

# Anthropic requires max_tokens; an OpenAI client need not send one.
DEFAULT_MAX_TOKENS = 4096
# The forced tool that carries structured output (response_format).
OUTPUT_TOOL = "structured_output"
THINKING_BUDGET = {"low": 1024, "medium": 4096, "high": 16384}
# Anthropic stop_reason -> OpenAI finish_reason
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
PROVIDER = "Anthropic Messages"

# Parameters taken as they are, or with a value that means "not used".
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    **OPENAI_UNUSED,
    "n": (1, None),
    "logprobs": (False, None),
    "top_logprobs": (0, None),
    "presence_penalty": (0, 0.0, None),
    "frequency_penalty": (0, 0.0, None),
    "logit_bias": ({}, None),
    "seed": (None,),
}
_HANDLED = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "stop",
        "stream",
        "stream_options",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "reasoning_effort",
        "user",
        "metadata",
    }
)


def _image(url: str) -> dict[str, Any]:
    inline = split_data_url(url)
    if inline is not None:
        media, data = inline
        return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):  # the usual message: its text alone
        return [{"type": "text", "text": content}]
    out: list[dict[str, Any]] = []
    for part in iter_blocks(content):
        kind = part.get("type")
        if kind == "text":
            out.append({"type": "text", "text": part.get("text", "")})
        elif kind == "image_url":
            image = part.get("image_url") or {}
            out.append(_image(image.get("url", "") if isinstance(image, dict) else str(image)))
        elif kind == "refusal":
            out.append({"type": "text", "text": part.get("refusal", "")})
        else:
            raise Untranslatable(f"messages[].content[].{kind}", PROVIDER)
    return out


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in iter_blocks(content) if p.get("type") == "text")


def _messages(messages: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system blocks, Anthropic messages), consecutive turns of one role merged."""
    system: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    for m in messages:
        role = m.get("role")
        if role in ("system", "developer"):
            system += [{"type": "text", "text": _text(m.get("content"))}]
        elif role == "user":
            add_turn(out, "user", "content", _parts(m.get("content")))
        elif role == "assistant":
            blocks = [b for b in _parts(m.get("content")) if b.get("text") or b["type"] != "text"]
            for call in m.get("tool_calls") or ():
                fn = call.get("function") or {}
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": call.get("id", ""),
                        "name": fn.get("name", ""),
                        "input": tool_arguments(fn.get("arguments"), PROVIDER),
                    }
                )
            add_turn(out, "assistant", "content", blocks)
        elif role == "tool":
            content = m.get("content")
            result: Any = content if isinstance(content, str) else _parts(content)
            add_turn(
                out,
                "user",
                "content",
                [
                    {
                        "type": "tool_result",
                        "tool_use_id": m.get("tool_call_id", ""),
                        "content": result,
                    }
                ],
            )
        else:
            raise Untranslatable(f"messages[].role={role}", PROVIDER)
    return system, out


def _tools(tools: Any) -> list[dict[str, Any]]:
    out = []
    for tool in tools or ():
        if tool.get("type") != "function":
            raise Untranslatable("tools[].type", PROVIDER, "only function tools")
        fn = tool.get("function") or {}
        entry: dict[str, Any] = {
            "name": fn.get("name", ""),
            "input_schema": fn.get("parameters") or {"type": "object", "properties": {}},
        }
        if fn.get("description"):
            entry["description"] = fn["description"]
        out.append(entry)
    return out


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if choice == "auto":
        return {"type": "auto"}
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "tool", "name": (choice.get("function") or {}).get("name", "")}
    raise Untranslatable("tool_choice", PROVIDER)


def _output_tool(fmt: Any) -> dict[str, Any] | None:
    """The forced tool standing for `response_format`, or None for plain text."""
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return None
    if fmt.get("type") == "json_object":
        schema: Any = {"type": "object"}
        description = "Give the answer as a JSON object."
    elif fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema") or {}
        schema = spec.get("schema") or {"type": "object"}
        description = spec.get("description") or "Give the answer in this shape."
    else:
        raise Untranslatable("response_format.type", PROVIDER)
    return {"name": OUTPUT_TOOL, "description": description, "input_schema": schema}


class OpenAIToAnthropic:
    provider = "anthropic"

    def __init__(self) -> None:
        self.include_usage = False
        self.structured = False

    def request(self, body: dict[str, Any], model: str) -> tuple[str, dict[str, Any]]:
        check_params(body, _HANDLED, _NEUTRAL, PROVIDER)
        system, messages = _messages(required_array(body, "messages"))
        out: dict[str, Any] = {"model": model, "messages": messages}
        if system:
            out["system"] = system
        out["max_tokens"] = (
            body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS
        )
        temperature = body.get("temperature")
        if temperature is not None:
            if temperature > 1:
                raise Untranslatable("temperature", PROVIDER, "at most 1")
            out["temperature"] = temperature
        if body.get("top_p") is not None:
            out["top_p"] = body["top_p"]
        stop = body.get("stop")
        if stop:
            out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
        if body.get("stream"):
            out["stream"] = True
            self.include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        if "tools" in body or "tool_choice" in body or "response_format" in body:
            self._add_tools(body, out)
        effort = body.get("reasoning_effort")
        if effort is not None and effort not in ("none", "minimal"):
            if effort not in THINKING_BUDGET:
                raise Untranslatable("reasoning_effort", PROVIDER)
            budget = min(THINKING_BUDGET[effort], out["max_tokens"] - 1)
            if budget < 1024:
                raise Untranslatable(
                    "reasoning_effort", PROVIDER, "thinking needs max_tokens above 1024"
                )
            out["thinking"] = {"type": "enabled", "budget_tokens": budget}
        user = body.get("user") or (body.get("metadata") or {}).get("user_id")
        if user:
            out["metadata"] = {"user_id": str(user)}
        return "messages", out

    def _add_tools(self, body: dict[str, Any], out: dict[str, Any]) -> None:
        """`tools` and `tool_choice`, with the forced tool of `response_format`."""
        tools = _tools(body.get("tools"))
        choice = _tool_choice(body.get("tool_choice"))
        output = _output_tool(body.get("response_format"))
        if output is not None:
            self.structured = True
            if not tools or (choice or {}).get("type") == "none":
                tools, choice = [output], {"type": "tool", "name": OUTPUT_TOOL}
            else:  # a tool call or the answer, in the given shape
                tools.append(output)
                if choice is None or choice["type"] == "auto":
                    choice = {"type": "any"}
        if tools and (choice or {}).get("type") != "none":
            out["tools"] = tools
        if choice is not None and tools:
            if body.get("parallel_tool_calls") is False and choice["type"] != "none":
                choice["disable_parallel_tool_use"] = True
            out["tool_choice"] = choice
        elif body.get("parallel_tool_calls") is False and tools:
            out["tool_choice"] = {"type": "auto", "disable_parallel_tool_use": True}

    def response(self, body: dict[str, Any]) -> dict[str, Any]:
        text: list[str] = []
        calls: list[dict[str, Any]] = []
        for block in body.get("content") or ():
            kind = block.get("type")
            if kind == "text":
                text.append(block.get("text", ""))
            elif kind == "tool_use":
                arguments = msgspec.json.encode(block.get("input") or {}).decode()
                if self.structured and block.get("name") == OUTPUT_TOOL:
                    text.append(arguments)
                    continue
                calls.append(
                    {
                        "id": block.get("id", ""),
                        "type": "function",
                        "function": {"name": block.get("name", ""), "arguments": arguments},
                    }
                )
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(text) if text else None,
            "refusal": None,
        }
        if calls:
            message["tool_calls"] = calls
        finish = FINISH_REASONS.get(body.get("stop_reason") or "", "stop")
        if finish == "tool_calls" and not calls:
            finish = "stop"  # the structured-output tool is the answer itself
        return {
            "id": body.get("id", ""),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", ""),
            "choices": [
                {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
            ],
            "usage": anthropic_usage_to_openai(body.get("usage") or {}),
        }

    def stream(self) -> AnthropicStreamToOpenAI:
        return AnthropicStreamToOpenAI(self.include_usage, self.structured)


def anthropic_usage_to_openai(usage: dict[str, Any]) -> dict[str, Any]:
    """Anthropic counts cache reads and writes apart from input_tokens;
    OpenAI's prompt_tokens include the cached ones."""
    read = usage.get("cache_read_input_tokens") or 0
    written = usage.get("cache_creation_input_tokens") or 0
    prompt = (usage.get("input_tokens") or 0) + read + written
    completion = usage.get("output_tokens") or 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": read},
    }


class AnthropicStreamToOpenAI:
    """Anthropic stream events -> chat.completion.chunk events.

    Text deltas become content deltas; a tool_use block becomes a tool call
    (its id and name first, then its argument deltas as they come); the
    structured-output tool's argument deltas become content. message_delta's
    stop_reason ends the choice; the usage chunk comes only when the client
    asked (`include_usage`), then ``[DONE]``.

    Chunks differ only in their delta and finish reason: what comes before
    the delta is encoded once the message's id and model are known, and
    each chunk is sent encoded (a text delta's, the usage chunk's, around
    the one value that varies)."""

    def __init__(self, include_usage: bool, structured: bool) -> None:
        self.include_usage = include_usage
        self.structured = structured
        self.created = int(time.time())
        self.usage: dict[str, Any] = {}
        self.tools: dict[int, int] = {}  # Anthropic block index -> OpenAI tool call index
        self.output_blocks: set[int] = set()
        self.finish: str | None = None
        self.done = False
        self.set_message("", "")

    def set_message(self, id: Any, model: Any) -> None:
        """Set the message's id and model, and the chunks' encoding before
        their choices (`lead`), up to their delta (`head`) and up to a text
        delta's text (`text_head`)."""
        self.id, self.model = id, model
        self.lead = (
            b'{"id":' + _encode(id)
            + b',"object":"chat.completion.chunk","created":' + _encode(self.created)
            + b',"model":' + _encode(model)
        )  # fmt: skip
        self.head = self.lead + b',"choices":[{"index":0,"delta":'
        self.text_head = self.head + b'{"content":'

    def chunk(self, delta: dict[str, Any]) -> Event:
        return None, self.head + _encode(delta) + _UNFINISHED

    def event(self, name: str, data: dict[str, Any]) -> list[Event]:
        kind = data.get("type", name)
        if kind == "content_block_delta":  # almost every event
            delta = data.get("delta") or {}
            if delta.get("type") == "text_delta":  # the chunk of {"content": text}
                return [(None, self.text_head + _encode(delta.get("text", "")) + _TEXT_END)]
            if delta.get("type") == "input_json_delta":
                index = data.get("index", 0)
                partial = delta.get("partial_json", "")
                if not partial:
                    return []
                if index in self.output_blocks:
                    return [self.chunk({"content": partial})]
                call = {"index": self.tools.get(index, 0), "function": {"arguments": partial}}
                return [self.chunk({"tool_calls": [call]})]
            return []  # thinking and signature deltas: Chat Completions has no field for them
        if kind == "message_start":
            message = data.get("message") or {}
            self.set_message(message.get("id", ""), message.get("model", ""))
            self.usage.update(message.get("usage") or {})
            return [(None, self.head + _FIRST_DELTA)]
        if kind == "content_block_start":
            block = data.get("content_block") or {}
            index = data.get("index", 0)
            if block.get("type") != "tool_use":
                return []
            if self.structured and block.get("name") == OUTPUT_TOOL:
                self.output_blocks.add(index)
                return []
            position = self.tools[index] = len(self.tools)
            call = {
                "index": position,
                "id": block.get("id", ""),
                "type": "function",
                "function": {"name": block.get("name", ""), "arguments": ""},
            }
            return [self.chunk({"tool_calls": [call]})]
        if kind == "message_delta":
            for key, value in (data.get("usage") or {}).items():
                if value is not None:
                    self.usage[key] = value
            reason = (data.get("delta") or {}).get("stop_reason")
            finish = FINISH_REASONS.get(reason or "", "stop")
            if finish == "tool_calls" and not self.tools:
                finish = "stop"
            self.finish = finish
            return [(None, self.head + _FINISHED[finish])]
        if kind == "message_stop":
            return self.end()
        if kind == "error":
            self.done = True
            return [(None, OPENAI_STREAM_ERROR)]
        return []  # ping, content_block_stop

    def end(self) -> list[Event]:
        if self.done:
            return []
        self.done = True
        out: list[Event] = []
        if self.finish is None:
            self.finish = "stop"
            out.append((None, self.head + _FINISHED["stop"]))
        if self.include_usage:
            usage = _encode(anthropic_usage_to_openai(self.usage))
            out.append((None, self.lead + b',"choices":[],"usage":' + usage + b"}"))
        out.append((None, DONE))
        return out


_encode = msgspec.json.encode
_TAIL = b',"logprobs":null}]}'
_UNFINISHED = b',"finish_reason":null' + _TAIL
_TEXT_END = b"}" + _UNFINISHED
_FIRST_DELTA = b'{"role":"assistant","content":""}' + _UNFINISHED
# The last chunk's delta and finish reason, by finish reason.
_FINISHED = {
    finish: b'{},"finish_reason":' + _encode(finish) + _TAIL
    for finish in {*FINISH_REASONS.values(), "stop"}
}
