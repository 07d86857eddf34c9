"""Usage from every response shape, counted by one convention."""

from __future__ import annotations

import json

import pytest

from lunos_proxy.exchange import Usage
from lunos_proxy.sse import SSEParser
from plugins.meter.extract import StreamUsage, TextPieces, usage_from_body


def body(d: object) -> bytes:
    return json.dumps(d).encode()


def test_openai_chat_usage_with_cached_and_reasoning_details() -> None:
    u = usage_from_body(body({"choices": [], "usage": {
        "prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150,
        "prompt_tokens_details": {"cached_tokens": 64, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 30}}}), "openai")
    assert u == Usage(input_tokens=100, output_tokens=50, cached_input_tokens=64,
                      reasoning_tokens=30, source="reported")


def test_openai_responses_and_embeddings_usage() -> None:
    u = usage_from_body(body({"object": "response", "usage": {
        "input_tokens": 20, "output_tokens": 7, "input_tokens_details": {"cached_tokens": 4},
        "output_tokens_details": {"reasoning_tokens": 2}}}), "openai")
    assert u == Usage(input_tokens=20, output_tokens=7, cached_input_tokens=4, reasoning_tokens=2, source="reported")
    e = usage_from_body(body({"data": [], "usage": {"prompt_tokens": 9, "total_tokens": 9}}), "openai")
    assert e == Usage(input_tokens=9, source="reported")


