"""An OpenAI Chat Completions client served by a Google Gemini provider.

Request: system and developer messages become `systemInstruction`; the
assistant is Gemini's "model" role; tool calls become `functionCall` parts
and tool messages `functionResponse` parts (Gemini names the function in
a response, so its name is found from the call's id earlier in the
conversation); images become `inlineData` (base64 data URLs) or
`fileData` (other URLs); `max_tokens` becomes `maxOutputTokens`, `stop`
`stopSequences`, `n` `candidateCount`; `response_format` becomes
`responseMimeType` application/json with a `responseSchema` (the JSON
schema keywords Gemini's schema has; `$ref` is refused);
`reasoning_effort` becomes a `thinkingConfig` budget. Logprobs,
logit_bias, audio, predicted outputs, `parallel_tool_calls: false` and
any parameter not listed here are refused by name.

Answers: a functionCall without an id gets ``call_<n>`` (n counts the
calls of the answer); thought parts are left out (Chat Completions has no
field for them) but counted in `reasoning_tokens`; Gemini's stream has no
end marker, so the finish, the usage chunk (when asked) and ``[DONE]``
follow the provider's last event.

One module past 400 lines on purpose: it is one pair of formats, request,
answer and stream, and all three read the same tables (finish reasons,
usage, the structured-output and thinking mappings).
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from .gemini import STREAM
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
    "FINISH_REASONS",
    "THINKING_BUDGET",
    "CountTokensToGemini",
    "OpenAIToGemini",
    "gemini_usage_to_openai",
]

PROVIDER = "Google Gemini"
THINKING_BUDGET = {"none": 0, "minimal": 0, "low": 1024, "medium": 8192, "high": 24576}
FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}
# The JSON schema keywords Gemini's responseSchema (an OpenAPI subset) has.
_SCHEMA_KEYS = frozenset(
    {
        "type",
        "format",
        "title",
        "description",
        "nullable",
        "enum",
        "maxItems",
        "minItems",
        "properties",
        "required",
        "propertyOrdering",
        "items",
        "anyOf",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "pattern",
        "minProperties",
        "maxProperties",
    }
)
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    **OPENAI_UNUSED,
    "logprobs": (False, None),
    "top_logprobs": (0, None),
    "logit_bias": ({}, None),
    "parallel_tool_calls": (True, None),
    "user": (None,),
    "metadata": (None,),
}
_HANDLED = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "n",
        "stop",
        "stream",
        "stream_options",
        "presence_penalty",
        "frequency_penalty",
        "seed",
        "tools",
        "tool_choice",
        "response_format",
        "reasoning_effort",
    }
)


def _schema(node: Any) -> Any:
    """A JSON schema as Gemini's responseSchema: its own keywords only."""
    if isinstance(node, list):
        return [_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        raise Untranslatable("response_format.json_schema.schema", PROVIDER, "no $ref")
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key not in _SCHEMA_KEYS:
            continue
        if key == "properties":
            out[key] = {name: _schema(sub) for name, sub in value.items()}
        elif key == "type" and isinstance(value, list):
            kinds = [k for k in value if k != "null"]
            out["type"] = kinds[0] if kinds else "null"
            if "null" in value:
                out["nullable"] = True
        else:
            out[key] = _schema(value)
    return out


def _image(url: str) -> dict[str, Any]:
    inline = split_data_url(url)
    if inline is not None:
        return {"inlineData": {"mimeType": inline[0], "data": inline[1]}}
    ext = url.rsplit(".", 1)[-1].lower()
    media = {"png": "image/png", "webp": "image/webp", "gif": "image/gif"}.get(ext, "image/jpeg")
    return {"fileData": {"mimeType": media, "fileUri": url}}


def _parts(content: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for part in iter_blocks(content):
        kind = part.get("type")
        if kind == "text":
            out.append({"text": part.get("text", "")})
        elif kind == "image_url":
            image = part.get("image_url") or {}
            out.append(_image(image.get("url", "") if isinstance(image, dict) else str(image)))
        elif kind == "refusal":
            out.append({"text": part.get("refusal", "")})
        else:
            raise Untranslatable(f"messages[].content[].{kind}", PROVIDER)
    return out


def _contents(messages: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system parts, Gemini contents), consecutive turns of one role merged."""
    system: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool call id -> function name

    def add(role: str, parts: list[dict[str, Any]]) -> None:
        add_turn(out, role, "parts", parts)

    for m in messages:
        role = m.get("role")
        if role in ("system", "developer"):
            system += [p for p in _parts(m.get("content")) if "text" in p]
        elif role == "user":
            add("user", _parts(m.get("content")))
        elif role == "assistant":
            parts = [p for p in _parts(m.get("content")) if p.get("text") or "text" not in p]
            for call in m.get("tool_calls") or ():
                fn = call.get("function") or {}
                names[call.get("id", "")] = fn.get("name", "")
                parts.append(
                    {
                        "functionCall": {
                            "id": call.get("id", ""),
                            "name": fn.get("name", ""),
                            "args": tool_arguments(fn.get("arguments"), PROVIDER),
                        }
                    }
                )
            add("model", parts)
        elif role == "tool":
            ident = m.get("tool_call_id", "")
            content = m.get("content")
            text = (
                content
                if isinstance(content, str)
                else "".join(p.get("text", "") for p in _parts(content))
            )
            response = {"id": ident, "name": names.get(ident, ""), "response": {"result": text}}
            add("user", [{"functionResponse": response}])
        else:
            raise Untranslatable(f"messages[].role={role}", PROVIDER)
    return system, out


def _tools(tools: Any) -> list[dict[str, Any]]:
    declarations = []
    for tool in tools or ():
        if tool.get("type") != "function":
            raise Untranslatable("tools[].type", PROVIDER, "only function tools")
        fn = tool.get("function") or {}
        entry: dict[str, Any] = {"name": fn.get("name", "")}
        if fn.get("description"):
            entry["description"] = fn["description"]
        if fn.get("parameters"):
            entry["parameters"] = _schema(fn["parameters"])
        declarations.append(entry)
    return [{"functionDeclarations": declarations}] if declarations else []


def _tool_config(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if choice in ("auto", "none"):
        mode: dict[str, Any] = {"mode": choice.upper()}
    elif choice == "required":
        mode = {"mode": "ANY"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name", "")
        mode = {"mode": "ANY", "allowedFunctionNames": [name]}
    else:
        raise Untranslatable("tool_choice", PROVIDER)
    return {"functionCallingConfig": mode}


class OpenAIToGemini:
    provider = "gemini"

    def __init__(self) -> None:
        self.include_usage = False

    def request(self, body: dict[str, Any], model: str) -> tuple[str, dict[str, Any]]:
        check_params(body, _HANDLED, _NEUTRAL, PROVIDER)
        system, contents = _contents(required_array(body, "messages"))
        out: dict[str, Any] = {"contents": contents}
        if system:
            out["systemInstruction"] = {"parts": system}
        config: dict[str, Any] = {}
        pairs = (
            ("temperature", "temperature"),
            ("top_p", "topP"),
            ("presence_penalty", "presencePenalty"),
            ("frequency_penalty", "frequencyPenalty"),
            ("seed", "seed"),
        )
        for ours, theirs in pairs:
            if body.get(ours) is not None:
                config[theirs] = body[ours]
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if limit:
            config["maxOutputTokens"] = limit
        if (body.get("n") or 1) > 1:
            config["candidateCount"] = body["n"]
        stop = body.get("stop")
        if stop:
            config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
        fmt = body.get("response_format")
        if isinstance(fmt, dict) and fmt.get("type") not in (None, "text"):
            if fmt["type"] not in ("json_object", "json_schema"):
                raise Untranslatable("response_format.type", PROVIDER)
            config["responseMimeType"] = "application/json"
            schema = (fmt.get("json_schema") or {}).get("schema")
            if fmt["type"] == "json_schema" and schema:
                config["responseSchema"] = _schema(schema)
        effort = body.get("reasoning_effort")
        if effort is not None:
            if effort not in THINKING_BUDGET:
                raise Untranslatable("reasoning_effort", PROVIDER)
            config["thinkingConfig"] = {"thinkingBudget": THINKING_BUDGET[effort]}
        if config:
            out["generationConfig"] = config
        tools = _tools(body.get("tools"))
        if tools:
            out["tools"] = tools
        tool_config = _tool_config(body.get("tool_choice"))
        if tool_config is not None and tools:
            out["toolConfig"] = tool_config
        stream = bool(body.get("stream"))
        if stream:
            self.include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return (STREAM if stream else "generateContent"), out

    def response(self, body: dict[str, Any]) -> dict[str, Any]:
        choices = []
        for position, candidate in enumerate(body.get("candidates") or ()):
            text: list[str] = []
            calls: list[dict[str, Any]] = []
            for part in (candidate.get("content") or {}).get("parts") or ():
                call_of(part, text, calls)
            message: dict[str, Any] = {
                "role": "assistant",
                "content": "".join(text) if text else None,
                "refusal": None,
            }
            if calls:
                message["tool_calls"] = calls
            choices.append(
                {
                    "index": candidate.get("index", position),
                    "message": message,
                    "finish_reason": _finish(candidate.get("finishReason"), bool(calls)),
                    "logprobs": None,
                }
            )
        if not choices:  # the prompt itself was blocked
            message = {"role": "assistant", "content": None, "refusal": None}
            choices.append(
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": "content_filter",
                    "logprobs": None,
                }
            )
        return {
            "id": body.get("responseId", ""),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("modelVersion", ""),
            "choices": choices,
            "usage": gemini_usage_to_openai(body.get("usageMetadata") or {}),
        }

    def stream(self) -> GeminiStreamToOpenAI:
        return GeminiStreamToOpenAI(self.include_usage)


def call_of(part: dict[str, Any], text: list[str], calls: list[dict[str, Any]]) -> None:
    """Sort one Gemini part into the answer's text or its tool calls."""
    if part.get("thought"):
        return
    if "text" in part:
        text.append(part["text"])
    elif "functionCall" in part:
        fn = part["functionCall"]
        calls.append(
            {
                "id": fn.get("id") or f"call_{len(calls)}",
                "type": "function",
                "function": {
                    "name": fn.get("name", ""),
                    "arguments": msgspec.json.encode(fn.get("args") or {}).decode(),
                },
            }
        )


def _finish(reason: str | None, called: bool) -> str:
    if called and reason in (None, "STOP"):
        return "tool_calls"
    return FINISH_REASONS.get(reason or "STOP", "stop")


def gemini_usage_to_openai(usage: dict[str, Any]) -> dict[str, Any]:
    """Gemini counts thoughts apart from candidates; OpenAI's completion
    tokens include reasoning. Both count cached input within the prompt."""
    prompt = usage.get("promptTokenCount") or 0
    thoughts = usage.get("thoughtsTokenCount") or 0
    completion = (usage.get("candidatesTokenCount") or 0) + thoughts
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": usage.get("cachedContentTokenCount") or 0},
        "completion_tokens_details": {"reasoning_tokens": thoughts},
    }


class GeminiStreamToOpenAI:
    """Gemini stream chunks -> chat.completion.chunk events, one per
    candidate and chunk; a functionCall comes whole, so its tool call is
    one delta (id, name and all its arguments)."""

    def __init__(self, include_usage: bool) -> None:
        self.include_usage = include_usage
        self.id = ""
        self.model = ""
        self.created = int(time.time())
        self.started: set[int] = set()
        self.calls: dict[int, int] = {}  # candidate -> tool calls so far
        self.finished: set[int] = set()
        self.usage: dict[str, Any] = {}
        self.done = False

    def chunk(
        self, index: int, delta: dict[str, Any], finish: str | None = None
    ) -> tuple[None, dict[str, Any]]:
        return None, {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [
                {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}
            ],
        }

    def event(self, name: str, data: dict[str, Any]) -> list[Event]:
        if data is DONE:
            return []
        if "error" in data:
            self.done = True
            return [(None, OPENAI_STREAM_ERROR)]
        self.id = self.id or data.get("responseId", "")
        self.model = self.model or data.get("modelVersion", "")
        if data.get("usageMetadata"):
            self.usage = data["usageMetadata"]
        out: list[Event] = []
        for position, candidate in enumerate(data.get("candidates") or ()):
            index = candidate.get("index", position)
            if index not in self.started:
                self.started.add(index)
                out.append(self.chunk(index, {"role": "assistant", "content": ""}))
            for part in (candidate.get("content") or {}).get("parts") or ():
                text: list[str] = []
                calls: list[dict[str, Any]] = []
                call_of(part, text, calls)
                if text and text[0]:
                    out.append(self.chunk(index, {"content": text[0]}))
                for call in calls:
                    n = self.calls.get(index, 0)
                    self.calls[index] = n + 1
                    if not part["functionCall"].get("id"):
                        call["id"] = f"call_{n}"
                    out.append(self.chunk(index, {"tool_calls": [dict(call, index=n)]}))
            reason = candidate.get("finishReason")
            if reason and index not in self.finished:
                self.finished.add(index)
                out.append(self.chunk(index, {}, _finish(reason, bool(self.calls.get(index)))))
        return out

    def end(self) -> list[Event]:
        if self.done:
            return []
        self.done = True
        out: list[Event] = []
        for index in sorted(self.started - self.finished) or ([] if self.finished else [0]):
            out.append(self.chunk(index, {}, "tool_calls" if self.calls.get(index) else "stop"))
        if self.include_usage:
            _, last = self.chunk(0, {})
            last["choices"] = []
            last["usage"] = gemini_usage_to_openai(self.usage)
            out.append((None, last))
        out.append((None, DONE))
        return out


class CountTokensToGemini:
    """Anthropic's count_tokens served by Gemini's countTokens: the request
    is translated as a Messages request would be (through Chat Completions)
    and sent as the `generateContentRequest` to count; `totalTokens` comes
    back as `input_tokens`."""

    provider = "gemini"

    def request(self, body: dict[str, Any], model: str) -> tuple[str, dict[str, Any]]:
        from .anthropic_openai import AnthropicToOpenAI

        _, middle = AnthropicToOpenAI().request(body, model)
        _, content = OpenAIToGemini().request(middle, model)
        return "countTokens", {"generateContentRequest": {"model": f"models/{model}", **content}}

    def response(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"input_tokens": body.get("totalTokens") or 0}

    def stream(self) -> GeminiStreamToOpenAI:
        raise NotImplementedError("countTokens answers are never streamed")
