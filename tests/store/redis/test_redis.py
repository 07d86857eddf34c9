"""What only the Redis store promises: round trips, key layout, failure and recovery."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio

from lunos_proxy.store import KeyRecord, Limit, LimitSet, Slot, StoreError, UsageDelta
from lunos_proxy.store.redis import RedisStore
from tests.redis_servers import RedisServer, TlsRedis
from tests.store.backends import Backend
from tests.store.samples import eventually


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[RedisStore]:
    s = RedisStore(redis_server.url, timeout=0.5, connect_timeout=0.5)
    await s.start()
    yield s
    await s.close()


KEY = KeyRecord(id="key-1", hash="hmac-of-key-1", prefix="lk-abcd", account_id="acct-1")


async def test_hit_is_one_round_trip_and_a_key_lookup_one_get(
    store: RedisStore, raw: redis.asyncio.Redis
) -> None:
    await store.put_key(KEY)
    limits = [Limit("rpm", 60, 60), Limit("tpm", 10_000, 60, cost=500), Limit("day", 5, 86_400)]
    async with raw.monitor() as monitor:
        assert (await store.hit("acct-1", limits, bans=["ip:192.0.2.1", "key:key-1"])).allowed
        assert await store.key_by_hash(KEY.hash) == KEY
        await store.ping()  # marks the end
        sent = []
        while not (command := await monitor.next_command())["command"].startswith("PING"):
            if command["client_type"] != "lua":  # what the script ran inside Redis
                sent.append(command["command"].split()[0])
    assert sent == ["EVALSHA", "GET"]


async def test_keys_carry_the_prefix_and_one_hash_tag_per_call(
    store: RedisStore, raw: redis.asyncio.Redis
) -> None:
    await store.put_key(KEY)
    await store.hit("acct-1", [Limit("rpm", 60, 60)])
    await store.ban("acct-1", "ip:192.0.2.1", 60)
    await store.add_usage([UsageDelta(account_id="acct-1", key_id="key-1", model="m", day="d")])
    assert sorted(k.decode() for k in await raw.keys("*")) == [
        "lunos:{acct-1}:ban:ip:192.0.2.1",
        "lunos:{acct-1}:limits",
        "lunos:{keys}:account:acct-1",
        "lunos:{keys}:hash:hmac-of-key-1",
        "lunos:{keys}:id:key-1",
        "lunos:{usage:acct-1}:day:d",
        "lunos:{usage:acct-1}:days",
    ]
    # Counters and bans expire on their own once they hold nothing.
    assert await raw.hkeys("lunos:{acct-1}:limits") == [b"rpm"]
    assert 0 < await raw.pttl("lunos:{acct-1}:limits") <= 1_001
    assert 59_000 < await raw.pttl("lunos:{acct-1}:ban:ip:192.0.2.1") <= 60_000


async def test_scripts_are_reloaded_after_the_server_forgets_them(
    store: RedisStore, raw: redis.asyncio.Redis
) -> None:
    await raw.script_flush()
    assert (await store.hit("t", [Limit("rpm", 1, 60)])).allowed
    assert not (await store.hit("t", [Limit("rpm", 1, 60)])).allowed


async def test_every_operation_raises_store_error_while_redis_is_down(
    store: RedisStore, redis_server: RedisServer
) -> None:
    await store.put_key(KEY)
    redis_server.stop()
    calls: list[Callable[[], Awaitable[Any]]] = [
        store.ping,
        lambda: store.hit("t", [Limit("rpm", 1, 60)]),
        lambda: store.adjust("t", Limit("rpm", 1, 60)),
        lambda: store.ban("t", "ip:x", 1),
        lambda: store.key_by_hash(KEY.hash),
        lambda: store.key_by_id(KEY.id),
        lambda: store.put_key(KEY),
        lambda: store.delete_key(KEY.id),
        lambda: store.keys_of("acct-1"),
        lambda: store.account("a"),
        lambda: store.account_by_index("i"),
        store.accounts,
        lambda: store.delete_account("a"),
        lambda: store.add_usage([UsageDelta(account_id="a", key_id="k", model="m", day="d")]),
        lambda: store.usage("a", "d", "d"),
        lambda: store.delete_usage("a"),
        lambda: store.publish("keys", "x"),
    ]
    for call in calls:
        with pytest.raises(StoreError):
            await call()
    redis_server.start()
    await store.ping()
    assert await store.key_by_hash(KEY.hash) is None  # the server kept nothing


async def test_subscribing_while_redis_is_down_fails_then_delivers_once_it_returns(
    redis_server: RedisServer,
) -> None:
    listener = RedisStore(redis_server.url, timeout=0.3)
    sender = RedisStore(redis_server.url)
    heard: list[str] = []

    async def on_message(message: str) -> None:
        heard.append(message)

    try:
        redis_server.stop()
        with pytest.raises(StoreError):
            await listener.subscribe("keys", on_message)
        redis_server.start()

        async def delivered() -> bool:
            await sender.publish("keys", "revoked:key-1")
            await asyncio.sleep(0.05)
            return bool(heard)

        await eventually_async(delivered)
    finally:
        await listener.close()
        await sender.close()


async def test_subscriber_reconnects_after_redis_restarts(redis_server: RedisServer) -> None:
    listener, sender = RedisStore(redis_server.url), RedisStore(redis_server.url)
    heard: list[str] = []

    async def on_message(message: str) -> None:
        heard.append(message)

    try:
        await listener.subscribe("keys", on_message)
        await sender.publish("keys", "before")
        await eventually(lambda: heard == ["before"])
        redis_server.restart()

        async def delivered() -> bool:
            await asyncio.sleep(0.05)
            try:
                await sender.publish("keys", "after")
            except StoreError:
                return False
            await asyncio.sleep(0.05)
            return "after" in heard

        await eventually_async(delivered)
    finally:
        await listener.close()
        await sender.close()


async def test_a_channel_whose_subscribe_failed_on_a_live_connection_is_subscribed_later(
    redis_server: RedisServer,
) -> None:
    listener, sender = RedisStore(redis_server.url), RedisStore(redis_server.url)
    heard: list[str] = []

    async def on_message(message: str) -> None:
        heard.append(message)

    try:
        await listener.subscribe("first", on_message)  # the reader is up
        pubsub = listener._subscriber._pubsub
        assert pubsub is not None
        subscribe = pubsub.subscribe

        async def fails_once(*channels: str) -> Any:
            pubsub.subscribe = subscribe  # type: ignore[method-assign]
            raise redis.exceptions.TimeoutError("the SUBSCRIBE reply was late")

        # A blip the connection survives (redis-py would repair it on its own).
        pubsub.subscribe = fails_once  # type: ignore[method-assign]
        try:
            await listener.subscribe("second", on_message)
        except StoreError:
            pass  # not confirmed within the timeout: the reader sends it at its next turn

        async def delivered() -> bool:
            await sender.publish("second", "late")
            await asyncio.sleep(0.05)
            return heard == ["late"]

        await eventually_async(delivered)
    finally:
        await listener.close()
        await sender.close()


async def eventually_async(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition never became true"


async def test_concurrent_hits_from_two_instances_admit_exactly_the_limit(
    shared_backend: Backend,
) -> None:
    first, second = shared_backend.store, await shared_backend.open_twin()
    # Per day: at 100 per minute a unit comes back every 0.6 s, which 400
    # calls can outlast on a busy machine (then 101 or 102 pass, correctly).
    limit = Limit("rpd", 100, 86_400)
    verdicts = await asyncio.gather(
        *(s.hit(shared_backend.tag, [limit]) for _ in range(200) for s in (first, second))
    )
    assert sum(v.allowed for v in verdicts) == 100
    assert sorted(v.states[0].remaining for v in verdicts if v.allowed) == list(range(100))


async def test_usage_of_many_accounts_lands_on_a_cluster(redis_cluster_url: str) -> None:
    s = RedisStore(redis_cluster_url, prefix=f"t{uuid.uuid4().hex[:8]}:")
    try:
        accounts = [f"acct-{i}" for i in range(20)]  # spread over the three masters
        await s.add_usage(
            [UsageDelta(account_id=a, key_id="k", model="m", day="2025-03-01") for a in accounts]
        )
        for a in accounts:
            assert [r.requests for r in await s.usage(a, "2025-03-01", "2025-03-01")] == [1]
    finally:
        await s.close()


async def test_tls_refuses_a_server_its_ca_did_not_sign(redis_tls: TlsRedis) -> None:
    s = RedisStore(redis_tls.url)  # the system's trust store, not the test CA
    try:
        with pytest.raises(StoreError):
            await s.ping()
    finally:
        await s.close()
    verified = RedisStore(redis_tls.url, ssl_ca_certs=redis_tls.ca_file)
    try:
        await verified.ping()
    finally:
        await verified.close()


# -- the limit calls' pipelined path -------------------------------------------------


async def _settle_all_behind(
    store: RedisStore, tag: str, settles: list[tuple[list[Limit], list[str], str]]
) -> list[BaseException | None]:
    """Call settle_behind for each, all in one turn of the loop; their outcomes."""
    outcomes: list[BaseException | None] = []
    for charges, slots, lease in settles:
        store.settle_behind(tag, charges, slots, lease, outcomes.append)
    await eventually(lambda: len(outcomes) == len(settles))
    return outcomes


async def test_settlements_of_one_turn_are_one_call_applied_in_order(
    store: RedisStore, raw: redis.asyncio.Redis
) -> None:
    day = Limit("tpd", 1000, 86_400, cost=100)
    slot = Slot("conc", 10)
    for lease in ("l1", "l2", "l3"):
        assert (await store.hit("acct-1", [day], slots=[slot], lease=lease)).allowed
    await raw.config_resetstat()
    refund = Limit("tpd", 1000, 86_400, cost=-350)  # below empty: the counter is removed
    outcomes = await _settle_all_behind(store, "acct-1", [
        ([refund], ["conc"], "l1"),
        ([Limit("tpd", 1000, 86_400, cost=30)], ["conc"], "l2"),
        ([Limit("tpd", 1000, 86_400, cost=-10)], ["conc"], "l3"),
    ])
    assert outcomes == [None, None, None]
    assert (await raw.info("commandstats"))["cmdstat_evalsha"]["calls"] == 1
    # As three calls in a row: 300 - 350 -> empty, then +30, then -10.
    state = (await store.hit("acct-1", [Limit("tpd", 1000, 86_400, cost=0)])).states[0]
    assert state.remaining == 980
    assert await raw.zcard("lunos:{acct-1}:slots:conc") == 0


async def test_a_hit_carries_the_settlements_of_its_tag_made_before_it(
    store: RedisStore, raw: redis.asyncio.Redis
) -> None:
    one = Slot("conc", 1)
    day = Limit("tpd", 1000, 86_400, cost=100)
    assert (await store.hit("acct-1", [day], slots=[one], lease="first")).allowed
    assert (await store.hit("acct-2", [], slots=[one], lease="other")).allowed
    await raw.config_resetstat()
    outcomes: list[BaseException | None] = []
    # The first request ends (60 of its 100 tokens refunded, its slot given
    # back) and, in the same turn, the next one of the account asks.
    store.settle_behind("acct-1", [Limit("tpd", 1000, 86_400, cost=-60)], ["conc"], "first",
                        outcomes.append)
    store.settle_behind("acct-2", [], ["conc"], "other", outcomes.append)
    verdict = await store.hit("acct-1", [day], slots=[one], lease="second")
    assert verdict.allowed  # the slot was given back before the check
    assert verdict.states[0].remaining == 1000 - 40 - 100
    await eventually(lambda: len(outcomes) == 2)
    assert outcomes == [None, None]
    # acct-1's settlement rode on its hit; acct-2's left on its own.
    assert (await raw.info("commandstats"))["cmdstat_evalsha"]["calls"] == 2
    assert await raw.zrange("lunos:{acct-1}:slots:conc", 0, -1) == [b"second"]
    assert await raw.zcard("lunos:{acct-2}:slots:conc") == 0


async def test_hits_of_one_tag_in_one_turn_are_one_call_applied_in_order(
    store: RedisStore, raw: redis.asyncio.Redis
) -> None:
    day, slot = Limit("rpd", 3, 86_400), Slot("conc", 2)
    assert (await store.hit("acct-1", [day])).allowed  # connects the lane: 2 left
    await raw.config_resetstat()
    verdicts = await asyncio.gather(
        store.hit("acct-1", [day], slots=[slot], lease="a"),
        store.hit("acct-1", [day], slots=[slot], lease="b"),
        store.hit("acct-1", [day], slots=[slot], lease="c"),
        store.hit("acct-2", [day], slots=[slot], lease="d"),  # another tag: its own call
    )
    assert (await raw.info("commandstats"))["cmdstat_evalsha"]["calls"] == 2
    assert [v.allowed for v in verdicts] == [True, True, False, True]
    assert [v.states[0].remaining for v in verdicts] == [1, 0, 0, 2]
    assert [v.slots[0].held for v in verdicts] == [0, 1, 2, 0]
    assert verdicts[2].states[0].admitted is False and verdicts[2].retry_after > 0
    assert sorted(await raw.zrange("lunos:{acct-1}:slots:conc", 0, -1)) == [b"a", b"b"]


async def test_calls_of_one_turn_may_differ_in_limits_slots_and_bans(
    store: RedisStore, raw: redis.asyncio.Redis
) -> None:
    assert (await store.hit("acct-1", [Limit("x", 5, 60)])).allowed  # connects the lane
    await store.ban("acct-1", "ip", 30)
    verdicts = await asyncio.gather(
        store.hit("acct-1", [Limit("rpm", 10, 60, cost=4)], slots=[Slot("k1", 1)], lease="a"),
        store.hit("acct-1", [Limit("rpm", 10, 60, cost=4), Limit("tpm", 100, 60, cost=50)],
                  slots=[Slot("k2", 1), Slot("acct", 5)], lease="b"),
        store.hit("acct-1", [Limit("rpm", 10, 60, cost=1)], bans=["ip"]),
        store.hit("acct-1", [Limit("rpm", 10, 60, cost=4)], slots=[Slot("k1", 1)], lease="c"),
    )
    assert [v.allowed for v in verdicts] == [True, True, False, False]
    assert verdicts[1].states[1].remaining == 50
    assert verdicts[2].banned > 29 and verdicts[2].states[0].remaining == 2
    # the last: rpm has 2 left of the 4 it asks, and k1 is held by "a"
    assert verdicts[3].states[0].admitted is False and verdicts[3].slots[0].held == 1
    assert await raw.zrange("lunos:{acct-1}:slots:acct", 0, -1) == [b"b"]


async def test_a_caller_that_gives_up_before_its_turn_ends_takes_nothing(
    store: RedisStore, raw: redis.asyncio.Redis
) -> None:
    slot = Slot("conc", 1)
    assert (await store.hit("acct-1", [], slots=[Slot("other", 1)], lease="x")).allowed
    gone = asyncio.ensure_future(store.hit("acct-1", [], slots=[slot], lease="gone"))
    await asyncio.sleep(0)  # the call is waiting for the turn to end
    gone.cancel()
    assert (await store.hit("acct-1", [], slots=[slot], lease="stays")).allowed
    assert await raw.zrange("lunos:{acct-1}:slots:conc", 0, -1) == [b"stays"]


async def test_hits_of_one_turn_load_a_script_the_server_forgot(
    store: RedisStore, raw: redis.asyncio.Redis
) -> None:
    day = Limit("rpd", 2, 86_400)
    assert (await store.hit("acct-1", [Limit("x", 1, 60)])).allowed  # connects the lane
    await raw.script_flush()
    verdicts = await asyncio.gather(*(store.hit("acct-1", [day]) for _ in range(3)))
    assert [v.allowed for v in verdicts] == [True, True, False]


async def test_a_retried_batch_leaves_out_the_callers_gone_meanwhile() -> None:
    server = RedisServer(["--enable-debug-command", "yes"]).start()
    store = RedisStore(server.url, timeout=2.0, connect_timeout=2.0)
    try:
        day = Limit("rpd", 10, 86_400)
        assert (await store.hit("acct-1", [Limit("x", 1, 60)])).allowed  # connects
        server.command("SCRIPT", "FLUSH")  # the batch will come back NOSCRIPT
        stall = asyncio.get_running_loop().run_in_executor(
            None, server.command, "DEBUG", "SLEEP", "0.5")
        await asyncio.sleep(0.1)
        gone = asyncio.ensure_future(store.hit("acct-1", [Limit("rpd", 10, 86_400, cost=5)]))
        stays = asyncio.ensure_future(store.hit("acct-1", [day]))
        await asyncio.sleep(0.1)  # both sent, waiting for the stalled server
        gone.cancel()
        assert (await stays).states[0].remaining == 9  # the retry did not charge "gone"
        await stall
        assert (await store.hit("acct-1", [Limit("rpd", 10, 86_400, cost=0)])).states[
            0].remaining == 9
    finally:
        await store.close()
        server.remove()


async def test_an_unreadable_reply_fails_every_caller_of_the_batch(
    store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import msgspec

    assert (await store.hit("acct-1", [Limit("x", 1, 60)])).allowed  # connects

    def garbled(reply: bytes) -> list[object]:
        raise msgspec.DecodeError("garbled")  # a fault no real server produces

    monkeypatch.setattr(store, "_verdicts", garbled)
    outcomes = await asyncio.gather(
        store.hit("acct-1", [Limit("rpd", 5, 86_400)]),
        store.hit("acct-1", [Limit("rpd", 5, 86_400)]),
        return_exceptions=True,
    )
    assert [type(o) for o in outcomes] == [StoreError, StoreError]
    assert all("unreadable" in str(o) for o in outcomes)


async def test_expired_leases_are_not_counted_and_a_settlement_sweeps_them(
    store: RedisStore, raw: redis.asyncio.Redis
) -> None:
    short, long = Slot("conc", 2, ttl=0.2), Slot("conc", 2, ttl=60)
    assert (await store.hit("acct-1", [], slots=[short], lease="crashed")).allowed
    assert (await store.hit("acct-1", [], slots=[long], lease="live")).allowed
    await asyncio.sleep(0.3)  # "crashed" was never renewed nor given back
    verdict = await store.hit("acct-1", [], slots=[long], lease="next")
    assert verdict.allowed and verdict.slots[0].held == 1  # "live" only
    assert await raw.zcard("lunos:{acct-1}:slots:conc") == 3  # not swept by a hit
    await store.settle("acct-1", [], ["conc"], "next")
    assert await raw.zrange("lunos:{acct-1}:slots:conc", 0, -1) == [b"live"]


async def test_settlements_carried_by_a_hit_that_fails_are_reported_failed() -> None:
    server = RedisServer(["--enable-debug-command", "yes"]).start()
    store = RedisStore(server.url, timeout=0.3, connect_timeout=0.3)
    try:
        assert (await store.hit("acct-1", [], slots=[Slot("conc", 1)], lease="a")).allowed
        # Redis stalls past the store's timeout, with the lane connected.
        stall = asyncio.get_running_loop().run_in_executor(
            None, server.command, "DEBUG", "SLEEP", "1")
        await asyncio.sleep(0.1)
        outcomes: list[BaseException | None] = []
        store.settle_behind("acct-1", [], ["conc"], "a", outcomes.append)
        with pytest.raises(StoreError, match="no reply"):
            await store.hit("acct-1", [], slots=[Slot("conc", 1)], lease="b")
        assert len(outcomes) == 1 and isinstance(outcomes[0], StoreError)
        await stall
    finally:
        await store.close()
        server.remove()


async def test_a_settlement_sent_behind_loads_a_script_the_server_forgot(
    store: RedisStore, raw: redis.asyncio.Redis
) -> None:
    slot = Slot("conc", 1)
    assert (await store.hit("acct-1", [], slots=[slot], lease="only")).allowed
    await raw.script_flush()
    assert await _settle_all_behind(store, "acct-1", [([], ["conc"], "only")]) == [None]
    assert (await store.hit("acct-1", [], slots=[slot], lease="next")).allowed


async def test_a_settlement_sent_behind_reports_redis_being_down(
    store: RedisStore, redis_server: RedisServer
) -> None:
    assert (await store.hit("acct-1", [Limit("rpm", 5, 60)])).allowed  # the lane is connected
    redis_server.stop()
    outcomes = await _settle_all_behind(store, "acct-1", [([Limit("rpm", 5, 60, -1)], [], "")])
    assert isinstance(outcomes[0], StoreError)
    with pytest.raises(StoreError):
        await store.settle("acct-1", [Limit("rpm", 5, 60, -1)])
    with pytest.raises(StoreError):
        await store.renew("acct-1", [Slot("conc", 1)], "x")


async def test_a_replica_refuses_limit_calls_until_it_is_promoted(
    redis_server: RedisServer,
) -> None:
    replica = RedisServer(["--replicaof", "127.0.0.1", str(redis_server.port)]).start()
    store = RedisStore(replica.url, timeout=0.5, connect_timeout=0.5)
    try:
        with pytest.raises(StoreError, match="READONLY"):
            await store.hit("acct-1", [Limit("rpm", 5, 60)])
        replica.command("REPLICAOF", "NO", "ONE")  # a failover made it the master
        assert (await store.hit("acct-1", [Limit("rpm", 5, 60)])).allowed
    finally:
        await store.close()
        replica.remove()


async def test_limit_sets_of_one_family_may_come_with_other_slots(
    store: RedisStore, raw: redis.asyncio.Redis
) -> None:
    family = object()
    limits = LimitSet([Limit("rpm", 100, 60)], family)
    await store.hit("acct-1", limits, slots=[Slot("a", 5)], lease="x")
    await store.hit("acct-1", LimitSet([Limit("rpm", 100, 60, cost=2)], family),
                    slots=[Slot("b", 5)], lease="y")
    assert await raw.zrange("lunos:{acct-1}:slots:a", 0, -1) == [b"x"]
    assert await raw.zrange("lunos:{acct-1}:slots:b", 0, -1) == [b"y"]
    state = (await store.hit("acct-1", [Limit("rpm", 100, 60, cost=0)])).states[0]
    assert state.remaining == 97  # 1 + 2 taken: the cost is each call's own


async def test_limit_calls_follow_a_slot_that_moved_to_another_cluster_node() -> None:
    from redis.crc import key_slot

    from tests.redis_servers import RedisCluster

    cluster = RedisCluster().start()
    store = RedisStore(cluster.url, timeout=1.0, connect_timeout=1.0)
    try:
        limit = Limit("rpd", 100, 86_400)
        assert (await store.hit("acct-9", [limit])).states[0].remaining == 99
        key = "lunos:{acct-9}:limits"
        slot = key_slot(key.encode())
        ids = {n.port: n.command("CLUSTER", "MYID").decode().strip().strip('$').split()[-1]
               for n in cluster.nodes}
        owner = next(n for n in cluster.nodes if n.command("EXISTS", key).startswith(b":1"))
        target = next(n for n in cluster.nodes if n is not owner)
        # Move the slot and its key, as `redis-cli --cluster reshard` would.
        target.command("CLUSTER", "SETSLOT", str(slot), "IMPORTING", ids[owner.port])
        owner.command("CLUSTER", "SETSLOT", str(slot), "MIGRATING", ids[target.port])
        owner.command("MIGRATE", "127.0.0.1", str(target.port), "", "0", "5000", "KEYS", key)
        for node in cluster.nodes:
            node.command("CLUSTER", "SETSLOT", str(slot), "NODE", ids[target.port])
        # The lane still points at the old node: MOVED, then the call is made
        # where the slot is now, and the counter carried on there.
        assert (await store.hit("acct-9", [limit])).states[0].remaining == 98
        for node in (owner, target):
            node.command("CONFIG", "RESETSTAT")
        assert (await store.hit("acct-9", [limit])).states[0].remaining == 97
        # ...and the next goes straight to the new node: the old one sees nothing.
        assert b"cmdstat_evalsha:calls=1," in target.command("INFO", "commandstats")
        assert b"cmdstat_evalsha" not in owner.command("INFO", "commandstats")
        # A node that goes away: the call fails, and the slot map is read
        # again before the next one.
        target.stop()
        with pytest.raises(StoreError):
            await store.hit("acct-9", [limit])
        assert store._stale
        target.start()
        await eventually(lambda: b"cluster_state:ok" in target.command("CLUSTER", "INFO"))
        # (it kept nothing on disk: its counter starts again)
        assert (await store.hit("acct-9", [limit])).states[0].remaining == 99
        assert not store._stale
    finally:
        await store.close()
        cluster.stop()


async def test_a_cluster_call_that_times_out_is_not_sent_again(redis_cluster_url: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    s = RedisStore(redis_cluster_url, prefix=prefix, timeout=0.3)
    await s.ping()
    key = f"{prefix}{{addr:1.2.3.4}}:offences:ban"
    node = s._client.get_node_from_key(key)  # type: ignore[union-attr]
    raw = redis.asyncio.Redis(host=node.host, port=node.port)
    await raw.execute_command("CLIENT", "PAUSE", "700", "WRITE")  # the script runs late
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(StoreError):  # not sent again to succeed once the pause ends
            await s.offend("addr:1.2.3.4", "ban", 1, 1000, 60)
        assert asyncio.get_running_loop().time() - started < 0.6
        await asyncio.sleep(0.8)
        # At most once (the server drops a paused command whose client left).
        assert await raw.get(key) in (None, b"1")
    finally:
        await raw.aclose()
        await s.close()
