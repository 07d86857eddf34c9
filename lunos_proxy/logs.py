"""Logging: one JSON object per line, and nothing in it that could be content.

`configure_logging` sets up structlog (what the proxy's own code uses) and
routes the standard library's `logging` (aiohttp, asyncio, redis) through
the same processors, so every line on stdout has one shape:

    {"event": "request", "level": "info", "timestamp": "2026-...Z", ...}

Our own code logs only through structlog, with an event name and fields
(``log.warning("limits_store_down", policy=..., error=error_name(e))``);
docs/logging.md is the catalogue of every event name, its level and its
fields, and tests/test_log_catalogue.py holds it to the code.

Two rules keep request and response text out of every line, including
lines written by libraries we do not control:

- An exception is written as its type and a stack of ``file:line in
  function`` frames (`SafeException`): never its message, never local
  variables. Exception messages routinely quote the value that failed to
  parse, which may be a prompt. A field naming an error holds its type
  (`error_name`).
- A standard-library record becomes one ``library_log`` event: the logger's
  name, the level and a ``message`` (`_LibraryRecord`). The message is
  rendered from its template with only plain arguments (text, numbers);
  an exception or any other object among them is written as its type name,
  and the text of the record's own exception is cut out. Loggers that
  handle client traffic (``aiohttp.server``, ``aiohttp.web``,
  ``aiohttp.internal``, ``aiohttp.websocket``) and ``asyncio`` (whose
  templates embed reprs of tasks, their arguments and exceptions) keep only
  their template's head, without arguments: their arguments are the client's
  address, cookie names, handler results. Only the first line is kept, up to
  300 characters. Library records below ``info`` are never written (they
  dump protocol data: redis prints pub/sub payloads at debug), and
  ``aiohttp.access`` (paths, queries, user agents) is dropped whatever its
  level: the `logger` plugin writes the one line per request.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import time
import traceback
from collections.abc import Mapping, MutableMapping
from typing import Any, BinaryIO, Literal, TextIO

import msgspec
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

__all__ = [
    "LIBRARY_EVENT",
    "LogFormat",
    "RecordWriter",
    "SafeException",
    "configure_logging",
    "error_name",
    "safe_stack",
]

LogFormat = Literal["json", "console"]

LIBRARY_EVENT = "library_log"
_MAX_FRAMES = 30
_MAX_MESSAGE = 300
# Loggers whose arguments come from client traffic, and asyncio's reprs.
_TEMPLATE_ONLY = ("aiohttp.server", "aiohttp.web", "aiohttp.internal", "aiohttp.websocket",
                  "asyncio")
_DROPPED = "aiohttp.access"


def error_name(exc: BaseException) -> str:
    """The type of the error behind `exc` (its cause's, for a wrapper such as
    `StoreError`), for a log field: never its message."""
    return type(exc.__cause__ or exc).__qualname__


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


class _LibraryRecord:
    """Turns a standard-library record into one `LIBRARY_EVENT` (see the module docstring)."""

    __slots__ = ()

    def __call__(self, logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
        record = event_dict.get("_record")
        if not isinstance(record, logging.LogRecord) or event_dict.get("_from_structlog"):
            return event_dict
        args = event_dict.pop("positional_args", ())
        event_dict.pop("stack_info", None)
        event_dict["event"] = LIBRARY_EVENT
        event_dict["logger"] = record.name
        if _is(record.name, _TEMPLATE_ONLY):
            event_dict["message"] = _template_head(record.msg)
        else:
            exc_info = event_dict.get("exc_info")
            exc = exc_info[1] if isinstance(exc_info, tuple) else None
            event_dict["message"] = _rendered(record.msg, args, exc)
        return event_dict


class _LibraryFilter(logging.Filter):
    """Drops aiohttp's access log and libraries' debug records."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _is(record.name, (_DROPPED,)):
            return False
        return record.levelno >= logging.INFO


def _is(name: str, loggers: tuple[str, ...]) -> bool:
    return any(name == x or name.startswith(x + ".") for x in loggers)


def _plain(arg: object) -> object:
    if isinstance(arg, str | int | float) or arg is None:
        return arg
    return type(arg).__qualname__  # an exception's or object's repr may hold anything


def _rendered(msg: object, args: object, exc: BaseException | None) -> str:
    template = msg if isinstance(msg, str) else type(msg).__qualname__
    try:
        if isinstance(args, Mapping):
            text = template % {k: _plain(v) for k, v in args.items()}
        elif isinstance(args, tuple) and args:
            text = template % tuple(_plain(a) for a in args)
        else:
            text = template
    except (TypeError, ValueError, KeyError):
        text = _template_head(template)
    if exc is not None:  # a message that quotes its own exception (f"failed: {e}")
        for said in (repr(exc), str(exc)):
            if said:
                text = text.replace(said, type(exc).__qualname__)
    return text.split("\n", 1)[0].strip()[:_MAX_MESSAGE]


