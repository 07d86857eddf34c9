"""The pipelined lane the limit calls travel on, against real redis-server processes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from lunos_proxy.store.redis.lane import Lane, LaneAuth, ReplyError
from lunos_proxy.store.redis.resp import command
from tests.redis_servers import RedisServer, free_port


def lane_to(port: int, auth: LaneAuth | None = None, *, timeout: float = 1.0) -> Lane:
    async def address() -> tuple[str, int]:
        return "127.0.0.1", port

    return Lane(address, auth or LaneAuth(), tls=None, connect_timeout=0.5, timeout=timeout)


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def test_concurrent_calls_share_one_connection_and_each_gets_its_own_reply(
    redis_server: RedisServer, raw: redis.asyncio.Redis
) -> None:
    lane = lane_to(redis_server.port)
    replies = await asyncio.gather(*(lane.call(command("INCR", "n")) for _ in range(300)))
    # Sent in call order on one connection, so the i-th caller saw the i-th increment.
    assert replies == list(range(1, 301))
    clients = [c for c in await raw.client_list() if c["cmd"] != "client|list"]
    assert len(clients) == 1
    await lane.close()


async def test_calls_of_one_turn_leave_in_one_write(redis_server: RedisServer) -> None:
    lane = lane_to(redis_server.port)
    await lane.call(command("PING"))  # connected
    conn = lane._conn
    assert conn is not None and conn.transport is not None
    writes: list[bytes] = []
    write = conn.transport.write
    conn.transport.write = lambda data: (writes.append(data), write(data))  # type: ignore[method-assign]
    assert await asyncio.gather(*(lane.call(command("ECHO", str(i))) for i in range(20))) == [
        str(i).encode() for i in range(20)
    ]
    assert len(writes) == 1
    await lane.close()


async def test_an_error_reply_is_returned_not_raised(redis_server: RedisServer) -> None:
    lane = lane_to(redis_server.port)
    await lane.call(command("SET", "s", "text"))
    reply = await lane.call(command("INCR", "s"))
    assert isinstance(reply, ReplyError)
    assert str(reply).startswith("ERR value is not an integer")
    assert await lane.call(command("GET", "s")) == b"text"  # the connection carries on
    await lane.close()


async def test_a_late_reply_fails_the_calls_in_flight_and_the_next_call_reconnects(
    redis_server: RedisServer, raw: redis.asyncio.Redis
) -> None:
    lane = lane_to(redis_server.port, timeout=0.3)
    started = time.monotonic()
    blocked = asyncio.ensure_future(lane.call(command("BLPOP", "never", "5")))
    behind = asyncio.ensure_future(lane.call(command("PING")))  # queued behind the blocked call
    with pytest.raises(TimeoutError):
        await blocked
    with pytest.raises(TimeoutError):
        await behind
    assert time.monotonic() - started < 1.5
    assert await lane.call(command("PING")) == b"PONG"  # on a new connection
    await lane.close()


async def test_a_connection_the_server_closes_fails_its_calls_then_reconnects(
    redis_server: RedisServer, raw: redis.asyncio.Redis
) -> None:
    lane = lane_to(redis_server.port)
    await lane.call(command("CLIENT", "SETNAME", "lane"))
    in_flight = asyncio.ensure_future(lane.call(command("BLPOP", "never", "5")))
    await asyncio.sleep(0.1)
    await raw.execute_command("CLIENT", "KILL", "SKIPME", "yes", "TYPE", "normal")
    with pytest.raises(ConnectionError):
        await in_flight
    assert await lane.call(command("CLIENT", "GETNAME")) is None  # a new connection, unnamed
    await lane.close()


async def test_a_server_that_is_down_fails_fast_and_a_restarted_one_is_used_again(
    redis_server: RedisServer,
) -> None:
    lane = lane_to(redis_server.port)
    assert await lane.call(command("PING")) == b"PONG"
    redis_server.stop()
    started = time.monotonic()
    with pytest.raises(ConnectionError):
        await lane.call(command("PING"))
    assert time.monotonic() - started < 1.0
    redis_server.start()
    assert await lane.call(command("PING")) == b"PONG"
    await lane.close()


async def test_nothing_listening_is_a_connection_error() -> None:
    lane = lane_to(free_port())
    with pytest.raises(ConnectionError):
        await lane.call(command("PING"))


async def test_password_and_database_are_sent_when_connecting(
    redis_server: RedisServer, raw: redis.asyncio.Redis
) -> None:
    await raw.config_set("requirepass", "s3cret-pass")
    lane = lane_to(redis_server.port, LaneAuth(password="s3cret-pass", db=3))
    assert await lane.call(command("SET", "where", "db3")) is not None
    await lane.close()
    check = redis.asyncio.Redis(port=redis_server.port, password="s3cret-pass", db=3)
    assert await check.get("where") == b"db3"
    await check.aclose()

    wrong = lane_to(redis_server.port, LaneAuth(password="not-the-password"))
    with pytest.raises(ConnectionError) as refused:
        await wrong.call(command("PING"))
    assert "not-the-password" not in str(refused.value)
    assert str(refused.value).startswith("redis: WRONGPASS")


async def test_close_waits_for_the_calls_in_flight(redis_server: RedisServer) -> None:
    lane = lane_to(redis_server.port)
    await lane.call(command("PING"))
    sent = lane.send(command("SET", "last", "word"))
    await lane.close()
    assert sent.done() and sent.result() == b"OK"
    check = redis.asyncio.Redis(port=redis_server.port)
    assert await check.get("last") == b"word"
    await check.aclose()


async def test_a_call_made_while_closing_fails_and_opens_no_connection(
    redis_server: RedisServer,
) -> None:
    lane = lane_to(redis_server.port)
    await lane.call(command("PING"))
    blocked = lane.send(command("BLPOP", "nothing", "0.3"))  # close() waits for its reply
    closing = asyncio.ensure_future(lane.close())
    await asyncio.sleep(0.05)
    with pytest.raises(ConnectionError, match="lane closed"):
        await lane.call(command("PING"))
    await closing
    assert blocked.result() is None  # the call in flight still got its answer
    assert not lane.connected


async def test_a_connection_still_being_made_at_close_is_dropped(redis_server: RedisServer) -> None:
    lane = lane_to(redis_server.port)
    first = asyncio.ensure_future(lane.call(command("PING")))  # connecting
    await asyncio.sleep(0)
    await lane.close()
    with pytest.raises(ConnectionError, match="lane closed"):
        await first
    assert not lane.connected
