"""Two proxy instances on one real Redis agree on cooldowns."""

from __future__ import annotations

import asyncio
import uuid

from plugins.router.state import REGISTRY, Registry
from tests.conftest import GatewayFactory, Running
from tests.plugins.router.conftest import ProviderFactory, chat, deployment, router_config


def cooldown_left(gw: Running, deployment_id: str) -> float:
    registry = gw.gateway.lasting[REGISTRY]
    assert isinstance(registry, Registry)
    return registry.cooldowns.left(deployment_id, registry.cooldowns.clock())


async def test_instances_sharing_redis_agree_on_cooldowns(
    fakes: ProviderFactory, make_gateway: GatewayFactory, redis_url: str
) -> None:
    a, b = await fakes(2)
    a.behaviour.statuses = [429]
    a.behaviour.headers = {"Retry-After": "30"}
    config = router_config(
        {"a": a, "b": b}, {"m": {"strategy": "priority", "deployments": [deployment("a"), deployment("b")]}},
        store=redis_url, store_options={"prefix": f"t{uuid.uuid4().hex[:10]}:"},
        router={"sync_seconds": 60},  # so only pub/sub can tell the other instance in time
    )
    one, two = await make_gateway(config), await make_gateway(config)
    assert (await chat(one.url))[0] == 200  # a answers 429 Retry-After: 30; b serves
    assert (len(a.received), len(b.received)) == (1, 1)
    for _ in range(100):  # pub/sub delivery: bounded wait, 5 s at most
        if cooldown_left(two, "a/up") > 0:
            break
        await asyncio.sleep(0.05)
    assert 25 < cooldown_left(two, "a/up") <= 30
    for _ in range(3):
        assert (await chat(two.url))[0] == 200
    assert (len(a.received), len(b.received)) == (1, 4)
    # An instance started later reads the running cooldowns from the store.
    three = await make_gateway(config)
    assert 25 < cooldown_left(three, "a/up") <= 30
    assert (await chat(three.url))[0] == 200
    assert len(a.received) == 1
