"""Usage as each wire format reports it: JSON bodies and stream events.

Both formats are read with small msgspec structs that skip everything but
the counts (and, for the estimate when no count ever arrives, the text
pieces of a stream, which stay in memory for the request only).

Counting conventions of `Usage`, whatever the provider said:
- `input_tokens` is every input token, cached or not. OpenAI's
  `prompt_tokens` already is; Anthropic's `input_tokens` excludes cache
  reads and writes, so they are added.
- `cached_input_tokens` are cache reads (OpenAI `cached_tokens`, Anthropic
  `cache_read_input_tokens`); `cache_creation_tokens` are Anthropic's
  cache writes. Both are part of `input_tokens`.
- `output_tokens` include `reasoning_tokens` (as OpenAI counts them).
"""

from __future__ import annotations

import msgspec

from lunos_proxy.exchange import Usage
from lunos_proxy.sse import SSEParser

__all__ = ["StreamUsage", "TextPieces", "text_of_body", "usage_from_body"]


class _Details(msgspec.Struct):
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None


class _RawUsage(msgspec.Struct):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    prompt_tokens_details: _Details | None = None
    completion_tokens_details: _Details | None = None
    input_tokens_details: _Details | None = None
    output_tokens_details: _Details | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


class _Holder(msgspec.Struct):
    usage: _RawUsage | None = None


class _Fn(msgspec.Struct):
    arguments: str | None = None


class _Tool(msgspec.Struct):
    function: _Fn | None = None


class _Delta(msgspec.Struct):
    content: str | None = None
    text: str | None = None
    partial_json: str | None = None
    thinking: str | None = None
    reasoning_content: str | None = None
    refusal: str | None = None
    tool_calls: list[_Tool] | None = None
    function_call: _Fn | None = None


class _Choice(msgspec.Struct):
    delta: _Delta | None = None
    message: _Delta | None = None
    text: str | None = None


class _Block(msgspec.Struct):
    text: str | None = None


class _Doc(msgspec.Struct):
    """A response body or one stream event, in either format."""

    type: str | None = None
    usage: _RawUsage | None = None
    choices: list[_Choice] | None = None
    delta: _Delta | str | None = None
    message: _Holder | None = None  # Anthropic message_start
    response: _Holder | None = None  # OpenAI Responses response.completed
    content: list[_Block] | None = None  # Anthropic message body


_decode = msgspec.json.Decoder(_Doc).decode
# A whole response body read for its usage alone: the text (all that is
# decoded besides) is needed only when there is no usage to read.
_decode_usage = msgspec.json.Decoder(_Holder).decode


class TextPieces:
    """The output text of a response, held only until the request ends, for
    counting tokens when the provider reports none. Bounded: past `limit`
    characters only the length is kept (and estimated at 4 characters a token)."""

    __slots__ = ("chars", "limit", "overflow", "pieces", "raw", "sse", "sse_bytes")

    def __init__(self, limit: int = 1 << 20) -> None:
        self.pieces: list[str] = []
        # Stream events not decoded yet: decoding waits until a count is needed,
        # which for most responses is never. `raw` holds the data of single
        # events, `sse` whole events as they came (not even split yet: what
        # `take_sse` makes of them is what reading them one by one would
        # have, the bound and `overflow` included); a stream's `sse` pieces
        # all come before its `raw` ones.
        self.sse: list[bytes] = []
        self.sse_bytes = 0
        self.raw: list[bytes] = []
        self.chars = 0
        self.overflow = 0
        self.limit = limit

    def add_raw(self, data: bytes) -> None:
        if self.chars + len(data) > self.limit:
            self.overflow += len(data) // 2  # JSON framing is about half an event
            return
        self.chars += len(data)
        self.raw.append(data)

    def add_sse(self, events: bytes) -> None:
        """Whole events, begun on an event boundary, read only if a count is
        needed. The caller keeps `sse_bytes` within `limit` (`StreamUsage`)."""
        self.sse_bytes += len(events)
        self.sse.append(events)

    def take_sse(self) -> None:
        """Read the events held in `sse` into the text, as if each had been
        read as it came (`StreamUsage.event`): their data is bounded and
        counted as theirs, never their framing (event lines, comments)."""
        if not self.sse:
            return
        sse, self.sse, self.sse_bytes = self.sse, [], 0
        reader = StreamUsage(self)  # its counts are dropped; its text comes here
        parser = SSEParser()
        for events in sse:
            for name, data in parser.events(events):
                reader.event(name, data)

    def add(self, text: str | None) -> None:
        if not text:
            return
        if self.chars + len(text) > self.limit:
            self.overflow += len(text)
            return
        self.chars += len(text)
        self.pieces.append(text)

    def text(self) -> str:
        self.take_sse()
        raw, self.raw = self.raw, []
        for data in raw:
            try:
                _collect(_decode(data), self)
            except (msgspec.DecodeError, msgspec.ValidationError):
                pass
        return "".join(self.pieces)


