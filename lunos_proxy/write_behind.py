"""The loop of a write-behind queue: write every interval, back off while the
backend fails, write what is left at shutdown.

    class Ledger(WriteBehind[Batch]):
        lost_event = "usage_lost_at_shutdown"
        def _cut(self) -> Batch | None: ...          # what accumulated, as one batch
        async def _write(self, b: Batch) -> bool: ...  # False if the backend failed
        def _gauge(self) -> None: ...                 # publish `backlog`
        @property
        def backlog(self) -> int: ...                 # what is not written yet

`flush` writes the batch a failed write left, then cuts and writes new
ones until nothing is left: a batch is retried as it was (same id), so a
backend that applied it but whose answer was lost can ignore the repeat.
`failed` and `recovered` log an outage once, not once per retry.

The meter's ledger (counters to the store) and the records writer (events
and the billing ledger to the database) are two such queues.
"""

from __future__ import annotations

import abc
import asyncio
from typing import Generic, TypeVar

import structlog

from .logs import error_name
from .metrics import Metrics

__all__ = ["WriteBehind"]

log = structlog.get_logger("lunos.meter")

B = TypeVar("B")


class WriteBehind(abc.ABC, Generic[B]):
    # The log event when usage could not be written before shutdown.
    lost_event = "usage_lost_at_shutdown"

    def __init__(self, metrics: Metrics, flush_interval: float) -> None:
        self.metrics = metrics
        self.flush_interval = flush_interval
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
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

    async def flush(self) -> bool:
        """Write everything recorded so far; False if the backend failed (kept for later)."""
        async with self._lock:
            while True:
                if self._batch is None:
                    self._batch = self._cut()
                    if self._batch is None:
                        return True
                if not await self._write(self._batch):
                    return False
                self._batch = None
                self._gauge()

    def failed(self, event: str, error: BaseException) -> None:
        """A write failed: logged as `event` once per outage."""
        if not self._failing:
            log.warning(event, error=error_name(error), backlog=self.backlog)
        self._failing = True

    def recovered(self, event: str) -> None:
        """A write succeeded: `event` is logged if the last one had failed."""
        if self._failing:
            log.warning(event)
        self._failing = False

    @property
    @abc.abstractmethod
    def backlog(self) -> int:
        """How much waits to be written."""

    async def _written(self) -> None:
        """Called after each flush that wrote everything."""

    async def _run(self) -> None:
        delay = self.flush_interval
        while not self._stopping:
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
            except TimeoutError:
                pass
            self._wake.clear()
            ok = await self.flush()
            # Back off while the backend is down, but not for long: the
            # backlog should drain soon after it returns.
            delay = self.flush_interval if ok else min(delay * 2, 2.0)
            if ok:
                await self._written()

    def wake(self) -> None:
        """Write now rather than at the next interval."""
        self._wake.set()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self, attempts: int = 3) -> None:
        # Not cancelled: a write cut off halfway could be applied and then
        # written again. The loop finishes its current flush and exits.
        self._stopping = True
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
        for i in range(attempts):
            if await self.flush():
                return
            await asyncio.sleep(0.2 * (i + 1))
        lost = self.backlog
        self.metrics.meter_dropped.labels("shutdown").inc(lost)
        log.error(self.lost_event, rows=lost)
