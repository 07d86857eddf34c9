"""The incremental SSE parser: any split of a stream gives the same events."""

from __future__ import annotations

import random
import time

from lunos_proxy.sse import SSEParser, first_invalid_event, is_json_object

STREAM = (
    b": keep-alive comment\n\n"
    b"event: message_start\ndata: {\"a\": 1}\n\n"
    b"data: first line\ndata: second line\n\n"
    b"id: 7\nretry: 100\nunknown: field\ndata:no-space\n\n"
    b"event: lonely\n\n"
    b"data: [DONE]\n\n"
)
EXPECTED = [
    ("message_start", b'{"a": 1}'),
    ("message", b"first line\nsecond line"),
    ("message", b"no-space"),
    ("message", b"[DONE]"),
]


def parse(chunks: list[bytes]) -> list[tuple[str, bytes]]:
    p = SSEParser()
    return [(e.event, e.data) for c in chunks for e in p.feed(c)]


def test_whole_stream_in_one_chunk_gives_every_event_in_order() -> None:
    assert parse([STREAM]) == EXPECTED


def test_every_split_point_gives_the_same_events() -> None:
    for cut in range(len(STREAM) + 1):
        assert parse([STREAM[:cut], STREAM[cut:]]) == EXPECTED, cut


def test_byte_by_byte_and_random_splits_give_the_same_events() -> None:
    assert parse([STREAM[i : i + 1] for i in range(len(STREAM))]) == EXPECTED
    rng = random.Random(7)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(STREAM)), rng.randint(1, 12)))
        pieces = [STREAM[a:b] for a, b in zip([0, *cuts], [*cuts, len(STREAM)], strict=True)]
        assert parse(pieces) == EXPECTED


def test_chunks_of_whole_events_give_what_byte_by_byte_gives() -> None:
    # What the forwarder passes on: chunks cut at event boundaries (taken
    # a blank line at a time, not line by line), ids and blank-line runs kept.
    stream = STREAM + (
        b"id: 9\ndata: after id\n\n\n\ndata: {\"b\": 2}\n\n\n\n\ndata:x\n\n"
        # Anthropic's shape, and its near misses: no space, an empty name,
        # two data lines, an event line last, a data line first.
        b"event: content_block_delta\ndata: {\"c\": 3}\n\n"
        b"event:tight\ndata:{}\n\n"
        b"event:\ndata: unnamed\n\n"
        b"event: two\ndata: one\ndata: two\n\n"
        b"data: first\nevent: named-after\n\n"
        b"event: caf\xc3\xa9\ndata: {}\n\n"
        b"event: \ndata: blank name\n\n"
        b"event: bare\ndata\n\n"
        b"event: spaced\ndata:  two spaces\n\n"
        b"event: only-name\n\n"
    )

    def events(chunks: list[bytes]) -> list[tuple[str, bytes, str | None]]:
        p = SSEParser()
        return [(e.event, e.data, e.id) for c in chunks for e in p.feed(c)]

    expected = events([stream[i : i + 1] for i in range(len(stream))])
    assert expected[-12:] == [("message", b"after id", "9"), ("message", b'{"b": 2}', "9"),
                              ("message", b"x", "9"), ("content_block_delta", b'{"c": 3}', "9"),
                              ("tight", b"{}", "9"), ("message", b"unnamed", "9"),
                              ("two", b"one\ntwo", "9"), ("named-after", b"first", "9"),
                              ("caf\u00e9", b"{}", "9"), ("message", b"blank name", "9"),
                              ("bare", b"", "9"), ("spaced", b" two spaces", "9")]
    ends = [i + 2 for i in range(len(stream) - 1) if stream[i : i + 2] == b"\n\n"]
    rng = random.Random(11)
    for _ in range(200):
        cuts = sorted(set(rng.sample(ends, rng.randint(1, len(ends)))) | {len(stream)})
        pieces = [stream[a:b] for a, b in zip([0, *cuts], cuts, strict=False) if b > a]
        assert events(pieces) == expected, pieces


def test_crlf_and_cr_line_endings_are_lines_even_split_between_cr_and_lf() -> None:
    crlf = STREAM.replace(b"\n", b"\r\n")
    for cut in range(len(crlf) + 1):
        assert parse([crlf[:cut], crlf[cut:]]) == EXPECTED, cut
    assert parse([STREAM.replace(b"\n", b"\r")]) == EXPECTED


def test_event_id_is_kept() -> None:
    events = list(SSEParser().feed(b"id: 42\ndata: x\n\n"))
    assert [(e.id, e.data) for e in events] == [("42", b"x")]


def test_very_large_event_in_small_chunks_is_one_event() -> None:
    payload = b'{"text": "' + b"x" * 600_000 + b'"}'
    stream = b"data: " + payload + b"\n\ndata: after\n\n"
    chunks = [stream[i : i + 4096] for i in range(0, len(stream), 4096)]
    assert parse(chunks) == [("message", payload), ("message", b"after")]


def test_unfinished_event_is_not_dispatched() -> None:
    assert parse([b"data: half"]) == []


def test_events_whose_data_is_a_json_object_or_done_are_valid() -> None:
    events = (
        b": keep-alive\n\n"
        b"event: ping\n\n"  # no data: never dispatched, not checked
        b"event: message_start\ndata: {\"a\": [1, {\"b\": null}]}\n\n"
        b"data: {\"a\":\ndata: 1}\n\n"  # data lines join with a newline
        b"data:{}\r\n\r\n"
        b"event: tight\ndata:{}\n\n"
        b"data: [DONE]\n\n"
    )
    assert first_invalid_event(events) == -1
    assert first_invalid_event(events.replace(b"\r", b"")) == -1


