"""Asking an OpenAI-style stream for its usage, and hiding that from the client.

OpenAI streams report usage only when the request sets
``stream_options.include_usage``; then every chunk also carries
``"usage": null`` and one extra chunk (``"choices": []``) carries the
counts. When the client did not ask, the meter asks on its behalf
(`ask_for_usage`) and installs `UsageChunkFilter`, which gives the client
exactly the bytes it would have had: the extra chunk is dropped and the
``"usage": null`` members are cut out. Only the top level of the request
body is re-encoded; every other value is carried as raw JSON.
"""

from __future__ import annotations

import re

import msgspec

from lunos_proxy.sse import EVENT_BOUNDARY, EVENT_ENDS, NOT_JSON

__all__ = ["UsageChunkFilter", "ask_for_usage"]

STREAM_USAGE_ENDPOINTS = frozenset({"chat/completions", "completions"})


class _StreamOptions(msgspec.Struct):
    include_usage: bool | None = None


def ask_for_usage(body: bytes) -> bytes | None:
    """The body with include_usage set, or None when the client already asked
    (or when the body cannot be read as such: it goes to the provider as is)."""
    try:
        fields = msgspec.json.decode(body, type=dict[str, msgspec.Raw])
    except NOT_JSON:
        return None  # e.g. a key that is not UTF-8: the provider answers it
    raw = fields.get("stream_options")
    options: dict[str, msgspec.Raw] = {}
    if raw is not None and bytes(raw) != b"null":
        try:
            if msgspec.json.decode(raw, type=_StreamOptions).include_usage:
                return None
            options = msgspec.json.decode(raw, type=dict[str, msgspec.Raw])
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None  # not ours to fix: the provider answers it
    options["include_usage"] = msgspec.Raw(b"true")
    fields["stream_options"] = msgspec.Raw(msgspec.json.encode(options))
    return msgspec.json.encode(fields)


class _Chunk(msgspec.Struct):
    choices: list[msgspec.Raw] | None = None
    usage: msgspec.Raw = msgspec.Raw(b"null")  # Raw takes any value, null included


_decode_chunk = msgspec.json.Decoder(_Chunk).decode
# A JSON string cannot hold a bare quote, so these match only the member
# itself, never text inside a completion.
_NULL_USAGE = re.compile(rb',[ \t]*"usage"[ \t]*:[ \t]*null|"usage"[ \t]*:[ \t]*null[ \t]*,[ \t]*')


def _is_usage_only(event: bytes) -> bool:
    for line in event.splitlines():
        if line.startswith(b"data:"):
            data = line[5:].strip()
            if data[:1] != b"{":
                return False
            try:
                chunk = _decode_chunk(data)
            except (msgspec.DecodeError, msgspec.ValidationError):
                return False
            return chunk.choices == [] and bytes(chunk.usage) != b"null"
    return False


class UsageChunkFilter:
    """Removes the usage the meter asked for from an OpenAI stream.

    Events pass whole: the bytes after the last complete event are held until
    the event completes (a partial event is of no use to the client anyway).
    Chunks that end on an event boundary and mention no usage pass as they are.
    """

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held = b""

    def feed(self, data: bytes) -> bytes:
        if self._held:
            data = self._held + data
            self._held = b""
        if b'"usage"' not in data and data.endswith(EVENT_ENDS):
            return data
        cut = 0
        for m in EVENT_BOUNDARY.finditer(data):
            cut = m.end()
        if cut < len(data):
            data, self._held = data[:cut], data[cut:]
        if b'"usage"' not in data:
            return data
        out: list[bytes] = []
        start = 0
        for m in EVENT_BOUNDARY.finditer(data):
            event = data[start : m.end()]
            start = m.end()
            if b'"usage"' not in event:
                out.append(event)
            elif not _is_usage_only(event):
                out.append(_NULL_USAGE.sub(b"", event))
        return b"".join(out)

    def flush(self) -> bytes:
        held, self._held = self._held, b""
        if b'"usage"' not in held:
            return held
        return b"" if _is_usage_only(held) else _NULL_USAGE.sub(b"", held)
