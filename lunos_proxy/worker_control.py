"""What one worker of `serve --workers N` asks of all of them: reload, and answer.

A config reload changes the state of one process, and an admin request
reaches one worker (whichever the kernel gave the connection). So the
worker that takes ``POST /admin/reload`` does not reload by itself: it
leaves a request file in the workers' control directory (made by the parent,
named by ``LUNOS_WORKER_CONTROL``) and sends SIGHUP to the parent, which
passes it to every worker, as for an operator's SIGHUP. Each worker reloads
and then answers every request file that was there when its reload began,
with one small JSON file of its own; the asking worker collects one answer
per worker (or stops waiting after `wait` seconds) and answers the admin call
with all of them. Signals that arrive together are merged by the kernel, so
one reload may answer several requests: each answer reports a reload that
began after its request was made, which is what the caller needs.

Other admin writes need no such round: keys, accounts and bans live in the
store, and every worker hears their invalidations on the store's pub/sub.
A single process (no ``--workers``) has no control directory and reloads
in place, answering for itself as worker 0.
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
import signal
import time
import uuid
from dataclasses import dataclass
from typing import Any

__all__ = ["CONTROL_ENV", "Workers", "this_worker"]

CONTROL_ENV = "LUNOS_WORKER_CONTROL"  # set by the parent: "<dir>:<count>:<parent pid>"
WORKER_ENV = "LUNOS_WORKER_ID"  # set in each worker: 0 .. count-1


@dataclass(frozen=True)
class Workers:
    """The worker set as one worker sees it."""

    worker: int
    count: int
    directory: str
    parent: int

    # -- the asking side -----------------------------------------------------
    async def reload_all(self, wait: float = 30.0) -> tuple[list[dict[str, Any]], list[int]]:
        """Have every worker reload; their answers by worker, and who did not answer."""
        token = uuid.uuid4().hex
        request = os.path.join(self.directory, f"reload-{token}.req")
        _touch(request)
        answers: dict[int, dict[str, Any]] = {}
        try:
            if os.getppid() != self.parent:  # orphaned: no one to pass the signal on
                return [], list(range(self.count))
            os.kill(self.parent, signal.SIGHUP)
            deadline = time.monotonic() + wait
            while len(answers) < self.count and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
                for path in glob.glob(os.path.join(self.directory, f"reload-{token}.w*.json")):
                    answer = _read(path)
                    if answer is not None:
                        answers[int(answer["worker"])] = answer
        finally:
            for path in [request, *glob.glob(os.path.join(self.directory, f"reload-{token}.w*"))]:
                _remove(path)
        missing = [w for w in range(self.count) if w not in answers]
        return [answers[w] for w in sorted(answers)], missing

    # -- the answering side --------------------------------------------------
    def pending(self) -> list[str]:
        """Requests waiting now: a reload that begins after this answers them."""
        found = glob.glob(os.path.join(self.directory, "reload-*.req"))
        return [os.path.basename(p)[len("reload-"):-len(".req")] for p in found]

    def answer(self, tokens: list[str], answer: dict[str, Any]) -> None:
        body = json.dumps({**answer, "worker": self.worker, "pid": os.getpid()})
        for token in tokens:
            final = os.path.join(self.directory, f"reload-{token}.w{self.worker}.json")
            partial = final + ".part"  # renamed whole: the asker never reads half a file
            try:
                with open(partial, "w", encoding="utf-8") as f:
                    f.write(body)
                os.replace(partial, final)
            except OSError:  # the asker gave up and cleaned up meanwhile
                _remove(partial)


def this_worker() -> Workers | None:
    """This process's place in `serve --workers N`, or None for a single process."""
    control, worker = os.environ.get(CONTROL_ENV), os.environ.get(WORKER_ENV)
    if not control or worker is None:
        return None
    directory, count, parent = control.rsplit(":", 2)
    return Workers(int(worker), int(count), directory, int(parent))


def _touch(path: str) -> None:
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))


def _read(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass
