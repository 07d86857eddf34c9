"""The observer that turns a response passing through into `exchange.usage`.

It sees the upstream bytes as the forwarder copies them (before any filter,
so it reads the usage chunk the meter asked for) and, when the response
ends or is cut off, sets `exchange.usage` and `exchange.cost_micros`. That
happens inside the forwarder, so both are final when `handler` returns to
any middleware outside the meter (abuse settles its reservation from them).

When the usage must be counted (none reported), `end` only takes note:
counting runs on the tokenizer thread (`estimate.counted`), and the meter
awaits `counted()` before it returns, so the loop never waits for a table
load or a long text. Until then `exchange.usage` holds what was reported
(a stream's partial usage) or nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import structlog

from lunos_proxy.exchange import Exchange, Usage

from .estimate import count_input, count_output, counted
from .extract import StreamUsage, TextPieces, text_of_body, usage_from_body

__all__ = ["UsageWatcher"]

log = structlog.get_logger("lunos.meter")


class UsageWatcher:
    __slots__ = (
        "_at",
        "_body",
        "_cost",
        "_count",
        "_estimate",
        "_stream",
        "_text",
        "ended",
        "exchange",
    )

    def __init__(
        self,
        exchange: Exchange,
        cost: Callable[[Exchange, float], int],
        at: float,
        estimate: bool = True,
    ) -> None:
        self.exchange = exchange
        self.ended = False
        self._cost = cost  # cost(exchange, at): its price at `at`, the request's arrival
        self._at = at
        self._estimate = estimate
        # The output text, made when there is some to keep: a stream's, or a
        # JSON answer's that reports no usage (most answers need none).
        self._text: TextPieces | None = None
        # A JSON answer: the forwarder feeds it whole, in one chunk.
        self._body: bytes | list[bytes] | None = None
        self._stream: StreamUsage | None = None
        # What a count needs (model, endpoint, body, partial usage), set by
        # `end` when no usage was reported.
        self._count: tuple[str, str, bytes, Usage | None] | None = None

    def chunk(self, data: bytes) -> None:
        body = self._body
        if body is not None:
            if isinstance(body, bytes):
                self._body = [body, data]
            else:
                body.append(data)
            return
        stream = self._stream
        if stream is None:
            if data[:1] == b"{" or data.lstrip()[:1] == b"{":
                self._body = data
                return
            self._text = TextPieces()
            stream = self._stream = StreamUsage(self._text)
        stream.chunk(data)

    def end(self, aborted: bool) -> None:
        if self.ended:
            return
        self.ended = True
        ex = self.exchange
        try:
            ex.usage = self._final()
            if self._count is None:
                ex.cost_micros = self._cost(ex, self._at)
        except Exception:
            # An observer must not raise into the copy loop.
            log.exception("usage_settle_failed")

    @property
    def counting(self) -> bool:
        """True while the usage waits for `counted()`."""
        return self._count is not None

    async def counted(self) -> None:
        """Count the usage no one reported, off the loop; then it is final."""
        if self._count is None:
            return
        ex = self.exchange
        try:
            ex.usage = await counted(self._counted)
        except Exception:
            log.exception("usage_settle_failed")
        finally:
            # Also when cancelled again while counting (a shutdown): then
            # what was reported, or nothing, is what gets settled.
            self._count = None
            try:
                ex.cost_micros = self._cost(ex, self._at)
            except Exception:
                log.exception("usage_settle_failed")

    def _final(self) -> Usage:
        ex = self.exchange
        partial: Usage | None = None
        body = self._body
        if body is not None:
            if not isinstance(body, bytes):
                body = b"".join(body)
            found = usage_from_body(body, ex.wire)
            if found is not None:
                return found
            if self._estimate:
                self._text = TextPieces()
                text_of_body(body, self._text)
        elif self._stream is not None:
            if self._stream.complete:
                return self._stream.usage("reported")
            if self._stream.seen:
                partial = self._stream.usage("estimated")
        if not self._estimate:
            return partial or Usage(source="none")
        self._count = (ex.upstream_model or ex.model, ex.endpoint, ex.body, partial)
        return partial or Usage(source="none")

    def _counted(self) -> Usage:
        """The estimate; runs on the tokenizer thread (reads nothing the loop changes)."""
        assert self._count is not None
        model, endpoint, body, partial = self._count
        output = count_output(model, self._text if self._text is not None else TextPieces())
        if partial is not None and partial.input_tokens:
            return msgspec.structs.replace(
                partial, output_tokens=max(partial.output_tokens, output)
            )
        return Usage(
            input_tokens=count_input(model, endpoint, body),
            output_tokens=output,
            source="estimated",
        )
