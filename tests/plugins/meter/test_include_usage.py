"""Asking a stream for usage, and giving the client the stream it would have had."""

from __future__ import annotations

import json
import random

from plugins.meter.include_usage import UsageChunkFilter, ask_for_usage
from tests.fakes import FakeProvider


def test_include_usage_is_added_keeping_other_fields_raw() -> None:
    body = b'{"model":"m","stream":true,"messages":[{"content":"caf\\u00e9 1.50"}],"temperature":1.0e0}'
    out = ask_for_usage(body)
    assert out is not None
    assert json.loads(out)["stream_options"] == {"include_usage": True}
    assert b'"caf\\u00e9 1.50"' in out and b"1.0e0" in out  # raw values untouched


def test_existing_stream_options_are_kept_and_extended() -> None:
    out = ask_for_usage(b'{"model":"m","stream_options":{"x":[1,2]}}')
    assert out is not None and json.loads(out)["stream_options"] == {"x": [1, 2], "include_usage": True}
    out = ask_for_usage(b'{"model":"m","stream_options":null}')
    assert out is not None and json.loads(out)["stream_options"] == {"include_usage": True}


def test_client_that_asked_is_left_alone() -> None:
    assert ask_for_usage(b'{"model":"m","stream_options":{"include_usage":true}}') is None


def run(f: UsageChunkFilter, pieces: list[bytes]) -> bytes:
    return b"".join(f.feed(p) for p in pieces) + f.flush()


def test_filter_restores_the_plain_stream_under_any_split() -> None:
    fake = FakeProvider()
    asked = b"".join(fake.events({"model": "x", "stream_options": {"include_usage": True}}, anthropic=False))
    plain = b"".join(fake.events({"model": "x"}, anthropic=False))
    assert asked != plain and b'"usage": null' in asked
    for cut in range(len(asked) + 1):
        assert run(UsageChunkFilter(), [asked[:cut], asked[cut:]]) == plain, cut
    rng = random.Random(3)
    for _ in range(100):
        cuts = sorted(rng.sample(range(1, len(asked)), 8))
        pieces = [asked[a:b] for a, b in zip([0, *cuts], [*cuts, len(asked)], strict=True)]
        assert run(UsageChunkFilter(), pieces) == plain


def test_filter_handles_compact_json_and_crlf() -> None:
    asked = (
        b'data: {"id":"1","choices":[{"delta":{"content":"say \\"usage\\":null"}}],"usage":null}\r\n\r\n'
        b'data: {"id":"1","choices":[],"usage":{"prompt_tokens":1}}\r\n\r\n'
        b"data: [DONE]\r\n\r\n"
    )
    plain = (
        b'data: {"id":"1","choices":[{"delta":{"content":"say \\"usage\\":null"}}]}\r\n\r\n'
        b"data: [DONE]\r\n\r\n"
    )
    assert run(UsageChunkFilter(), [asked]) == plain
    assert run(UsageChunkFilter(), [asked[i : i + 5] for i in range(0, len(asked), 5)]) == plain


def test_chunks_without_usage_pass_through_as_the_same_object() -> None:
    f = UsageChunkFilter()
    chunk = b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'
    assert f.feed(chunk) is chunk
