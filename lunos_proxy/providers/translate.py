"""Translation between wire formats: the contract and the table of pairs.

A client speaks one format (`Exchange.wire`: "openai" Chat Completions or
"anthropic" Messages); a provider speaks its own (`Adapter.speaks`). When
they match, nothing here runs and the bytes pass untouched. When they do
not, the forwarder asks `translation_for(client, provider, endpoint)` for a
`Translation`, which

- turns the client's request body into the provider's (`request`), or
  raises `Untranslatable` naming the parameter the provider has no
  equivalent for: a 400, never a parameter silently dropped;
- turns a provider's JSON answer into the client's (`response`);
- makes a `StreamTranslator` that turns the provider's stream into the
  client's event by event, as it arrives (`stream`).

Each pair lives in its own module (openai_anthropic.py, anthropic_openai.py,
openai_gemini.py); a pair without a module of its own goes through OpenAI
Chat Completions, the richest format, in both directions (the Anthropic
client to a Gemini provider is the two steps chained).

Translations work on decoded JSON (plain dicts): the request is decoded
once and encoded once, and a stream event is decoded, rewritten and
encoded as it passes (a translator whose events repeat the same fields
may send them encoded, that part encoded once). Content is only ever
carried, never kept: nothing here logs, counts or stores a value.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import msgspec

from ..errors import BadRequest
from ..sse import NOT_JSON, SSEParser

__all__ = [
    "DONE",
    "Event",
    "MalformedAnswer",
    "StreamTranslator",
    "Translation",
    "Untranslatable",
    "decode_object",
    "field_type_error",
    "required_array",
]

# The client endpoints a translation may serve, by client wire format (the
# chat endpoint first); `translation_for` says which provider formats each
# reaches.
TRANSLATED_ENDPOINTS: dict[str, tuple[str, ...]] = {
    "openai": ("chat/completions",),
    "anthropic": ("messages", "messages/count_tokens"),
}

# An output event: (SSE event name or None, payload). The payload is a JSON
# object, decoded or already encoded (a translator that encodes what is
# constant in its events once), or DONE for OpenAI's closing "[DONE]".
DONE: dict[str, Any] = {}
Event = tuple[str | None, dict[str, Any] | bytes]

_encode = msgspec.json.encode
_decode = msgspec.json.decode


class Untranslatable(BadRequest):
    """A request parameter the provider's format cannot express.

    The message names the parameter when it is one of the names the client
    formats document (`known`): a name the client made up is part of its
    request, which an error never echoes, so that one goes unnamed."""

    code = "unsupported_parameter"

    def __init__(self, param: str, provider: str = "provider's", why: str = "") -> None:
        detail = f" ({why})" if why else ""
        named = param if known(param) else None
        what = f"The parameter '{named}'" if named else "A parameter of this request"
        super().__init__(
            f"{what} cannot be translated to the {provider} format "
            f"this model is served in{detail}.",
            param=named,
        )


# Documented names of the client formats (request parameters, content part
# types, roles): the only names an error message repeats.
_KNOWN_NAMES = frozenset(
    {
        # OpenAI Chat Completions
        "audio", "frequency_penalty", "function_call", "functions", "logit_bias", "logprobs",
        "max_completion_tokens", "max_tokens", "messages", "metadata", "modalities", "model", "n",
        "parallel_tool_calls", "prediction", "presence_penalty", "prompt_cache_key",
        "reasoning_effort", "response_format", "safety_identifier", "seed", "service_tier",
        "stop", "store", "stream", "stream_options", "temperature", "tool_choice", "tools",
        "top_logprobs", "top_p", "user", "verbosity", "web_search_options",
        # Anthropic Messages
        "container", "context_management", "mcp_servers", "stop_sequences", "system",
        "thinking", "top_k", "output_format",
        # content part types and roles
        "text", "image_url", "input_audio", "file", "refusal", "image", "document",
        "search_result", "redacted_thinking", "tool_use", "tool_result", "server_tool_use",
        "web_search_tool_result", "container_upload", "developer", "assistant", "tool",
    }
)  # fmt: skip


def known(param: str) -> bool:
    """Whether every name in a parameter path ("messages[].content[].file")
    is a documented one (or one of our own path words)."""
    if not param:
        return False
    for name in param.replace("[]", "").replace("=", ".").split("."):
        if name not in _KNOWN_NAMES and name not in _PATH_WORDS:
            return False
    return True


_PATH_WORDS = frozenset(
    {"content", "role", "type", "function", "arguments", "tool_calls", "source", "json_schema",
     "schema", "disable_parallel_tool_use"}
)  # fmt: skip


def decode_object(data: bytes, what: str = "request body") -> dict[str, Any]:
    try:
        value = msgspec.json.decode(data)
    except NOT_JSON:
        raise BadRequest(f"The {what} is not valid JSON.") from None
    if not isinstance(value, dict):
        raise BadRequest(f"The {what} must be a JSON object.")
    return value


class EventTranslator(Protocol):
    """One direction of a stream, one decoded event at a time.

    `event` gets the SSE event name ("message" when unnamed) and its decoded
    data, or `DONE` for OpenAI's ``[DONE]``; `end` is called once when the
    provider's stream ends. Both return the client's events to send now."""

    def event(self, name: str, data: dict[str, Any]) -> list[Event]: ...

    def end(self) -> list[Event]: ...


class Chain:
    """Two event translators one after the other (provider -> middle -> client)."""

    def __init__(self, first: EventTranslator, second: EventTranslator) -> None:
        self.first, self.second = first, second

    def _through(self, events: list[Event]) -> list[Event]:
        out: list[Event] = []
        for name, data in events:
            value = _decode(data) if isinstance(data, bytes) else data
            out += self.second.event(name or "message", value)
        return out

    def event(self, name: str, data: dict[str, Any]) -> list[Event]:
        return self._through(self.first.event(name, data))

    def end(self) -> list[Event]:
        return self._through(self.first.end()) + self.second.end()


def encode_events(events: list[Event]) -> bytes:
    out = []
    for name, data in events:
        if not isinstance(data, bytes):
            data = b"[DONE]" if data is DONE else _encode(data)
        if name:
            out.append(b"event: " + name.encode() + b"\n")
        out.append(b"data: ")
        out.append(data)
        out.append(b"\n\n")
    return b"".join(out)


class StreamTranslator:
    """The forwarder's side of a translated stream: provider bytes in (any
    split), client bytes out. Every event is translated as soon as it is
    whole; nothing but the unfinished event is held.

    Decoding an event is also its check, the one `first_invalid_event`
    makes of an untranslated stream: an event whose data is not a JSON
    object (nor OpenAI's ``[DONE]``) sets `broken`, and `feed` returns the
    events before it, translated, and none after."""

    def __init__(self, events: EventTranslator) -> None:
        self.parser = SSEParser()
        self.events = events
        self.ended = False
        self.broken = False

    def feed(self, data: bytes) -> bytes:
        out: list[Event] = []
        translate = self.events.event
        for name, raw in self.parser.events(data):
            if raw == b"[DONE]":
                out += translate(name, DONE)
                continue
            try:
                value = _decode(raw)
            except NOT_JSON:
                value = None
            if not isinstance(value, dict):
                self.broken = True
                break
            try:
                out += translate(name, value)
            except _SHAPE_ERRORS:
                # An event not in its format's shape carries nothing the
                # client could use: it is passed over, the stream goes on.
                continue
        return encode_events(out)

    def flush(self) -> bytes:
        if self.ended:
            return b""
        self.ended = True
        return encode_events(self.events.end())


class Translation(Protocol):
    """One client format served by one provider format."""

    provider: str  # the provider's wire format

    def request(self, body: dict[str, Any], model: str) -> tuple[str, dict[str, Any]]:
        """(the provider's endpoint, the provider's body) for a client body."""
        ...

    def response(self, body: dict[str, Any]) -> dict[str, Any]: ...

    def stream(self) -> EventTranslator: ...


def iter_blocks(content: Any) -> Iterator[dict[str, Any]]:
    """Content as a list of blocks: a bare string is one text block."""
    if isinstance(content, str):
        yield {"type": "text", "text": content}
    elif isinstance(content, list):
        for block in content:
            if isinstance(block, dict):
                yield block


def required_array(body: dict[str, Any], name: str) -> list[Any]:
    """The array a format requires at `name` (its turns); anything else is
    a 400 on that param, never read as an empty conversation."""
    value = body.get(name)
    if isinstance(value, list):
        return value
    raise field_type_error(body, name, "array")


def field_type_error(body: dict[str, Any], name: str, expected: str) -> BadRequest:
    """A 400 on a top-level field, worded as parse.py words msgspec's: it
    names the JSON type sent, never the value."""
    if name not in body:
        problem = f"Object missing required field {name}"
    else:
        problem = f"Expected {expected}, got {_json_type(body[name])} - at {name}"
    return BadRequest(f"Invalid request: {problem}", param=name)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    for kind, name in ((bool, "bool"), (str, "str"), (int, "int"), (float, "float"),
                       (dict, "object"), (list, "array")):  # fmt: skip
        if isinstance(value, kind):
            return name
    return "value"


def translate_request(
    translation: Translation, body: bytes, model: str, model_in_body: bool
) -> tuple[str, bytes]:
    """(the provider's endpoint, its body) for a client's request body; a
    body not in its format's shape (a string where a list of messages
    belongs) is a 400 that names no value."""
    request = decode_object(body)
    try:
        endpoint, out = translation.request(request, model)
    except _SHAPE_ERRORS:
        raise BadRequest(
            "The request body does not have the shape its API documents, so it cannot be "
            "translated for this model's provider."
        ) from None
    if not model_in_body:
        out.pop("model", None)  # Azure: the deployment is in the path
    return endpoint, _encode(out)


class MalformedAnswer(Exception):
    """A provider's answer that is JSON but not in the shape its format documents."""


# What reading a value of the wrong shape raises (a string where a list of
# blocks belongs, a number where an object does).
_SHAPE_ERRORS = (AttributeError, TypeError, KeyError, ValueError, IndexError)


def translate_response(translation: Translation, body: bytes) -> bytes:
    """A provider's JSON answer (already checked to be an object) in the
    client's format; `MalformedAnswer` when it is not in its format's shape."""
    try:
        return _encode(translation.response(decode_object(body, "provider's answer")))
    except (*_SHAPE_ERRORS, BadRequest):
        raise MalformedAnswer from None


# -- helpers the OpenAI-client translations share ----------------------------------

# The error event a translated OpenAI stream ends with when the provider
# reports one mid-stream (its text, which may quote the prompt, is dropped).
OPENAI_STREAM_ERROR: dict[str, Any] = {
    "error": {
        "message": "The provider reported an error mid-stream.",
        "type": "server_error",
        "param": None,
        "code": "upstream_error",
    }
}


# Chat Completions parameters that no other provider format has, taken only
# with a value that means "not used"; each pair adds its own to these.
OPENAI_UNUSED: dict[str, tuple[Any, ...]] = {
    "audio": (None,),
    "modalities": (["text"], None),
    "prediction": (None,),
    "functions": (None,),
    "function_call": (None,),
    "web_search_options": (None,),
    "store": (False, None),
    "verbosity": (None,),
    "service_tier": ("auto", "default", None),
}


def check_params(
    body: dict[str, Any],
    handled: frozenset[str],
    neutral: dict[str, tuple[Any, ...]],
    provider: str,
) -> None:
    """Refuse every parameter that is neither translated (`handled`) nor
    set to a value meaning "not used" (`neutral`)."""
    if handled.issuperset(body):  # the usual body: every key translated
        return
    for key, value in body.items():
        if key in handled:
            continue
        if key not in neutral or value not in neutral[key]:
            raise Untranslatable(key, provider)


def split_data_url(url: str) -> tuple[str, str] | None:
    """(media type, base64 data) of a data URL, or None for any other URL."""
    if not url.startswith("data:"):
        return None
    head, _, data = url.partition(",")
    return head[5:].split(";")[0] or "image/png", data


def tool_arguments(raw: Any, provider: str) -> Any:
    """An OpenAI tool call's arguments (a JSON string) as an object."""
    if not isinstance(raw, str):
        return raw or {}
    try:
        value = msgspec.json.decode(raw or "{}")
    except NOT_JSON:
        raise Untranslatable(
            "messages[].tool_calls[].function.arguments", provider, "not a JSON object"
        ) from None
    return value if isinstance(value, dict) else {}


def add_turn(turns: list[dict[str, Any]], role: str, key: str, items: list[Any]) -> None:
    """Append a turn, merged into the last one when it has the same role
    (both Anthropic and Gemini want turns to alternate)."""
    if not items:
        return
    if turns and turns[-1]["role"] == role:
        turns[-1][key] += items
    else:
        turns.append({"role": role, key: items})
