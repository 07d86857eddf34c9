"""What an answer says about itself: the model that produced it and why it
ended, read as it passes (an `Observer`), without its text.

Both wire formats, plain or streamed: OpenAI's ``choices[].finish_reason``
and top-level ``model`` (``response.model`` in Responses stream events),
Anthropic's ``stop_reason`` (on the message, or in ``message_delta``) and
``message.model`` (``message_start``). Everything else is skipped unread.
A provider's words are kept only as identifiers: a finish reason that is
not ``[a-z_]{1,32}`` becomes "other", a model that is not a model id is
left out.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from ..sse import SSEParser

__all__ = ["IDENTIFIER", "ResponseFacts"]

# A finish reason or an error code as a plain identifier.
IDENTIFIER = re.compile(r"[a-z_]{1,32}")
_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}")
_MAX_REASONS = 8


class _Choice(msgspec.Struct):
    finish_reason: str | None = None


class _Message(msgspec.Struct):
    model: str | None = None


class _StopDelta(msgspec.Struct):
    stop_reason: str | None = None


class _Facts(msgspec.Struct):
    """An answer or one stream event of either format: only the model and
    why the answer ended (OpenAI choices, Anthropic stop_reason, wherever
    each format puts it); everything else is skipped unread."""

    model: str | None = None
    choices: list[_Choice] | None = None
    stop_reason: str | None = None
    message: _Message | None = None  # Anthropic's message_start
    delta: _StopDelta | None = None  # Anthropic's message_delta
    response: _Message | None = None  # OpenAI Responses stream events


_decode_facts = msgspec.json.Decoder(_Facts).decode


class ResponseFacts:
    """An observer keeping the answer's model and finish reasons (no text)."""

    __slots__ = ("_body", "_parser", "model", "reasons")

    def __init__(self) -> None:
        self.model = ""
        self.reasons: list[str] = []
        self._body: list[bytes] | None = None
        self._parser: SSEParser | None = None

    def chunk(self, data: bytes) -> None:
        if self._body is None and self._parser is None:
            if data.lstrip()[:1] == b"{":
                self._body = []
            else:
                self._parser = SSEParser()
        if self._body is not None:
            self._body.append(data)
            return
        assert self._parser is not None
        for event in self._parser.feed(data):
            self._read(event.data)

    def end(self, aborted: bool) -> None:
        if self._body is not None:
            self._read(b"".join(self._body))
            self._body = []

    def _read(self, data: bytes) -> None:
        if data[:1] != b"{":
            return  # [DONE]
        try:
            facts = _decode_facts(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return  # an event of another shape (its delta a string, ...)
        model = facts.model or (facts.message and facts.message.model) or (
            facts.response and facts.response.model
        )
        if model:
            self.model = model
        for reason in (
            *(c.finish_reason for c in facts.choices or ()),
            facts.stop_reason,
            facts.delta.stop_reason if facts.delta else None,
        ):
            if reason and len(self.reasons) < _MAX_REASONS:
                self.reasons.append(reason if IDENTIFIER.fullmatch(reason) else "other")

    def put(self, attrs: dict[str, Any]) -> None:
        if self.model and _MODEL_ID.fullmatch(self.model):
            attrs["gen_ai.response.model"] = self.model
        if self.reasons:
            attrs["gen_ai.response.finish_reasons"] = self.reasons