def test_the_first_event_that_is_not_a_json_object_is_found_where_it_starts() -> None:
    good = b"data: {\"x\": 1}\n\n"
    for bad in (b"data: {\"x\": \n\n", b"data: <html>\n\n", b"data: [1]\n\n", b"data:\n\n",
                b"event: e\ndata: {} trailing\n\n", b"event: e\ndata: <html>\n\n",
                b"event: e\ndata: {}\ndata: x\n\n", b"event:\ndata: 1\n\n"):
        assert first_invalid_event(good + bad + good) == len(good), bad
        assert first_invalid_event(good.replace(b"\n", b"\r\n") + bad.replace(b"\n", b"\r\n")) == len(good) + 2
    assert not is_json_object(b"") and is_json_object(b" {} ")


def test_an_object_no_decoder_could_read_is_not_one() -> None:
    not_utf8 = b'{"text":"\xed\xa0\xbd"}'  # a UTF-16 surrogate written as UTF-8 bytes
    too_deep = b'{"x":' + b"[" * 2000 + b"]" * 2000 + b"}"
    assert is_json_object(b'{"text":"Gr\xc3\xbc\xc3\x9fe"}')  # UTF-8 itself is fine
    assert not is_json_object(not_utf8)
    assert not is_json_object(too_deep)
    good = b'data: {"a":1}\n\n'
    assert first_invalid_event(good + b"data: " + not_utf8 + b"\n\n" + good) == len(good)
    assert first_invalid_event(good + b"data: " + too_deep + b"\r\n\r\n") == len(good)


# Events in the form both providers send (an optional "event: NAME" line and
# one "data: DATA" line), cut fast, and near misses of it, cut line by line.
USUAL = (
    b'event: message_start\ndata: {"type":"message_start"}\n\n'
    b"data: {\"choices\":[]}\n\n"
    b"event: caf\xc3\xa9\ndata: {}\n\n"
    b"event: \xff\ndata: not UTF-8 name\n\n"
    b"event: \ndata: empty name\n\n"
    b"event:  spaced\ndata:  two spaces\n\n"
    b"event: a:b\ndata: data: in data\n\n"
    b"data: \n\n"
)
NEAR_MISSES = (
    b"event:tight\ndata:{}\n\n",
    b"data:x\n\n",
    b"event: two\ndata: one\ndata: two\n\n",
    b"event: first\nevent: second\ndata: x\n\n",
    b"data: first\nevent: named-after\n\n",
    b"id: 9\ndata: after id\n\n",
    b": comment\n\n",
    b"event: only-name\n\n",
    b"event: ping\ndata: x\n\n\n",
    b"event: crlf\r\ndata: x\r\n\r\n",
    b"event: cr\ndata: x\rdata: y\n\n",
)


def pairs(chunks: list[bytes]) -> list[tuple[str, bytes]]:
    p = SSEParser()
    return [pair for c in chunks for pair in p.events(c)]


def test_a_usual_run_gives_what_byte_by_byte_gives_at_every_split() -> None:
    expected = [(e, d) for e, d, _ in _byte_by_byte(USUAL)]
    assert expected[:3] == [("message_start", b'{"type":"message_start"}'),
                            ("message", b'{"choices":[]}'), ("caf\u00e9", b"{}")]
    assert expected[3:] == [("\ufffd", b"not UTF-8 name"), ("message", b"empty name"),
                            (" spaced", b" two spaces"), ("a:b", b"data: in data"), ("message", b"")]
    assert pairs([USUAL]) == expected
    assert [(e.event, e.data) for e in SSEParser().feed(USUAL)] == expected
    for cut in range(len(USUAL) + 1):
        assert pairs([USUAL[:cut], USUAL[cut:]]) == expected, cut


def test_near_misses_of_the_usual_form_give_what_byte_by_byte_gives() -> None:
    for miss in NEAR_MISSES:
        stream = USUAL + miss + USUAL
        expected = _byte_by_byte(stream)
        assert len(expected) >= 16, miss
        assert pairs([stream]) == [(e, d) for e, d, _ in expected], miss
        p = SSEParser()
        assert [(e.event, e.data, e.id) for e in p.feed(stream)] == expected, miss
        # And after it, a usual run with the parser's id kept.
        assert [(e.event, e.data, e.id) for e in p.feed(USUAL)] == expected[-8:], miss


def test_hostile_lines_are_cut_in_linear_time() -> None:
    """Lines that begin a usual event again and again, and never finish
    one, cost what their length costs (a search retried at every offset
    would take minutes here)."""
    start = time.process_time()
    for hostile in (b"event: " * 100_000 + b"\n\n", b"data: " * 100_000 + b"\nx\n\n",
                    b"event: x\n" * 100_000 + b"data: y\n\n"):
        assert pairs([hostile]) == [(e.event, e.data) for e in SSEParser()._lines(hostile)]
    assert time.process_time() - start < 2


def _byte_by_byte(stream: bytes) -> list[tuple[str, bytes, str | None]]:
    p = SSEParser()
    return [(e.event, e.data, e.id) for i in range(len(stream)) for e in p.feed(stream[i : i + 1])]
