"""A smoke test every backend passes, TLS and Sentinel included. Each
protocol has a contract suite of its own (test_contract_<protocol>.py:
limits, directory, accounting, bus), which every backend passes with the
same exact outcomes.

Memory runs on a fake clock, so durations are checked exactly; Redis uses its
own `TIME`, so durations are checked to within a round trip or two.
"""

from __future__ import annotations

from lunos_proxy.store import Limit
from tests.store.backends import Backend
from tests.store.samples import make_key

# -- lifecycle ----------------------------------------------------------------


async def test_smoke_ping_key_and_hit(any_backend: Backend):
    s = any_backend.store
    await s.ping()
    await s.put_key(make_key("key-1", "h1"))
    assert await s.key_by_hash("h1") == make_key("key-1", "h1")
    limit = Limit("rpm", 2, 60)
    assert [(await s.hit(any_backend.tag, [limit])).allowed for _ in range(3)] == [
        True,
        True,
        False,
    ]
