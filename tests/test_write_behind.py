"""The write-behind loop writes once per interval what was recorded when
it began, even while rows keep arriving during each write (steady load)."""

from __future__ import annotations

import asyncio

from lunos_proxy.write_behind import WriteBehind


class _Queue(WriteBehind[list[int]]):
    """Rows are numbers; each write sees one more row arrive meanwhile."""

    def __init__(self, pieces: int = 1, piece: int = 1_000) -> None:
        super().__init__(flush_interval=3600)
        self.rows: list[int] = []
        self.written: list[list[int]] = []
        self.piece = piece
        self.pieces = pieces
        self.fail = False
        self.arrived = 0

    def record(self, row: int) -> None:
        self.rows.append(row)

    def _pieces(self) -> int:
        return self.pieces

    def _cut(self) -> list[int] | None:
        if not self.rows:
            return None
        batch, self.rows = self.rows[: self.piece], self.rows[self.piece:]
        return batch

    async def _write(self, batch: list[int]) -> bool:
        await asyncio.sleep(0)  # the round trip, while a request ends
        self.arrived += 1
        self.record(1_000 + self.arrived)
        if self.fail:
            return False
        self.written.append(batch)
        return True

    def _gauge(self) -> None:
        pass

    @property
    def backlog(self) -> int:
        return len(self.rows) + (len(self._batch) if self._batch is not None else 0)


async def test_the_loops_flush_stops_at_what_was_recorded_when_it_began() -> None:
    q = _Queue()
    q.record(1)
    q.record(2)
    assert await q._flush(q._pieces())
    assert q.written == [[1, 2]]
    assert q.rows == [1_001]  # arrived during the write: the next interval's


async def test_a_backlog_cut_in_pieces_is_written_in_as_many_cuts() -> None:
    q = _Queue(pieces=3, piece=2)
    for row in range(6):
        q.record(row)
    assert await q._flush(q._pieces())
    assert q.written == [[0, 1], [2, 3], [4, 5]]
    assert q.rows == [1_001, 1_002, 1_003]


async def test_a_batch_a_failed_write_left_goes_first_then_one_new_cut() -> None:
    q = _Queue()
    q.record(1)
    q.fail = True
    assert not await q._flush(q._pieces())
    assert q._batch == [1] and q.rows == [1_001]
    q.fail = False
    assert await q._flush(q._pieces())
    assert q.written == [[1], [1_001, 1_002]]  # the retried batch, then one cut
    assert q.rows == [1_003]


async def test_flush_and_drain_still_write_until_nothing_is_left() -> None:
    q = _Queue()
    q.record(1)
    arrivals = iter(range(3))

    async def write(batch: list[int]) -> bool:
        n = next(arrivals, None)
        if n is not None:
            q.record(1_000 + n)  # only the first three writes see another row arrive
        q.written.append(batch)
        return True

    q._write = write  # type: ignore[method-assign]
    assert await q.flush()
    assert q.written == [[1], [1_000], [1_001], [1_002]]
    assert q.backlog == 0
    q.record(2)
    assert await q.drain() == 0
    assert q.written[-1] == [2]