def _template_head(msg: object) -> str:
    text = msg if isinstance(msg, str) else type(msg).__qualname__
    text = text.split("\n", 1)[0]
    for stop in ("(", "<"):
        cut = text.find(stop)
        if cut != -1:
            text = text[:cut]
    return text.strip()[:_MAX_MESSAGE]


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
        _LineLoggerFactory(binary) if binary is not None else structlog.PrintLoggerFactory(out)
    )
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,  # `worker` under serve --workers N
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    safe: list[Processor] = [SafeException()]
    if fmt != "json":
        safe.append(_exception_as_text)
    global _direct
    processors = [*shared, *safe, own_renderer]
    # What RecordWriter writes straight to the stream: a JSON line to bytes.
    _direct = (processors, own_renderer, numeric) if binary is not None else None
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        pass_foreign_args=True,
        processors=[
            _LibraryRecord(),
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *safe,
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    handler.addFilter(_LibraryFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_lunos", False):
            root.removeHandler(old)
    handler._lunos = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(numeric)
    # The logger plugin writes the one line per request (and _LibraryFilter
    # drops these records should anyone enable aiohttp's access log).
    logging.getLogger(_DROPPED).disabled = True


# Set by configure_logging when lines go to a binary stream as JSON: the
# processors it configured, their renderer and the lowest level written.
_direct: tuple[list[Processor], Processor, int] | None = None
_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
# What follows a record's fields and context: its level, then the time.
_LEVEL_TAILS = {name: b',"level":"' + name.encode() + b'","timestamp":"' for name in _LEVELS}
_CONTEXT_PREFIX = "structlog_"
_encode = msgspec.json.encode


class _LineLogger(structlog.BytesLogger):
    """structlog's BytesLogger, whose stream `RecordWriter` also writes
    whole lines to: one write of a line and its newline, then a flush. A
    buffered stream's write is atomic, so no line is split by another
    thread's, without the lock and the copy `msg` makes."""

    def __init__(self, file: BinaryIO) -> None:
        super().__init__(file)
        self.stream = file


class _LineLoggerFactory:
    __slots__ = ("_file",)

    def __init__(self, file: BinaryIO) -> None:
        self._file = file

    def __call__(self, *args: Any) -> _LineLogger:
        return _LineLogger(self._file)


class RecordWriter:
    """Writes a record (a msgspec Struct of plain fields) as one log line.

    `log_record("request", "info", record)` puts out the line that
    ``log.info("request", **msgspec.to_builtins(record))`` would, byte for
    byte but the instant in `timestamp`: the record's fields, ``event``,
    the context variables, ``level`` and ``timestamp``, in that order. When
    logging is as `configure_logging` set it up for JSON to a binary stream
    (stdout), the line is put together from the record's msgspec encoding
    and written to the stream without structlog's processor chain (about a
    tenth of the proxy's CPU under load, for the `logger` plugin's one line
    per request). Otherwise, and whenever the processors have been changed
    since (structlog's `capture_logs` in a test), it goes through `log`.
    """

    __slots__ = ("_log", "_stream")

    def __init__(self, log: Any) -> None:
        self._log = log
        sink = getattr(log, "_logger", None)
        direct = _direct
        ours = direct is not None and getattr(log, "_processors", None) is direct[0]
        self._stream = sink.stream if ours and isinstance(sink, _LineLogger) else None

    def log_record(self, event: str, level: str, record: msgspec.Struct) -> None:
        direct, stream = _direct, self._stream
        if stream is None or direct is None or direct[0][-1] is not direct[1]:
            getattr(self._log, level)(event, **msgspec.to_builtins(record))
            return
        if _LEVELS[level] < direct[2]:
            return
        fields = _encode(record)
        head = fields[:-1] + b"," if len(fields) > 2 else b"{"
        context = b""
        ctx = contextvars.copy_context()
        if ctx:  # under `serve --workers N`: the worker's number
            names = record.__struct_fields__
            for var in ctx:
                name = var.name
                if name.startswith(_CONTEXT_PREFIX) and ctx[var] is not Ellipsis:
                    key = name[len(_CONTEXT_PREFIX) :]
                    if key in names:  # structlog's rule for the clash needs the dict: its path
                        getattr(self._log, level)(event, **msgspec.to_builtins(record))
                        return
                    if key != "event":
                        context += b"," + _encode(key) + b":" + _encode(ctx[var])
        stream.write(
            b"".join(
                (
                    head,
                    b'"event":',
                    _encode(event),
                    context,
                    _LEVEL_TAILS[level],
                    _timestamp(),
                    b'"}\n',
                )
            )
        )
        stream.flush()


_second: tuple[int, bytes] = (-1, b"")
# A second's fraction, as structlog writes it, in two halves.
_MILLIS = [b".%03d" % n for n in range(1000)]
_MICROS = [b"%03dZ" % n for n in range(1000)]


def _timestamp() -> bytes:
    """Now as structlog's ``TimeStamper(fmt="iso", utc=True)`` writes it
    (``2026-12-07T13:09:41.123456Z``, no fraction on a whole second), with
    the date and time of day made once a second."""
    global _second
    now = time.time()
    second = int(now)
    if second != _second[0]:
        _second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)).encode())
    micros = int((now - second) * 1_000_000)
    if micros:
        return _second[1] + _MILLIS[micros // 1000] + _MICROS[micros % 1000]
    return _second[1] + b"Z"
