"""An incremental server-sent-events parser for the forwarder's copy loop.

    parser = SSEParser()
    for event in parser.feed(chunk):      # any split of the stream, any size
        if event.event == "message_delta": ...
        use(event.data)                   # the data lines, joined by b"\\n"

    for name, data in parser.events(chunk):  # the same events, no object each

Network chunks split events anywhere (mid-line, mid-``\\r\\n``), and one chunk
may carry many events. The parser keeps only the event being read, never
the stream: a line is cut once, and a very large event (hundreds of KiB) is
scanned without rescanning what was already searched. It follows the
WHATWG rules that matter here: ``\\n``, ``\\r\\n`` and ``\\r`` end lines,
lines starting with ``:`` are comments, an empty line dispatches, one
space after the colon is dropped, unknown fields are ignored, and an event
with no data line is not dispatched. Events in the form both providers
send (an optional event line, one data line) are taken one regex match
each where a chunk begins with them, not line by line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

import msgspec

__all__ = [
    "EVENT_BOUNDARY",
    "EVENT_ENDS",
    "NOT_JSON",
    "SSEEvent",
    "SSEParser",
    "first_invalid_event",
    "is_json_object",
]

# The blank line that ends an event, as providers send it.
EVENT_BOUNDARY = re.compile(rb"\r\n\r\n|\n\n|\r\r")
EVENT_ENDS = (b"\n\n", b"\r\r", b"\r\n\r\n")  # for bytes.endswith

# One whole event in the form both providers send: an optional "event:
# NAME" line, one "data: DATA" line, a blank line; or else (the last group)
# the rest of the chunk, from where such an event does not begin. Each
# offset is tried once, so a chunk costs its length, hostile or not (a
# search for the next event, retried at every offset, would be quadratic).
_USUAL_EVENTS = re.compile(rb"(?:event: ([^\n]*+)\n)?data: ([^\n]*+)\n\n|([\s\S]+)")


class _Names(dict[bytes, str]):
    """An event's name from its "event:" line's value (b"" without one):
    the names Anthropic's events have are decoded once, any other each
    time it comes (and not kept: a stream's names are the provider's to
    choose)."""

    def __missing__(self, raw: bytes) -> str:
        return raw.decode("utf-8", "replace") or "message"


_NAMES = _Names(
    {b"": "message"}
    | {
        name.encode(): name
        for name in (
            "message_start", "content_block_start", "content_block_delta", "content_block_stop",
            "message_delta", "message_stop", "ping", "error",
        )
    }
)  # fmt: skip
_name = _NAMES.__getitem__


class SSEEvent:
    __slots__ = ("data", "event", "id")

    def __init__(self, event: str, data: bytes, id: str | None = None) -> None:
        self.event = event  # "message" when the stream names none
        self.data = data
        self.id = id

    def __repr__(self) -> str:
        return f"SSEEvent({self.event!r}, {len(self.data)} bytes)"


class SSEParser:
    __slots__ = ("_buf", "_cr", "_data", "_event", "_id", "_scanned")

    def __init__(self) -> None:
        self._buf = bytearray()  # the unfinished line
        self._scanned = 0  # how much of _buf is known to hold no line end
        self._cr = False  # the last chunk ended in "\r": a "\n" next is part of it
        self._data: list[bytes] = []
        self._event = ""
        self._id: str | None = None

    def feed(self, chunk: bytes) -> Iterable[SSEEvent]:
        """The events that `chunk` completes, in order."""
        usual, rest = self._usual(chunk)
        id = self._id
        events = [SSEEvent(name, data, id) for name, data in usual]
        if rest:
            events += self._other(rest)
        return events

    def events(self, chunk: bytes) -> list[tuple[str, bytes]]:
        """(name, data) of the events that `chunk` completes: what `feed`
        gives, without an object for each usual event."""
        usual, rest = self._usual(chunk)
        if rest:
            usual += [(e.event, e.data) for e in self._other(rest)]
        return usual

    def _usual(self, chunk: bytes) -> tuple[list[tuple[str, bytes]], bytes]:
        """(name, data) of the usual events `chunk` begins with, when no
        event is begun before it, and the rest of it."""
        out: list[tuple[str, bytes]] = []
        if self._cr or self._buf or self._data or self._event or b"\r" in chunk:
            return out, chunk  # (a "\r" ends a line, where [^\n] would take it in)
        for name, data, rest in _USUAL_EVENTS.findall(chunk):
            if rest:
                return out, rest
            out.append((_name(name), data))
        return out, b""

    def _other(self, chunk: bytes) -> Iterable[SSEEvent]:
        if (
            chunk.endswith(b"\n\n")
            and not (self._cr or self._buf or self._data or self._event)
            and b"\r" not in chunk
        ):
            return self._whole(chunk)
        return self._lines(chunk)

    def _whole(self, chunk: bytes) -> list[SSEEvent]:
        """`feed` for a chunk of whole events begun on a boundary (what the
        forwarder passes on): cut at the blank lines, and an event of one
        data line, named or not (almost every event), taken as it is,
        without going line by line. What follows the last boundary is "" or
        one more blank line."""
        out = []
        blocks = chunk.split(b"\n\n")
        for i in range(len(blocks) - 1):
            block = blocks[i]
            if block[:5] == b"data:":
                if b"\n" not in block:
                    data = block[6:] if block[5:6] == b" " else block[5:]
                    out.append(SSEEvent("message", data, self._id))
                    continue
            elif block[:7] == b"event: ":
                # Anthropic's events: "event: NAME\ndata: DATA"
                end = block.find(b"\n")
                if block[end + 1 : end + 6] == b"data:" and block.find(b"\n", end + 1) == -1:
                    name = block[7:end].decode("utf-8", "replace") or "message"
                    start = end + 7 if block[end + 6 : end + 7] == b" " else end + 6
                    out.append(SSEEvent(name, block[start:], self._id))
                    continue
            for line in block.split(b"\n"):
                event = self._line(line)
                if event is not None:
                    out.append(event)
            event = self._line(b"")
            if event is not None:
                out.append(event)
        if blocks[-1]:
            self._line(b"")  # a blank line with no data: it dispatches nothing
        return out

    def _lines(self, chunk: bytes) -> Iterator[SSEEvent]:
        if self._cr and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._cr = False
        if not chunk:
            return
        if b"\r" in chunk:
            self._cr = chunk.endswith(b"\r")
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if self._buf:
            self._buf += chunk
            if self._buf.find(b"\n", self._scanned) == -1:
                self._scanned = len(self._buf)
                return
            chunk, self._buf = bytes(self._buf), bytearray()
        # Whole lines are cut from the chunk itself: no copy in the common case.
        start = 0
        end = chunk.find(b"\n")
        while end != -1:
            event = self._line(chunk[start:end])
            if event is not None:
                yield event
            start = end + 1
            end = chunk.find(b"\n", start)
        if start < len(chunk):
            self._buf += chunk[start:]
        self._scanned = len(self._buf)

    def _line(self, line: bytes) -> SSEEvent | None:
        if not line:
            if not self._data:
                self._event = ""
                return None
            data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
            event = SSEEvent(self._event or "message", data, self._id)
            self._data = []
            self._event = ""
            return event
        if line[0] == 0x3A:  # ":" starts a comment
            return None
        name, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"id" and b"\0" not in value:
            self._id = value.decode("utf-8", "replace")
        return None


class _AnyObject(msgspec.Struct):
    """No fields: decoding skips every member, checking only the syntax."""


_skip_members = msgspec.json.Decoder(_AnyObject).decode
# What decoding a peer's bytes as JSON may raise: bad syntax or the wrong
# type (DecodeError, ValidationError), too deep a nesting (RecursionError),
# bytes that are not UTF-8 in a string that is decoded.
NOT_JSON = (msgspec.DecodeError, RecursionError, UnicodeDecodeError)


def _check_object(data: bytes) -> None:
    """Raise one of `NOT_JSON` unless `data` is one JSON object in UTF-8.

    The decoder skips members without building them, strings included, so
    it does not see bytes that are not UTF-8 inside a string; those are
    checked apart (at once for the usual all-ASCII event)."""
    _skip_members(data)
    if not data.isascii():
        data.decode()


def is_json_object(data: bytes) -> bool:
    """Whether `data` is one JSON object (its members are skipped, not built)."""
    try:
        _check_object(data)
    except NOT_JSON:
        return False
    return True


def _data_of(event: bytes) -> bytes | None:
    """The data lines of one event (no blank line in it), joined; None without any."""
    if event[:6] == b"data: " and b"\n" not in event and b"\r" not in event:
        return event[6:]  # the usual event: one data line
    data: list[bytes] = []
    for line in event.splitlines():
        name, _, value = line.partition(b":")
        if name == b"data":
            data.append(value[1:] if value[:1] == b" " else value)
    return b"\n".join(data) if data else None


def first_invalid_event(events: bytes) -> int:
    """Where the first event in `events` whose data is not a JSON object
    starts, or -1 when every one is.

    `events` holds whole events (it ends on an event boundary). Both wire
    formats send a JSON object in every event, except OpenAI's closing
    ``[DONE]``; an event without data lines (a comment, a keep-alive) is
    never dispatched to a client and is not checked. Only the syntax is
    checked: the decoder skips every member without building it.
    """
    if b"\r" not in events:  # the usual stream: cut at its blank lines, no regex
        start = 0
        blocks = events.split(b"\n\n")
        for i in range(len(blocks) - 1):
            block = blocks[i]
            if block[:6] == b"data: " and b"\n" not in block:
                data: bytes | None = block[6:]  # the usual event: one data line
            else:
                data = _data_of(block)
            if data is not None and data != b"[DONE]" and not is_json_object(data):
                return start
            start += len(block) + 2
        return -1
    start = 0
    for m in EVENT_BOUNDARY.finditer(events):
        data = _data_of(events[start : m.start()])
        if data is not None and data != b"[DONE]" and not is_json_object(data):
            return start
        start = m.end()
    return -1
