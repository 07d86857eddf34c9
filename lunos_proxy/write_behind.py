"""The loop of a write-behind queue: write every interval, back off while the
backend fails, write what is left at shutdown.

    class Ledger(WriteBehind[Batch]):
        def _cut(self) -> Batch | None: ...          # what accumulated, as one batch
        async def _write(self, b: Batch) -> bool: ...  # False if the backend failed
        def _gauge(self) -> None: ...                 # publish `backlog`
        @property
        def backlog(self) -> int: ...                 # what is not written yet

`flush` writes the batch a failed write left, then cuts and writes new
ones until nothing is left: a batch is retried as it was (same id), so a
backend that applied it but whose answer was lost can ignore the repeat.
The loop's own flush each interval stops at what was recorded when it
began (`_pieces` cuts): what is recorded while a batch is on its way waits
for the next interval. Under steady load, cutting until nothing is left
never ends: it wrote a batch per round trip (about 50 a second at 2,000
requests a second, each a store call or a database transaction) instead
of one per interval.
`failed` and `recovered` say when to log an outage (once, not per retry);
`drain` (for a subclass's `stop`) says how much could not be written.

The meter's ledger (counters to the store) and the records writer (events
and the billing ledger to the database) are two such queues.
"""

from __future__ import annotations

import abc
import asyncio
from typing import Generic, TypeVar

__all__ = ["WriteBehind"]

B = TypeVar("B")


class WriteBehind(abc.ABC, Generic[B]):
    def __init__(self, flush_interval: float) -> None:
        self.flush_interval = flush_interval
        self._task: asyncio.Task[None] | None = None
        self._waiting: asyncio.Future[None] | None = None  # the loop's sleep
        self._woken = False  # `wake` came while the loop was not asleep
        self._stopping = False
        self._batch: B | None = None  # cut, not written yet
        self._lock = asyncio.Lock()
        self._failing = False

    @abc.abstractmethod
    def _cut(self) -> B | None:
        """What accumulated since the last cut, as one batch (None: nothing)."""

    @abc.abstractmethod
    async def _write(self, batch: B) -> bool:
        """Write `batch` (or its steps not written yet); False if the backend failed."""

    @abc.abstractmethod
    def _gauge(self) -> None:
        """Publish `backlog`."""

    def _collect(self) -> None:
        """Take in what was recorded since the last tick: called at every
        tick of the loop, before it writes, also while the backend fails
        (for a subclass that records cheaply and sums at intervals)."""

    def _pieces(self) -> int:
        """How many cuts take what is recorded now (a subclass that cuts a
        large backlog in pieces says how many)."""
        return 1

    async def flush(self) -> bool:
        """Write everything recorded so far; False if the backend failed (kept for later)."""
        return await self._flush(None)

    async def _flush(self, cuts: int | None) -> bool:
        """`flush`, cutting at most `cuts` new batches (None: until nothing is left)."""
        async with self._lock:
            while cuts is None or cuts > 0 or self._batch is not None:
                if self._batch is None:
                    self._batch = self._cut()
                    if self._batch is None:
                        return True
                    if cuts is not None:
                        cuts -= 1
                if not await self._write(self._batch):
                    return False
                self._batch = None
                self._gauge()
            return True

    def failed(self) -> bool:
        """A write failed; True if it is the first since the last success."""
        first, self._failing = not self._failing, True
        return first

    def recovered(self) -> bool:
        """A write succeeded; True if the one before had failed."""
        was, self._failing = self._failing, False
        return was

    @property
    @abc.abstractmethod
    def backlog(self) -> int:
        """How much waits to be written."""

    async def _written(self) -> None:
        """Called after each of the loop's flushes that succeeded."""

    async def _run(self) -> None:
        delay = self.flush_interval
        while not self._stopping:
            await self._sleep(delay)
            self._collect()
            # What was recorded until now (a batch a failed write left first).
            ok = await self._flush(self._pieces())
            # Back off while the backend is down, but not for long: the
            # backlog should drain soon after it returns.
            delay = self.flush_interval if ok else min(delay * 2, 2.0)
            if ok:
                await self._written()

    async def _sleep(self, delay: float) -> None:
        """Return after `delay` seconds, or sooner if woken.

        A future and a timer, not `asyncio.wait_for(event.wait(), delay)`,
        which makes a task and raises and catches TimeoutError each time:
        five times the CPU, at every interval of every queue."""
        if self._woken:
            self._woken = False
            return
        loop = asyncio.get_running_loop()
        waiting = self._waiting = loop.create_future()
        timer = loop.call_later(delay, _wake_up, waiting)
        try:
            await waiting
        finally:
            timer.cancel()
            self._waiting = None

    def wake(self) -> None:
        """Write now rather than at the next interval."""
        if self._waiting is not None:
            _wake_up(self._waiting)
        else:
            self._woken = True

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def drain(self, attempts: int = 3) -> int:
        """Stop the loop and write what is left; returns how much could not be."""
        # Not cancelled: a write cut off halfway could be applied and then
        # written again. The loop finishes its current flush and exits.
        self._stopping = True
        self.wake()
        task, self._task = self._task, None
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
        for i in range(attempts):
            if await self.flush():
                return 0
            await asyncio.sleep(0.2 * (i + 1))
        return self.backlog


def _wake_up(waiting: asyncio.Future[None]) -> None:
    if not waiting.done():
        waiting.set_result(None)