def test_anthropic_body_adds_cache_reads_and_writes_to_input() -> None:
    u = usage_from_body(body({"type": "message", "content": [{"type": "text", "text": "x"}], "usage": {
        "input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 20}}), "anthropic")
    assert u == Usage(input_tokens=130, output_tokens=5, cached_input_tokens=100,
                      cache_creation_tokens=20, source="reported")


def test_body_without_usage_gives_none_but_collects_text() -> None:
    text = TextPieces()
    assert usage_from_body(body({"choices": [{"message": {"content": "hello"}}]}), "openai", text) is None
    assert text.text() == "hello"


def read_stream(raw: bytes) -> StreamUsage:
    s = StreamUsage(TextPieces())
    for e in SSEParser().feed(raw):
        s.event(e.event, e.data)
    return s


def sse(events: list[tuple[str | None, object]]) -> bytes:
    out = b""
    for name, data in events:
        if name:
            out += f"event: {name}\n".encode()
        out += b"data: " + (data if isinstance(data, bytes) else body(data)) + b"\n\n"
    return out


def test_anthropic_stream_takes_the_last_cumulative_counts() -> None:
    s = read_stream(sse([
        ("message_start", {"type": "message_start", "message": {"usage": {
            "input_tokens": 12, "output_tokens": 1, "cache_read_input_tokens": 8,
            "cache_creation_input_tokens": 0}}}),
        ("content_block_delta", {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "Hi"}}),
        ("message_delta", {"type": "message_delta", "usage": {"output_tokens": 5}}),
        ("message_delta", {"type": "message_delta", "usage": {"output_tokens": 9}}),
        ("message_stop", {"type": "message_stop"}),
    ]))
    assert s.complete and s.text.text() == "Hi"
    assert s.usage("reported") == Usage(input_tokens=20, output_tokens=9, cached_input_tokens=8, source="reported")


def test_anthropic_stream_cut_before_message_delta_is_incomplete() -> None:
    s = read_stream(sse([("message_start", {"type": "message_start", "message": {"usage": {
        "input_tokens": 12, "output_tokens": 1}}})]))
    assert s.seen and not s.complete


def test_openai_stream_usage_chunk_and_text_of_deltas_and_tool_calls() -> None:
    s = read_stream(sse([
        (None, {"choices": [{"delta": {"content": "a"}}], "usage": None}),
        (None, {"choices": [{"delta": {"tool_calls": [{"function": {"arguments": "{\"x\""}}]}}]}),
        (None, {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}),
        (None, b"[DONE]"),
    ]))
    assert s.complete and s.usage("reported") == Usage(input_tokens=3, output_tokens=2, source="reported")
    assert s.text.text() == 'a{"x"'


def test_responses_stream_reads_usage_from_response_completed() -> None:
    s = read_stream(sse([
        ("response.output_text.delta", {"type": "response.output_text.delta", "delta": "yo"}),
        ("response.completed", {"type": "response.completed", "response": {"usage": {
            "input_tokens": 5, "output_tokens": 1}}}),
    ]))
    assert s.complete and s.usage("reported").input_tokens == 5 and s.text.text() == "yo"


def test_text_pieces_are_bounded() -> None:
    t = TextPieces(limit=10)
    t.add("12345")
    t.add("1234567")
    t.add("12345")
    assert (t.text(), t.overflow) == ("1234512345", 7)


def test_an_openai_body_counts_as_the_same_report_in_a_stream_would() -> None:
    reports: list[dict[str, object]] = [
        {"prompt_tokens": 7, "completion_tokens": 3},
        {"input_tokens": 7, "output_tokens": 3},
        {"prompt_tokens": 7, "input_tokens": 9, "completion_tokens": 3, "output_tokens": 4},
        {"prompt_tokens": 7, "prompt_tokens_details": {"cached_tokens": 2},
         "input_tokens_details": {"cached_tokens": 5}},
        {"prompt_tokens": 7, "prompt_tokens_details": {"cached_tokens": 2},
         "input_tokens_details": {"audio_tokens": 1},
         "completion_tokens_details": {"reasoning_tokens": 1},
         "output_tokens_details": {"reasoning_tokens": None}},
        {"prompt_tokens": None, "completion_tokens": 3, "output_tokens_details": {"reasoning_tokens": 2}},
        {},
    ]
    for report in reports:
        streamed = read_stream(sse([(None, {"choices": [], "usage": report})]))
        assert usage_from_body(body({"usage": report}), "openai") == streamed.usage("reported"), report


_STREAMS = {
    "openai": sse([
        (None, {"choices": [{"delta": {"role": "assistant", "content": ""}}]}),
        (None, {"choices": [{"delta": {"content": "usage"}}]}),  # the word, as a value
        (None, {"choices": [{"delta": {"content": " of \"usage\""}}], "usage": None}),
        (None, {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2,
                                        "completion_tokens_details": {"reasoning_tokens": 1}}}),
        (None, b"[DONE]"),
    ]),
    "anthropic": sse([
        ("message_start", {"type": "message_start", "message": {"usage": {
            "input_tokens": 12, "output_tokens": 1, "cache_read_input_tokens": 8}}}),
        ("content_block_delta", {"type": "content_block_delta", "delta": {"text": "Hi"}}),
        ("message_delta", {"type": "message_delta", "usage": {"output_tokens": 9}}),
        ("message_stop", {"type": "message_stop"}),
    ]),
    "responses": sse([
        ("response.output_text.delta", {"type": "response.output_text.delta", "delta": "yo"}),
        ("response.completed", {"type": "response.completed", "response": {"usage": {
            "input_tokens": 5, "output_tokens": 1}}}),
    ]),
}


def _read_chunks(chunks: list[bytes], limit: int = 1 << 20) -> tuple[bool, bool, Usage, str, int]:
    s = StreamUsage(TextPieces(limit))
    for c in chunks:
        s.chunk(c)
    text = s.text.text()
    return s.complete, s.seen, s.usage("reported"), text, s.text.overflow


def _read_events(raw: bytes, limit: int = 1 << 20) -> tuple[bool, bool, Usage, str, int]:
    """Event by event, as the meter read every stream before chunks were kept whole."""
    s = StreamUsage(TextPieces(limit))
    for e in SSEParser().feed(raw):
        s.event(e.event, e.data)
    text = s.text.text()
    return s.complete, s.seen, s.usage("reported"), text, s.text.overflow


# A comment the size of the text's whole bound, then text: only event data
# counts against the bound, as it did when every event was read as it came.
_PADDED = b": " + b"x" * 300 + b"\n\n" + _STREAMS["anthropic"]


@pytest.mark.parametrize("kind", [*sorted(_STREAMS), "padded"])
@pytest.mark.parametrize("line_end", [b"\n", b"\r\n"])
@pytest.mark.parametrize("limit", [1 << 20, 150, 40])
def test_a_stream_read_in_chunks_reads_as_event_by_event(kind: str, line_end: bytes, limit: int) -> None:
    raw = (_PADDED if kind == "padded" else _STREAMS[kind]).replace(b"\n", line_end)
    expected = _read_events(raw, limit)
    assert expected[0] and (expected[3] or expected[4])  # a complete count, and some text
    # Every split in two and in three, whole events or not.
    for i in range(len(raw) + 1):
        assert _read_chunks([raw[:i], raw[i:]], limit) == expected, i
        for j in range(i, len(raw) + 1, 7):
            assert _read_chunks([raw[:i], raw[i:j], raw[j:]], limit) == expected, (i, j)
    # One chunk per event: what the forwarder passes for a stream that trickles.
    events = [e + line_end * 2 for e in raw.split(line_end * 2) if e]
    assert _read_chunks(events, limit) == expected


def test_a_long_stream_cut_short_is_bounded_by_its_text_not_its_framing() -> None:
    """9,000 one-event chunks (about 1.1 MB with their framing, under half
    that of text), cut before the count: all their text is kept, as when each
    event was read as it came; none of it is estimated from its size."""
    start = _STREAMS["anthropic"].split(b"\n\n")[0] + b"\n\n"
    delta = (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
             b'"delta":{"type":"text_delta","text":"hello world "}}\n\n')
    chunks = [start] + [delta] * 9000
    got = _read_chunks(chunks)
    assert got == _read_events(b"".join(chunks))
    assert got[3] == "hello world " * 9000 and got[4] == 0


def test_a_stream_cut_short_keeps_its_text_for_the_count() -> None:
    raw = _STREAMS["openai"]
    cut = raw[: raw.index(b'{"choices": []')]  # before the usage chunk
    complete, seen, _, text, _ = _read_chunks([cut])
    assert (complete, seen, text) == (False, False, 'usage of "usage"')
