"""Limit calls while a Redis Cluster slot moves between nodes: a call the
Cluster did not run (MOVED, ASK, TRYAGAIN) is sent again where the slot is,
and counts exactly once (tests/plugins/abuse/test_cluster_migration.py has
eight instances of the proxy doing the same)."""

from __future__ import annotations

import asyncio

from redis.crc import key_slot

from lunos_proxy.store import Limit
from lunos_proxy.store.redis import RedisStore
from tests.redis_servers import RedisCluster, SlotMove


async def test_a_call_whose_keys_a_move_splits_waits_for_the_move_and_counts_once(
    redis_cluster: RedisCluster,
) -> None:
    cluster = redis_cluster
    store = RedisStore(cluster.url, timeout=10, connect_timeout=10)
    limit, peek = Limit("rpd", 10, 86_400), Limit("rpd", 10, 86_400, cost=0)
    try:
        # Its keys: the account's limit hash and a ban key that does not exist.
        assert (await store.hit("acct-1", [limit], bans=["x"])).states[0].remaining == 9
        move = SlotMove(cluster, key_slot(b"lunos:{acct-1}:limits"))
        move.begin()
        hit = asyncio.create_task(store.hit("acct-1", [limit], bans=["x"]))
        await asyncio.sleep(0.3)
        # The owner holds one key of the call and not the other: TRYAGAIN.
        assert not hit.done()
        move.move_keys()
        await asyncio.sleep(0.3)
        # ASK sends it to the target, which lacks the ban key too: TRYAGAIN.
        assert not hit.done()
        move.finish()
        assert (await asyncio.wait_for(hit, 5)).states[0].remaining == 8
        assert (await store.hit("acct-1", [peek])).states[0].remaining == 8  # counted once
        stats = move.owner.command("INFO", "errorstats") + move.target.command("INFO", "errorstats")
        assert b"errorstat_TRYAGAIN" in stats and b"errorstat_ASK" in stats
    finally:
        await store.close()
