"""Find callbacks that did work on the event loop for too long.

asyncio's own detector (debug mode, ``loop.slow_callback_duration``) times
each callback by the wall clock. On a machine shared with other jobs a
callback that was merely preempted by the OS for 60 ms is reported like one
that computed for 60 ms, so a test built on it fails at random. This one
times each callback by the CPU time of the loop's thread
(`time.thread_time`): work done on the loop counts, time the OS gave to
other processes or that the thread spent waiting for the GIL (held by a
table loading on another thread) does not. asyncio's wall-clock warnings
are collected too, to say more in a failure message; they do not fail a
test by themselves.

Every callback of the loop is a `Handle` (a task's step included), so
wrapping `Handle._run` sees all of them on the pure-Python loop the tests
run (not under uvloop).

The cycle collector is paused while the block runs (after one collection):
a collection's pause depends on everything the test process holds, the
whole suite's leftovers included, not on the code under test, and `serve`
keeps it off its startup heap (`cli.freeze_startup_heap`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = ["LoopWork", "watch_loop"]


@dataclass
class LoopWork:
    threshold: float
    slow: list[tuple[float, str]] = field(default_factory=list)  # (CPU seconds, callback)
    callbacks: int = 0
    longest: tuple[float, str] = (0.0, "")  # the most CPU one callback used
    wall_warnings: list[str] = field(default_factory=list)

    def report(self) -> str:
        lines = [f"{cpu * 1000:.1f} ms CPU: {what}" for cpu, what in self.slow]
        lines += [f"asyncio (wall clock): {w}" for w in self.wall_warnings]
        return "\n".join(lines)


class _WallWarnings(logging.Handler):
    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("Executing"):
            self.into.append(record.getMessage()[:300])


@contextlib.contextmanager
def watch_loop(threshold: float = 0.05) -> Iterator[LoopWork]:
    """Record every callback of the running loop's thread that used more
    than `threshold` seconds of CPU, while the block runs."""
    loop = asyncio.get_running_loop()
    work = LoopWork(threshold)
    original = asyncio.events.Handle._run

    def timed(handle: asyncio.Handle) -> None:
        start = time.thread_time()
        try:
            original(handle)
        finally:
            work.callbacks += 1
            cpu = time.thread_time() - start
            if cpu > work.longest[0]:
                work.longest = (cpu, repr(handle)[:300])
            if cpu > threshold:
                work.slow.append((cpu, repr(handle)[:300]))

    handler = _WallWarnings(work.wall_warnings)
    asyncio_log = logging.getLogger("asyncio")
    debug, slow = loop.get_debug(), loop.slow_callback_duration
    asyncio_log.addHandler(handler)
    loop.set_debug(True)
    loop.slow_callback_duration = threshold
    asyncio.events.Handle._run = timed  # type: ignore[method-assign]
    collecting = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield work
    finally:
        if collecting:
            gc.enable()
        asyncio.events.Handle._run = original  # type: ignore[method-assign]
        loop.set_debug(debug)
        loop.slow_callback_duration = slow
        asyncio_log.removeHandler(handler)
