"""The tokenizer process counts exactly what the tables in this process would.

A serving process that did not load the tables before serving counts in a
process of its own (plugins/meter/tokenizer_process.py), so that the ~1 s
load never holds the interpreter lock the event loop needs.
"""

from __future__ import annotations

import os
import signal
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from plugins.meter import estimate, tokenizer_process


@pytest.fixture
def remote(monkeypatch: pytest.MonkeyPatch) -> Iterator[estimate._TokenizerProcess]:
    """No tables in this process: every count goes to a fresh tokenizer process."""
    process = estimate._TokenizerProcess()
    monkeypatch.setattr(estimate, "_loaded", {})
    monkeypatch.setattr(estimate, "_process", process)
    yield process
    process.stop()


def _reference(encoding: str) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import bpe_openai

        return bpe_openai.get_encoding(encoding)


TEXTS = [
    "Hello, world!",
    "Grüße aus Köln — ½ € and 東京 🚀",
    "def f(x):\n\treturn x ** 2  # spaces   and\ttabs\n",
    "a" * 3000,
]


@pytest.mark.parametrize("encoding", ["o200k_base", "cl100k_base"])
def test_counts_match_the_tables(remote: estimate._TokenizerProcess, encoding: str) -> None:
    tables = _reference(encoding)
    for text in TEXTS:
        assert estimate._count(text, encoding) == len(tables.encode_ordinary(text)), text
    assert estimate._loaded == {}  # counted there, not here
    assert remote._proc is not None and remote._proc.poll() is None


def _niceness(pid: int) -> int:
    # /proc/PID/stat: the 19th field, after "pid (comm)"; comm may hold spaces.
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rpartition(")")[2].split()[16])


def test_it_runs_below_its_serving_process(remote: estimate._TokenizerProcess) -> None:
    assert estimate._count("one two", "o200k_base") == 2
    assert remote._proc is not None
    ours = _niceness(os.getpid())
    assert _niceness(remote._proc.pid) == min(19, ours + tokenizer_process.NICENESS)
    assert _niceness(os.getpid()) == ours  # only the child moved


def test_a_long_text_is_counted_in_pieces(remote: estimate._TokenizerProcess) -> None:
    long = "hello " * 200_000  # past what one call takes (a million characters)
    assert estimate._count(long, "o200k_base") == 200_001


def test_a_lone_surrogate_crosses_the_pipe(remote: estimate._TokenizerProcess) -> None:
    # JSON's "\ud800" decodes to a str no UTF-8 codec takes as it is.
    assert estimate._count("x \ud800 y", "o200k_base") > 0


def test_a_killed_tokenizer_process_is_started_again(
    remote: estimate._TokenizerProcess,
) -> None:
    assert estimate._count("one two three", "o200k_base") == 3
    assert remote._proc is not None
    first = remote._proc.pid
    os.kill(first, signal.SIGKILL)
    remote._proc.wait()
    assert estimate._count("one two three four", "o200k_base") == 4
    assert remote._proc is not None and remote._proc.pid != first


def test_it_stops_with_its_serving_process(remote: estimate._TokenizerProcess) -> None:
    assert estimate._count("one", "cl100k_base") == 1
    proc = remote._proc
    assert proc is not None
    remote.stop()  # what exit does (atexit): its input ends, and so does it
    assert proc.returncode == 0
    assert remote._proc is None


# -- when the tokenizer process fails: the count is still made, here -------------------


def _script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "tokenizer_stand_in.py"
    path.write_text(f"import sys, time\n{body}\n")
    return path


def test_a_process_that_never_answers_is_killed_and_the_count_made_here(
    remote: estimate._TokenizerProcess, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(estimate, "_SCRIPT", _script(tmp_path, "sys.stdin.buffer.read(1)\ntime.sleep(600)"))
    monkeypatch.setattr(estimate, "FIRST_ANSWER_SECONDS", 0.5)
    started = time.monotonic()
    with capture_logs() as logged:
        assert estimate._count("one two three", "o200k_base") == 3
    assert time.monotonic() - started < 30  # half a second of waiting, then the tables here
    assert remote.failed == "the tokenizer process did not answer in 0.5 s"
    assert remote._proc is None  # killed, and its status read
    assert logged == [{"event": "tokenizer_process_failed", "log_level": "warning",
                       "reason": remote.failed}]
    assert estimate._count("four", "o200k_base") == 1  # from now on, here at once


def test_a_process_that_exits_at_once_leaves_the_count_to_this_one(
    remote: estimate._TokenizerProcess, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # What a child that cannot import the tokenizer does.
    monkeypatch.setattr(estimate, "_SCRIPT", _script(tmp_path, "sys.exit(1)"))
    assert estimate._count("one two three", "cl100k_base") == 3
    assert remote.failed == "the tokenizer process stopped without an answer"


def test_a_process_that_cannot_start_leaves_the_count_to_this_one(
    remote: estimate._TokenizerProcess, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(estimate.sys, "executable", str(tmp_path / "no-python-here"))
    assert estimate._count("one two three", "o200k_base") == 3
    assert remote.failed == "the tokenizer process could not start (No such file or directory)"


def test_the_process_is_told_where_the_tokenizer_is_installed() -> None:
    # It runs isolated (-I: no PYTHONPATH): an install found only through
    # PYTHONPATH is still found.
    assert (Path(estimate._tables_path()) / "bpe_openai" / "__init__.py").is_file()