def _collect(doc: _Doc, out: TextPieces) -> None:
    for choice in doc.choices or ():
        out.add(choice.text)
        for d in (choice.delta, choice.message):
            if d is not None:
                _collect_delta(d, out)
    if isinstance(doc.delta, str):
        out.add(doc.delta)
    elif doc.delta is not None:
        _collect_delta(doc.delta, out)
    for block in doc.content or ():
        out.add(block.text)


def _collect_delta(d: _Delta, out: TextPieces) -> None:
    for text in (d.content, d.text, d.partial_json, d.thinking, d.reasoning_content, d.refusal):
        out.add(text)
    for tool in d.tool_calls or ():
        if tool.function is not None:
            out.add(tool.function.arguments)
    if d.function_call is not None:
        out.add(d.function_call.arguments)


class _Counts:
    """Field-wise latest counts; a later report of a field replaces an earlier one
    (Anthropic's message_delta counts are cumulative)."""

    __slots__ = ("anthropic", "cache_read", "cache_write", "cached", "input", "output", "reasoning")

    def __init__(self) -> None:
        self.input: int | None = None
        self.output: int | None = None
        self.cached: int | None = None
        self.cache_read: int | None = None
        self.cache_write: int | None = None
        self.reasoning: int | None = None
        self.anthropic = False

    def merge(self, raw: _RawUsage, anthropic: bool) -> None:
        self.anthropic = self.anthropic or anthropic
        inp = raw.prompt_tokens if raw.prompt_tokens is not None else raw.input_tokens
        out = raw.completion_tokens if raw.completion_tokens is not None else raw.output_tokens
        if inp is not None:
            self.input = inp
        if out is not None:
            self.output = out
        for details in (raw.prompt_tokens_details, raw.input_tokens_details):
            if details is not None and details.cached_tokens is not None:
                self.cached = details.cached_tokens
        for details in (raw.completion_tokens_details, raw.output_tokens_details):
            if details is not None and details.reasoning_tokens is not None:
                self.reasoning = details.reasoning_tokens
        if raw.cache_read_input_tokens is not None:
            self.cache_read = raw.cache_read_input_tokens
        if raw.cache_creation_input_tokens is not None:
            self.cache_write = raw.cache_creation_input_tokens

    def usage(self, source: str) -> Usage:
        if self.anthropic:
            read, write = self.cache_read or 0, self.cache_write or 0
            return Usage(
                input_tokens=(self.input or 0) + read + write,
                output_tokens=self.output or 0,
                cached_input_tokens=read,
                cache_creation_tokens=write,
                source=source,
            )
        return Usage(
            input_tokens=self.input or 0,
            output_tokens=self.output or 0,
            cached_input_tokens=self.cached or 0,
            reasoning_tokens=self.reasoning or 0,
            source=source,
        )


def usage_from_body(body: bytes, wire: str, text: TextPieces | None = None) -> Usage | None:
    """The usage a JSON response reports, or None; `text` collects its output
    when there is none (to count it)."""
    try:
        found = _decode_usage(body).usage
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if found is None:
        if text is not None:
            text_of_body(body, text)
        return None
    if wire == "anthropic":
        counts = _Counts()
        counts.merge(found, True)
        return counts.usage("reported")
    return _openai_usage(found)


