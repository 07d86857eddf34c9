"""Logging: one JSON object per line, and nothing in it that could be content.

`configure_logging` sets up structlog (what the proxy's own code uses) and
routes the standard library's `logging` (aiohttp, asyncio, redis) through
the same processors, so every line on stdout has one shape:

    {"event": "request", "level": "info", "timestamp": "2026-...Z", ...}

Two rules keep request and response text out of every line, including
lines written by libraries we do not control:

- An exception is written as its type and a stack of ``file:line in
  function`` frames (`SafeException`): never its message, never local
  variables. Exception messages routinely quote the value that failed to
  parse, which may be a prompt.
- A standard-library record keeps only its message *template* (``record.msg``,
  not the interpolated arguments), cut to its first line and before the
  first ``(`` or ``<`` (asyncio builds templates that embed reprs of tasks
  and their arguments). The logger name and level are kept.

aiohttp's access log is never enabled: the `logger` plugin writes the one
line per request.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import MutableMapping
from typing import Any, Literal, TextIO

import msgspec
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

__all__ = ["LogFormat", "SafeException", "configure_logging", "safe_stack"]

LogFormat = Literal["json", "console"]

_MAX_FRAMES = 30


def safe_stack(exc: BaseException) -> dict[str, Any]:
    """An exception reduced to its type and frames: no message, no locals."""
    frames = traceback.extract_tb(exc.__traceback__, limit=_MAX_FRAMES)
    return {
        "type": type(exc).__qualname__,
        "stack": [f"{f.filename}:{f.lineno} in {f.name}" for f in frames],
    }


class SafeException:
    """Replaces ``exc_info`` (or an ``exception`` object) with `safe_stack`."""

    __slots__ = ()

    def __call__(self, logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
        exc_info = event_dict.pop("exc_info", None)
        if exc_info:
            if exc_info is True:
                exc_info = sys.exc_info()
            exc = exc_info if isinstance(exc_info, BaseException) else exc_info[1]
            if exc is not None:
                event_dict["exception"] = safe_stack(exc)
        elif isinstance(event_dict.get("exception"), BaseException):
            event_dict["exception"] = safe_stack(event_dict["exception"])
        return event_dict


class _ForeignRecord:
    """Reduces a standard-library record to its template's safe head."""

    __slots__ = ()

    def __call__(self, logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
        record = event_dict.get("_record")
        if isinstance(record, logging.LogRecord):
            event_dict["event"] = _template_head(record.msg)
            event_dict["logger"] = record.name
            if record.exc_info and "exc_info" not in event_dict:
                event_dict["exc_info"] = record.exc_info
        return event_dict


def _template_head(msg: object) -> str:
    text = msg if isinstance(msg, str) else type(msg).__name__
    text = text.split("\n", 1)[0]
    for stop in ("(", "<"):
        cut = text.find(stop)
        if cut != -1:
            text = text[:cut]
    return text.strip()[:200]


def _exception_as_text(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    """For the console renderer, which takes an exception only as text: the
    safe stack SafeException made, as JSON (never the exception itself)."""
    exc = event_dict.get("exception")
    if exc is not None and not isinstance(exc, str):
        event_dict["exception"] = msgspec.json.encode(exc).decode()
    return event_dict


def _dumps(obj: MutableMapping[str, Any], **_: Any) -> str:
    return msgspec.json.encode(obj).decode()


def _dumps_bytes(obj: MutableMapping[str, Any], **_: Any) -> bytes:
    return msgspec.json.encode(obj)


def configure_logging(
    level: str = "info", fmt: LogFormat = "json", stream: TextIO | None = None
) -> None:
    """Send structlog and standard-library logs, as `fmt`, to `stream` (stdout).

    Loggers obtained before a later call keep their old configuration, so
    plugins take theirs when they are built (at start and on each reload)."""
    out = stream if stream is not None else sys.stdout
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    # Lines go out as bytes when the stream has a binary buffer (stdout, a
    # file): msgspec's bytes are written as they are, with no str round trip.
    binary = getattr(out, "buffer", None) if fmt == "json" else None
    renderer: Processor = (
        structlog.processors.JSONRenderer(serializer=_dumps)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    own_renderer: Processor = (
        structlog.processors.JSONRenderer(serializer=_dumps_bytes)
        if binary is not None
        else renderer
    )
    factory: Any = (
        structlog.BytesLoggerFactory(binary)
        if binary is not None
        else structlog.PrintLoggerFactory(out)
    )
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,  # `worker` under serve --workers N
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    safe: list[Processor] = [SafeException()]
    if fmt != "json":
        safe.append(_exception_as_text)
    structlog.configure(
        processors=[*shared, *safe, own_renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            _ForeignRecord(),
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *safe,
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_lunos", False):
            root.removeHandler(old)
    handler._lunos = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(numeric)
    # The logger plugin writes the one line per request.
    logging.getLogger("aiohttp.access").disabled = True
