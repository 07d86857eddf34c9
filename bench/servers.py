"""Starting, probing, placing and watching the servers a benchmark drives."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cases import MODEL

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OUT = BENCH / "out"
HOST = "127.0.0.1"
PATH = "/v1/chat/completions"


class Failure(Exception):
    """A server did not start or answer correctly, or the load generator saw errors."""


@dataclass(frozen=True)
class Cores:
    """Which CPU each party runs on; None everywhere when nothing is pinned."""

    load: int | None  # wrk and the driver
    server: int | None  # the server under test, alone
    upstream: int | None  # the fake provider behind floor and Lunos

    def describe(self) -> str:
        if self.server is None:
            return "not pinned"
        return (
            f"server under test alone on core {self.server}; wrk and driver on core "
            f"{self.load}; upstream fake provider on core {self.upstream}"
        )


def choose_cores(pin: bool) -> Cores:
    cores = sorted(os.sched_getaffinity(0))
    if not pin or len(cores) < 2:
        return Cores(None, None, None)
    if shutil.which("taskset") is None:
        print("taskset not found (util-linux): servers run unpinned", file=sys.stderr)
        return Cores(None, None, None)
    upstream = cores[2] if len(cores) > 2 else cores[0]
    return Cores(load=cores[0], server=cores[1], upstream=upstream)


def pinned(cmd: list[str], core: int | None) -> list[str]:
    # taskset execs the command, so the child's pid stays the server's pid.
    return cmd if core is None else ["taskset", "-c", str(core), *cmd]


def prioritise(pid: int) -> None:
    """Give a process started with SPAWN the driver's niceness (see --nice).

    With sched_autogroup the kernel schedules each session as one group and
    niceness only ranks processes within it; so every process the bench
    starts has a session of its own, and that session's group is reniced.
    """
    nice = os.getpriority(os.PRIO_PROCESS, 0)
    with contextlib.suppress(OSError), open(f"/proc/{pid}/autogroup", "w") as f:
        f.write(str(nice))


# How the bench starts every process (server, wrk, py-spy); then prioritise().
SPAWN: dict[str, Any] = {"start_new_session": True}


def python() -> str:
    venv = ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def request_body(stream: bool) -> bytes:
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        # Asked as OpenAI's clients ask for it: a translated stream (the
        # "translated streamed" case) carries usage only when asked.
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return json.dumps(body, separators=(",", ":")).encode()


def probe(url: str, stream: bool, timeout: float = 5.0) -> tuple[int, str, bytes]:
    """One request as the load generator sends it: (status, content type, body)."""
    req = urllib.request.Request(
        url + PATH,
        data=request_body(stream),
        headers={"Content-Type": "application/json", "Authorization": "Bearer sk-bench"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read()


def answer_problem(status: int, content_type: str, body: bytes, stream: bool) -> str | None:
    """Why an answer is not the completion the fake provider sends, or None."""
    if status != 200:
        return f"answered {status}: {body[:300]!r}"
    if stream:
        if not content_type.startswith("text/event-stream"):
            return f"streamed answer has content type {content_type!r}"
        if b"data: [DONE]" not in body or b'"usage"' not in body:
            return f"stream lacks the usage chunk or [DONE]: {body[:300]!r}"
    elif b'"choices"' not in body or b'"usage"' not in body:
        return f"answer is not a completion with usage: {body[:300]!r}"
    return None


@dataclass
class Server:
    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def tail(self, lines: int = 25) -> str:
        try:
            text = self.log.read_text(errors="replace").rstrip()
        except OSError:
            text = ""
        return "\n".join(text.splitlines()[-lines:]) or "(no output)"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start(
    name: str, cmd: list[str], port: int, stream: bool, timeout: float, cwd: Path = ROOT
) -> Server:
    """Start a server and wait until it answers a real request correctly.

    Its output goes to bench/out/NAME.log; a failure carries the log's tail.
    """
    log = OUT / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd, **SPAWN
        )
    prioritise(proc.pid)
    server = Server(name, f"http://{HOST}:{port}", proc, log)
    label = name.split("-")[0]
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise Failure(
                f"{label} failed to start: exited with code {proc.returncode}; "
                f"output ({log}):\n{server.tail()}"
            )
        try:
            answer = probe(server.url, stream)
        except OSError:  # not listening yet (URLError is an OSError)
            if time.monotonic() > deadline:
                server.stop()
                raise Failure(
                    f"{label} failed to start: no answer on port {port} after {timeout:g} s; "
                    f"output ({log}):\n{server.tail()}"
                ) from None
            time.sleep(0.1)
            continue
        problem = answer_problem(*answer, stream)
        if problem is not None:
            server.stop()
            raise Failure(f"{label} failed to start: {problem}; output ({log}):\n{server.tail()}")
        return server


def _tree(pid: int) -> Iterator[int]:
    yield pid
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                children = f.read().split()
        except OSError:
            continue
        for child in children:
            yield from _tree(int(child))


def _status_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _sched_seconds(pid: int) -> tuple[float, float]:
    """(CPU time of a process tree, run-queue wait of its root), all threads,
    in seconds. A child's wait is not the server's: Lunos's tokenizer process
    runs at a lower priority and waits whenever the server computes."""
    run = wait = 0
    for p in _tree(pid):
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{p}/task/{tid}/schedstat") as f:
                    fields = f.read().split()
            except OSError:
                continue
            run += int(fields[0])
            if p == pid:
                wait += int(fields[1])
    return run / 1e9, wait / 1e9


def wait_until_idle(pid: int, timeout: float = 5.0) -> None:
    """Return once a process tree has used under a tenth of a core for 0.2 s,
    or after `timeout`: what a warmup's last requests started (Lunos's
    tokenizer process, loading its tables at a lower priority when wrk
    cut requests short) is done before a measured run begins."""
    deadline = time.monotonic() + timeout
    used = _sched_seconds(pid)[0]
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = _sched_seconds(pid)[0]
        if now - used < 0.02:
            return
        used = now


class Watch:
    """What a server used, and how long it was kept waiting, while in the block.

    Peak memory is the server process's own: the kernel's high-water mark
    (VmHWM, the peak since the process started) and VmRSS sampled every
    50 ms. Its child processes (Lunos's tokenizer process, loaded by the
    first usage estimate) are summed apart, sampled likewise: `child_mb`. `cpu_percent` is the server's CPU time over the wall time;
    `wait_percent` the time it sat ready to run while another process had
    its core (the server has its core to itself, so that is a neighbour
    outside the bench): a row with much of it measured the machine, not the
    server.
    """

    __slots__ = (
        "_children_kb", "_peak_kb", "_pid", "_start", "_stop", "_thread", "cpu_percent",
        "wait_percent",
    )  # fmt: skip

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._peak_kb = 0
        self._children_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._start = (0.0, 0.0, 0.0)
        self.cpu_percent = 0.0
        self.wait_percent = 0.0

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self._peak_kb = max(self._peak_kb, _status_kb(self._pid, "VmRSS:"))
            children = sum(_status_kb(p, "VmRSS:") for p in _tree(self._pid) if p != self._pid)
            self._children_kb = max(self._children_kb, children)

    def _clocks(self) -> tuple[float, float, float]:
        return (time.monotonic(), *_sched_seconds(self._pid))

    def __enter__(self) -> Watch:
        self._start = self._clocks()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        end = self._clocks()
        self._stop.set()
        self._thread.join()
        wall, run, wait = (b - a for a, b in zip(self._start, end, strict=True))
        wall = max(wall, 1e-9)
        self.cpu_percent = 100 * run / wall
        self.wait_percent = 100 * wait / wall
        self._peak_kb = max(self._peak_kb, _status_kb(self._pid, "VmHWM:"))

    @property
    def peak_mb(self) -> float:
        return self._peak_kb / 1024

    @property
    def child_mb(self) -> float:
        return self._children_kb / 1024