def _openai_usage(raw: _RawUsage) -> Usage:
    """What `_Counts` makes of this one OpenAI-style report, made directly:
    every JSON answer of that format comes this way."""
    inp = raw.prompt_tokens if raw.prompt_tokens is not None else raw.input_tokens
    out = raw.completion_tokens if raw.completion_tokens is not None else raw.output_tokens
    # Of the two places a count may be, the one `_Counts.merge` reads last wins.
    d = raw.input_tokens_details
    cached = None if d is None else d.cached_tokens
    if cached is None and raw.prompt_tokens_details is not None:
        cached = raw.prompt_tokens_details.cached_tokens
    d = raw.output_tokens_details
    reasoning = None if d is None else d.reasoning_tokens
    if reasoning is None and raw.completion_tokens_details is not None:
        reasoning = raw.completion_tokens_details.reasoning_tokens
    return Usage(
        input_tokens=inp or 0,
        output_tokens=out or 0,
        cached_input_tokens=cached or 0,
        reasoning_tokens=reasoning or 0,
        source="reported",
    )


def text_of_body(body: bytes, text: TextPieces) -> None:
    """Collect the output text of a JSON response into `text`."""
    try:
        _collect(_decode(body), text)
    except (msgspec.DecodeError, msgspec.ValidationError):
        pass


class StreamUsage:
    """Usage read from a stream, a chunk or one event's data at a time.

    `complete` becomes true when the event that closes the count has been
    seen: OpenAI's chunk carrying `usage` (and Responses' response.completed),
    Anthropic's message_delta (input counts come earlier, in message_start).
    """

    __slots__ = ("_parser", "complete", "counts", "seen", "text")

    def __init__(self, text: TextPieces) -> None:
        self.counts = _Counts()
        self.text = text
        self.complete = False
        self.seen = False  # any count at all
        # Made at the first chunk that does not end on an event boundary.
        self._parser: SSEParser | None = None

    def chunk(self, data: bytes) -> None:
        """Read the next bytes of the stream, split anywhere.

        While chunks hold whole events (the forwarder passes them so), only
        the events that mention usage are parsed, and the rest is kept as it
        came, for its text if a count is needed: a stream's content events
        (nearly all of them) are never parsed. From the first chunk that
        ends inside an event on (or that has a carriage return: the search
        below knows only two line feeds as a blank line, or that would take
        the events kept past the text's bound), every event is parsed as it
        completes, and those kept are read first."""
        parser = self._parser
        if parser is None:
            text = self.text
            if (
                data.endswith(b"\n\n")
                and b"\r" not in data
                and text.sse_bytes + len(data) <= text.limit  # as much as it may keep
            ):
                text.add_sse(data)
                at = data.find(b'"usage"')
                while at >= 0:
                    # The event around it: from the blank line before it to
                    # the one after (an event has none inside without "\r").
                    before = data.rfind(b"\n\n", 0, at)
                    start = before + 2 if before >= 0 else 0
                    end = data.find(b"\n\n", at) + 2
                    for name, payload in SSEParser().events(data[start:end]):
                        self._read(name, payload, False)
                    at = data.find(b'"usage"', end)
                return
            # What was kept so far is read now, in order, before what follows.
            text.take_sse()
            parser = self._parser = SSEParser()
        for name, payload in parser.events(data):
            self.event(name, payload)

    def event(self, name: str, data: bytes) -> None:
        """Read one event's data (its text kept for a count)."""
        self._read(name, data, True)

    def _read(self, name: str, data: bytes, keep_text: bool) -> None:
        if data[:1] != b"{":
            return  # "[DONE]" and the like
        if b'"usage"' not in data or b'"usage":null' in data or b'"usage": null' in data:
            if keep_text:
                self.text.add_raw(data)  # no count here: read its text only if needed
            return
        try:
            doc = _decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        if keep_text:
            _collect(doc, self.text)
        kind = doc.type or name
        if doc.message is not None and doc.message.usage is not None:  # message_start
            self.counts.merge(doc.message.usage, True)
            self.seen = True
        if doc.usage is not None:
            anthropic = kind == "message_delta"
            self.counts.merge(doc.usage, anthropic)
            self.seen = True
            self.complete = True
        if doc.response is not None and doc.response.usage is not None:
            self.counts.merge(doc.response.usage, False)
            self.seen = self.complete = True

    def usage(self, source: str) -> Usage:
        return self.counts.usage(source)
