"""The request id plugin's random ids: drawn from a pool, never repeated, not shared by forks."""

from __future__ import annotations

import os

from plugins.request_id import RandomHex


def test_ids_are_distinct_across_pool_refills() -> None:
    ids = RandomHex(pool=40)  # three 12-byte ids per fetch, then a new pool
    made = [ids.hex(12) for _ in range(30)]
    assert all(len(i) == 24 and int(i, 16) >= 0 for i in made)
    assert len(set(made)) == 30


def test_a_request_larger_than_the_pool_gets_all_its_bytes() -> None:
    assert len(RandomHex(pool=8).hex(20)) == 40


def test_a_forked_child_does_not_repeat_the_parents_ids() -> None:
    ids = RandomHex()
    ids.hex(12)  # the pool is filled before the fork
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, then exit at once
        os.write(write, ids.hex(12).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 100).decode()
    os.close(read)
    assert len(child) == 24
    assert child != ids.hex(12)  # the parent's next id, from the bytes the child inherited
