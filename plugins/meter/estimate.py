"""Counting tokens ourselves when a provider never reports usage.

Used only off the happy path (a stream cut short, a client gone, a provider
that sends no usage): the record is then marked ``usage_source: estimated``.

The tokenizer is `bpe_openai`, which ships OpenAI's BPE tables inside the
package (tiktoken would download them at first use, and production hosts
and CI have no such network access). For OpenAI models the counts are
OpenAI's encodings exactly: o200k_base for gpt-4o, gpt-4.1, gpt-5 and the
o-series, cl100k_base for gpt-4, gpt-3.5 and text-embedding-*. Chat input
adds OpenAI's documented framing (3 tokens a message, 1 for a name, 3 to
prime the reply). Other providers' tokenizers are not public: their models
are counted with o200k_base, a documented estimate (typically within 10-20%
of Claude's counts).

Nothing here runs on the event loop: counting a long text takes many
milliseconds, and a blocked loop stalls every request of the process.
`counted` runs a count on the one tokenizer thread.

Nor do the tables load in the serving process while it serves. Loading
them takes about a second of CPU and ~135 MB, and a load on another thread
is not enough: its native part holds the interpreter lock for tens of
milliseconds at a time, which stalled every request of the process (a p99
of half a second under load). So a process that did not load them before
serving has its counts made by a tokenizer process of its own
(`tokenizer_process.py`), started at the first count it needs, over a
pipe; the text goes there to be counted and nowhere else. Tables loaded
before serving (`preload`: ``preload_tokenizer``, and the parent of
``serve --workers N`` before it forks, so that the workers share the
pages) are used in place.
"""

from __future__ import annotations

import asyncio
import atexit
import importlib.util
import os
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

import msgspec
import structlog

from lunos_proxy.sse import NOT_JSON

from . import tokenizer_process
from .extract import TextPieces

__all__ = [
    "Tokenizer",
    "count_input",
    "count_output",
    "counted",
    "encoding_for",
    "preload",
    "tokenizer",
]

_CL100K_PREFIXES = ("gpt-4-", "gpt-3.5", "gpt-35", "text-embedding-")


class Tokenizer(Protocol):
    def encode_ordinary(self, text: str) -> list[int]: ...


log = structlog.get_logger("lunos.meter")
_lock = threading.Lock()
_loaded: dict[str, Tokenizer] = {}


def encoding_for(model: str) -> str:
    name = model.lower().rpartition("/")[2]
    if name == "gpt-4" or name.startswith(_CL100K_PREFIXES):
        return "cl100k_base"
    return "o200k_base"


def tokenizer(encoding: str) -> Tokenizer:
    """The named encoding's tables, loaded into this process once (thread-safe)."""
    found = _loaded.get(encoding)
    if found is not None:
        return found
    with _lock:
        if encoding not in _loaded:
            import bpe_openai

            with warnings.catch_warnings():
                # It reads its tables with a deprecated importlib API.
                warnings.simplefilter("ignore", DeprecationWarning)
                _loaded[encoding] = bpe_openai.get_encoding(encoding)
        return _loaded[encoding]


def preload(encodings: Iterable[str]) -> None:
    """Load these tables into this process now, on the calling thread (before serving)."""
    for encoding in encodings:
        tokenizer(encoding)


class TokenizerFailed(RuntimeError):
    """The tokenizer process could not start, stopped, or did not answer in time."""


class TokenizerRefused(TokenizerFailed):
    """The tokenizer refused a text (as it would in this process too)."""


def _counted_here(encoding: str, text: str) -> int:
    """`text`'s tokens, counted with tables loaded into this process."""
    return len(tokenizer(encoding).encode_ordinary(text))


# How long an answer may take: the first of a new process includes its start
# and loading a table (about a second; more on a loaded host), the others
# count at most `_PIECE` characters (about a millisecond).
FIRST_ANSWER_SECONDS = 60.0
ANSWER_SECONDS = 10.0


class _TokenizerProcess:
    """This process's tokenizer process: started at its first count, again
    after it died (once per count), and told to stop when this one exits.

    A process that cannot be started, or that stops or hangs (it is killed
    after the deadline above), is logged once (``tokenizer_process_failed``)
    and this process then counts with tables of its own (`tokenizer`): a
    count is usage billed, and a wrong environment must not make estimates
    free. The load then happens on the tokenizer thread, as it did before
    there was a tokenizer process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid = 0  # the process that started it (a forked child starts its own)
        self._answered = False  # whether the running process has answered once
        self.failed = ""  # why counts went back to this process, once they did

    def count(self, encoding: str, text: str) -> int:
        if self.failed:
            return _counted_here(encoding, text)
        try:
            return self._ask(encoding, text)
        except TokenizerRefused:
            raise
        except TokenizerFailed as e:
            self.failed = str(e)
            log.warning("tokenizer_process_failed", reason=self.failed)
            return _counted_here(encoding, text)

    def _ask(self, encoding: str, text: str) -> int:
        data = text.encode("utf-8", "surrogatepass")
        which = tokenizer_process.ENCODINGS.index(encoding)
        message = tokenizer_process.REQUEST.pack(which, len(data)) + data
        size = tokenizer_process.ANSWER.size
        with self._lock:
            for attempt in (1, 2):
                proc = self._running()
                assert proc.stdin is not None and proc.stdout is not None
                # A process that stops reading or answering is killed, which
                # ends the write or read waiting on it.
                deadline = ANSWER_SECONDS if self._answered else FIRST_ANSWER_SECONDS
                killed = threading.Event()
                hung = threading.Timer(deadline, _kill, (proc, killed))
                hung.daemon = True
                hung.start()
                try:
                    proc.stdin.write(message)
                    proc.stdin.flush()
                    answer = proc.stdout.read(size)
                except OSError:
                    answer = b""
                finally:
                    hung.cancel()
                if len(answer) == size:
                    self._answered = True
                    break
                self._stop()
                if killed.is_set():  # not again: another wait as long would follow
                    raise TokenizerFailed(f"the tokenizer process did not answer in {deadline:g} s")
                if attempt == 2:
                    raise TokenizerFailed("the tokenizer process stopped without an answer")
        (count,) = tokenizer_process.ANSWER.unpack(answer)
        if count < 0:
            raise TokenizerRefused("the tokenizer refused a text")
        return int(count)

    def _running(self) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._pid == os.getpid() and self._proc.poll() is None:
            return self._proc
        self._stop()  # one that died: its pipes closed, its status read
        self._proc, self._pid, self._answered = None, os.getpid(), False
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", str(_SCRIPT), _tables_path()],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # a terminal's Ctrl-C is for the server, which stops it
            )
        except OSError as e:
            raise TokenizerFailed(f"the tokenizer process could not start ({e.strerror})") from None
        return self._proc

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or self._pid != os.getpid():
            return
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        try:
            proc.wait(timeout=2)  # it exits when its input ends
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        with self._lock:
            self._stop()


def _kill(proc: subprocess.Popen[bytes], killed: threading.Event) -> None:
    killed.set()
    proc.kill()


def _tables_path() -> str:
    """Where the tokenizer package is installed: the child runs isolated
    (``-I``: no PYTHONPATH, no user site), so it is told where to look."""
    spec = importlib.util.find_spec("bpe_openai")
    places = list(spec.submodule_search_locations or []) if spec is not None else []
    return str(Path(places[0]).parent) if places else ""


_SCRIPT = Path(tokenizer_process.__file__)
_process = _TokenizerProcess()
atexit.register(_process.stop)


T = TypeVar("T")
_pool: tuple[int, ThreadPoolExecutor] | None = None


async def counted(count: Callable[[], T]) -> T:
    """`count()` run on the tokenizer thread, awaited without blocking the loop.

    One thread for the process: counts are rare (see the module's doc), and
    a second thread would only contend for the same lock while a table
    loads. Made on first use in each process, so a forked worker has its own.
    """
    global _pool
    pid = os.getpid()
    if _pool is None or _pool[0] != pid:
        _pool = (pid, ThreadPoolExecutor(1, thread_name_prefix="lunos-tokenizer"))
    return await asyncio.get_running_loop().run_in_executor(_pool[1], count)


# The tokenizer refuses a text of a million characters or of 200,000 tokens,
# and holds the GIL (the loop's too) for as long as one call runs: a long
# text is counted in pieces of about this many characters (~0.3 ms each),
# cut before a space so that no word is split.
_PIECE = 16_384


def _count(text: str, encoding: str) -> int:
    if not text:
        return 0
    count = _counted_here if encoding in _loaded else _process.count
    if len(text) <= _PIECE:
        return count(encoding, text)
    total, start, end = 0, 0, len(text)
    while start < end:
        stop = min(start + _PIECE, end)
        if stop < end:
            space = text.rfind(" ", start + _PIECE // 2, stop)
            stop = space if space > start else stop
        total += count(encoding, text[start:stop])
        start = stop
    return total


def count_output(model: str, pieces: TextPieces) -> int:
    # Past the held text only its length is known: ~4 characters a token.
    return _count(pieces.text(), encoding_for(model)) + (pieces.overflow + 3) // 4


_TEXT_KEYS = frozenset(
    {"content", "text", "prompt", "input", "system", "instructions", "arguments"}
)


def _strings(node: Any, out: list[str], take: bool) -> None:
    if isinstance(node, str):
        if take:
            out.append(node)
    elif isinstance(node, list):
        for item in node:
            _strings(item, out, take)
    elif isinstance(node, dict):
        for key, value in node.items():
            _strings(value, out, take or key in _TEXT_KEYS)


def count_input(model: str, endpoint: str, body: bytes) -> int:
    """Tokens of what the request sent: the text fields of its body."""
    encoding = encoding_for(model)
    try:
        doc = msgspec.json.decode(body)
    except NOT_JSON:  # text that is not UTF-8, say
        return 0
    if not isinstance(doc, dict):
        return 0
    messages = doc.get("messages")
    if endpoint in ("chat/completions", "messages") and isinstance(messages, list):
        total = 3  # every reply is primed with <|start|>assistant<|message|>
        for message in messages:
            if not isinstance(message, dict):
                continue
            parts: list[str] = []
            _strings(message.get("role", ""), parts, True)
            _strings(message.get("content"), parts, True)
            _strings(message.get("tool_calls"), parts, False)
            total += 3 + sum(_count(p, encoding) for p in parts)
            if message.get("name"):
                total += 1 + _count(str(message["name"]), encoding)
        rest: list[str] = []
        _strings({k: v for k, v in doc.items() if k in ("system", "tools")}, rest, False)
        return total + sum(_count(p, encoding) for p in rest)
    parts = []
    _strings({k: v for k, v in doc.items() if k in _TEXT_KEYS}, parts, True)
    return sum(_count(p, encoding) for p in parts)
