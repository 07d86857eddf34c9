"""Eight instances on a 3-node Redis Cluster keep a limit exact while the
account's slot moves to another node under them (docs/capacity.md).

The cluster is the test's own (a slot is moved, so not the session's
shared one). The move is the one `redis-cli --cluster reshard` makes, in
its three states, and a wave of concurrent requests, spread over the
eight instances, meets each state:

1. the slot is MIGRATING on its owner and IMPORTING on the target, its
   keys still on the owner: calls run there;
2. its keys moved with MIGRATE, the slot still MIGRATING: the owner
   answers ASK, and a call runs on the target after ASKING;
3. the slot given to the target on every node: the owner answers MOVED.

A call that was redirected did not run, so it is sent again; one that
did run must never be sent again (a `hit` charged twice admits less than
the limit). The per-day limit of 500 still has room in every state, so a
call charged twice, or a call lost, shows in the counts.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import aiohttp
import pytest

from tests.conftest import GatewayFactory, Running
from tests.fakes import FakeProvider
from tests.plugins.abuse.fakes import abuse_fakes  # noqa: F401 - fixture
from tests.plugins.abuse.helpers import abuse_config, metric, plan, post
from tests.redis_servers import RedisCluster, SlotMove

pytestmark = pytest.mark.usefixtures("abuse_fakes")

INSTANCES = 8
PER_DAY = 500
# Requests per state (after one that makes the account's keys): 2,000 in all.
WAVES = (100, 300, 400, 1_199)


async def test_eight_instances_admit_exactly_the_daily_limit_while_its_slot_migrates(
    redis_cluster: RedisCluster, provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    cluster = redis_cluster
    prefix = f"t{uuid.uuid4().hex[:10]}:"
    cfg = abuse_config(provider.base_url, plan(account={"requests_per_day": PER_DAY}),
                       store=cluster.url, prefix=prefix, timeout=30, connect_timeout=30)
    gateways: list[Running] = [await make_gateway(cfg) for _ in range(INSTANCES)]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:

        async def one(i: int) -> int:
            # Spread out a little, so that an instance's calls are not
            # all batched into one script call.
            await asyncio.sleep(i * 0.0005)
            return (await post(s, gateways[i % INSTANCES]))[0]

        async def wave(size: int) -> Counter[int]:
            return Counter(await asyncio.gather(*(one(i) for i in range(size))))

        # Every instance makes a call first: its lane then points at the owner.
        assert [(await post(s, gw))[0] for gw in gateways] == [200] * INSTANCES
        move = SlotMove(cluster, _slot_of(cluster, prefix))
        move.begin()
        migrating = await wave(WAVES[0])
        move.move_keys()
        asked = await wave(WAVES[1])
        move.finish()
        moved = await wave(WAVES[2])
        after = await wave(WAVES[3])
    redirects = _errors(cluster)
    left = PER_DAY - INSTANCES - WAVES[0] - WAVES[1]
    assert (migrating, asked) == ({200: WAVES[0]}, {200: WAVES[1]})
    assert moved == {200: left, 429: WAVES[2] - left}
    assert after == {429: WAVES[3]}
    assert len(provider.received) == PER_DAY
    assert redirects["ASK"] > 0 and redirects["MOVED"] > 0  # the waves met each state
    for gw in gateways:  # never served by the fail-open local limiter
        assert metric(gw, "lunos_limits_store_degraded") == 0


def _errors(cluster: RedisCluster) -> Counter[str]:
    """The error replies (redirects among them) the nodes sent: INFO errorstats."""
    seen: Counter[str] = Counter()
    for node in cluster.nodes:
        for line in node.command("INFO", "errorstats").decode().splitlines():
            if line.startswith("errorstat_"):
                name, _, value = line.removeprefix("errorstat_").partition(":count=")
                seen[name] += int(value)
    return seen


def _slot_of(cluster: RedisCluster, prefix: str) -> int:
    slots = set()
    for node in cluster.nodes:
        for key in node.command("KEYS", f"{prefix}*").split(b"\r\n")[2::2]:
            if key:
                slots.add(int(node.command("CLUSTER", "KEYSLOT", key.decode()).strip(b":\r\n")))
    assert len(slots) == 1, slots  # the account's keys share a hash tag
    return slots.pop()
