"""Slow, idle and greedy clients: both listeners close their connections on
time (server.connections) while everyone else keeps being served.

Raw sockets play the slow clients; an ordinary client checks the others are
served meanwhile."""

from __future__ import annotations

import asyncio
import gzip
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.conftest import ADMIN_HEADERS, GatewayFactory, Running, basic_config, free_port
from tests.fakes import FakeProvider

SHORT = 0.5  # the timeouts under test, in seconds
# A connection is closed at most one tick (a fifth of the shortest timeout)
# after its time ran out; the rest is scheduling slack.
LATE = 0.4
REQUEST = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: lunos\r\nContent-Type: application/json\r\n"
    b'Content-Length: 41\r\n\r\n{"model": "gpt-test", "messages": []}    '
)


def connections(**settings: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "header_timeout_seconds": SHORT,
        "body_timeout_seconds": SHORT,
        "idle_timeout_seconds": SHORT,
    }
    values.update(settings)
    return {"connections": values}


async def start(make_gateway: GatewayFactory, provider: FakeProvider, **settings: Any) -> Running:
    return await make_gateway(basic_config(provider.base_url, server=connections(**settings)))


async def connect(gw: Running, source: str = "127.0.0.1") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = gw.url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port), local_addr=(source, 0))


async def closed_after(reader: asyncio.StreamReader, started: float, limit: float = 10.0) -> float:
    """Seconds from `started` until the server closed the connection (having sent nothing)."""
    try:
        async with asyncio.timeout(limit):
            got = await reader.read(65536)
    except ConnectionResetError:
        got = b""
    assert got == b"", got[:200]
    return time.perf_counter() - started


async def served(gw: Running) -> int:
    async with aiohttp.ClientSession() as s, s.post(
        gw.v1 + "/chat/completions", json={"model": "gpt-test", "messages": []}
    ) as r:
        await r.read()
        return r.status


async def served_meanwhile(gw: Running, seconds: float) -> list[int]:
    """Ordinary requests, one after another, for `seconds`."""
    statuses = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        statuses.append(await served(gw))
        await asyncio.sleep(0.05)
    return statuses


async def read_one_response(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(5):
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
    return head


async def test_half_sent_headers_are_closed_within_the_header_timeout(
    make_gateway: GatewayFactory, provider: FakeProvider
) -> None:
    gw = await start(make_gateway, provider, idle_timeout_seconds=30)
    reader, writer = await connect(gw)
    started = time.perf_counter()
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: lunos\r\nContent-")
    others = asyncio.ensure_future(served_meanwhile(gw, SHORT))
    elapsed = await closed_after(reader, started)
    assert SHORT <= elapsed < SHORT + LATE
    statuses = await others
    assert statuses and set(statuses) == {200}


async def test_a_later_request_gets_the_header_timeout_from_its_first_byte(
    make_gateway: GatewayFactory, provider: FakeProvider
) -> None:
    gw = await start(make_gateway, provider, idle_timeout_seconds=30)
    reader, writer = await connect(gw)
    writer.write(REQUEST)
    assert (await read_one_response(reader)).startswith(b"HTTP/1.1 200")
    await asyncio.sleep(SHORT * 2)  # idle, within the idle timeout: kept open
    started = time.perf_counter()
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: lu")
    elapsed = await closed_after(reader, started)
    assert SHORT <= elapsed < SHORT + LATE


async def test_a_connection_that_sends_nothing_is_closed_within_the_header_timeout(
    make_gateway: GatewayFactory, provider: FakeProvider
) -> None:
    gw = await start(make_gateway, provider, idle_timeout_seconds=30)
    started = time.perf_counter()
    reader, _ = await connect(gw)
    elapsed = await closed_after(reader, started)
    assert SHORT <= elapsed < SHORT + LATE


@pytest.mark.parametrize("trickle", [False, True], ids=["stalled", "trickled"])
async def test_a_slow_body_is_closed_within_the_body_timeout(
    make_gateway: GatewayFactory, provider: FakeProvider, trickle: bool
) -> None:
    gw = await start(make_gateway, provider, idle_timeout_seconds=30, body_min_rate=1024)
    reader, writer = await connect(gw)
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: lunos\r\nContent-Type: application/json\r\n"
                 b'Content-Length: 1000\r\n\r\n{"model": "gpt-test", ')
    started = time.perf_counter()

    async def drip() -> None:
        # A byte every 50 ms: never silent for long, yet 20 bytes/s.
        while trickle and not writer.is_closing():
            await asyncio.sleep(0.05)
            writer.write(b" ")

    dripping = asyncio.ensure_future(drip())
    others = asyncio.ensure_future(served_meanwhile(gw, SHORT))
    try:
        elapsed = await closed_after(reader, started)
    finally:
        dripping.cancel()
    # 1 s of allowance per 1024 bytes received: a few hundredths here.
    assert SHORT <= elapsed < SHORT + LATE + 0.1
    assert set(await others) == {200}


async def test_a_body_sent_at_the_minimum_rate_is_not_cut_off(
    make_gateway: GatewayFactory, provider: FakeProvider
) -> None:
    gw = await start(make_gateway, provider, idle_timeout_seconds=30, body_min_rate=100)
    body = b'{"model": "gpt-test", "messages": []}' + b" " * 163  # 200 bytes
    reader, writer = await connect(gw)
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: lunos\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 200\r\n\r\n")
    for i in range(0, 200, 20):  # 20 bytes every 0.1 s: 200 bytes/s for 1 s, twice the timeout
        writer.write(body[i : i + 20])
        await asyncio.sleep(0.1)
    assert (await read_one_response(reader)).startswith(b"HTTP/1.1 200")
    writer.close()


@pytest.mark.parametrize("listener", ["public", "admin"])
async def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(
    make_gateway: GatewayFactory, provider: FakeProvider, listener: str
) -> None:
    gw = await start(make_gateway, provider, header_timeout_seconds=30, idle_timeout_seconds=1.0)
    side, request = (gw, REQUEST) if listener == "public" else (admin_side(gw), ADMIN_REQUEST)
    reader, writer = await connect(side)
    writer.write(request)
    assert (await read_one_response(reader)).startswith(b"HTTP/1.1 200")
    started = time.perf_counter()
    elapsed = await closed_after(reader, started)
    # The server's clock started as it sent the answer, a little before it was read.
    assert 0.9 <= elapsed < 1.0 + LATE


async def test_connections_over_the_cap_per_address_are_closed_while_another_address_is_served(
    make_gateway: GatewayFactory, provider: FakeProvider
) -> None:
    gw = await start(make_gateway, provider, header_timeout_seconds=30, idle_timeout_seconds=30,
                     max_per_address=4)
    held = [await connect(gw, "127.0.0.1") for _ in range(4)]
    reader, _ = await connect(gw, "127.0.0.1")
    assert await closed_after(reader, time.perf_counter(), limit=2.0) < 0.3
    # Another address is served, on as many connections as it likes up to the cap.
    others = [await connect(gw, "127.0.0.2") for _ in range(3)]
    for r, w in others:
        w.write(REQUEST)
        assert (await read_one_response(r)).startswith(b"HTTP/1.1 200")
    # The first address's held connections still work, and one closing frees a place.
    r0, w0 = held[0]
    w0.write(REQUEST)
    assert (await read_one_response(r0)).startswith(b"HTTP/1.1 200")
    w0.close()
    await asyncio.sleep(0.1)
    r5, w5 = await connect(gw, "127.0.0.1")
    w5.write(REQUEST)
    assert (await read_one_response(r5)).startswith(b"HTTP/1.1 200")
    for _, w in [*held[1:], *others, (r5, w5)]:
        w.close()


async def test_connections_over_the_cap_per_process_are_closed(
    make_gateway: GatewayFactory, provider: FakeProvider
) -> None:
    gw = await start(make_gateway, provider, header_timeout_seconds=30, idle_timeout_seconds=30,
                     max_open=6, max_per_address=0)
    held = [await connect(gw, f"127.0.0.{2 + i % 3}") for i in range(6)]
    reader, _ = await connect(gw, "127.0.0.9")
    assert await closed_after(reader, time.perf_counter(), limit=2.0) < 0.3
    r, w = held[0]
    w.write(REQUEST)
    assert (await read_one_response(r)).startswith(b"HTTP/1.1 200")
    for _, w in held:
        w.close()


# -- the admin listener: the same rules -------------------------------------

ADMIN_REQUEST = (
    b"GET /admin/accounts HTTP/1.1\r\nHost: lunos\r\nAuthorization: " + ADMIN_HEADERS["Authorization"].encode()
    + b"\r\n\r\n"
)


def admin_side(gw: Running) -> Running:
    """`gw` seen through its admin listener (for `connect`)."""
    return Running(gw.gateway, gw.admin_url, gw.admin_url)


async def admin_served_meanwhile(gw: Running, seconds: float) -> list[int]:
    statuses = []
    end = time.perf_counter() + seconds
    async with aiohttp.ClientSession(headers=ADMIN_HEADERS) as s:
        while time.perf_counter() < end:
            async with s.get(gw.admin_url + "/admin/accounts") as r:
                await r.read()
                statuses.append(r.status)
            await asyncio.sleep(0.05)
    return statuses


@pytest.mark.parametrize("stall", ["headers", "body"])
async def test_the_admin_listener_closes_a_slow_client_on_time_while_serving_others(
    make_gateway: GatewayFactory, provider: FakeProvider, stall: str
) -> None:
    gw = await start(make_gateway, provider, idle_timeout_seconds=30)
    reader, writer = await connect(admin_side(gw))
    started = time.perf_counter()
    if stall == "headers":
        writer.write(b"POST /admin/accounts HTTP/1.1\r\nHost: lunos\r\nAuthor")
    else:
        writer.write(b"POST /admin/accounts HTTP/1.1\r\nHost: lunos\r\nContent-Type: application/json\r\n"
                     b"Authorization: " + ADMIN_HEADERS["Authorization"].encode() + b"\r\n"
                     b'Content-Length: 500\r\n\r\n{"name": "Ada')
    others = asyncio.ensure_future(admin_served_meanwhile(gw, SHORT))
    elapsed = await closed_after(reader, started)
    assert SHORT <= elapsed < SHORT + LATE + 0.1
    statuses = await others
    assert statuses and set(statuses) == {200}


async def test_the_admin_listener_caps_connections_per_address_counted_apart_from_the_public_one(
    make_gateway: GatewayFactory, provider: FakeProvider
) -> None:
    gw = await start(make_gateway, provider, header_timeout_seconds=30, idle_timeout_seconds=30,
                     max_per_address=2)
    public = [await connect(gw) for _ in range(2)]  # the public listener's cap, full
    held = [await connect(admin_side(gw)) for _ in range(2)]
    reader, _ = await connect(admin_side(gw))
    assert await closed_after(reader, time.perf_counter(), limit=2.0) < 0.3
    for r, w in held:
        w.write(ADMIN_REQUEST)
        assert (await read_one_response(r)).startswith(b"HTTP/1.1 200")
    for _, w in [*public, *held]:
        w.close()


async def test_lunos_proxy_serve_applies_the_rules_on_both_listeners_and_warns_of_a_low_open_files_limit(
    provider: FakeProvider, tmp_path: Path
) -> None:
    config = basic_config(provider.base_url, server=connections(idle_timeout_seconds=30))
    path = tmp_path / "lunos.yaml"
    path.write_text(yaml.safe_dump(config))
    port, admin_port = free_port(), free_port()

    def low_open_files_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lunos_proxy", "serve", "--config", str(path),
        "--port", str(port), "--admin-port", str(admin_port),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        preexec_fn=low_open_files_limit,
    )
    try:
        assert proc.stdout is not None
        lines = []
        async with asyncio.timeout(30):
            while not lines or json.loads(lines[-1]).get("event") != "listening":
                lines.append((await proc.stdout.readline()).decode())
        warnings = [json.loads(x) for x in lines if '"open_files_limit"' in x]
        assert [w["detail"] for w in warnings] == [
            "the open-files limit (1024) is below server.connections.max_open (4096) + 256: "
            "raise it (ulimit -n) or lower max_open"
        ]
        gw = Running(None, f"http://127.0.0.1:{port}", "")  # type: ignore[arg-type]
        reader, writer = await connect(gw)
        started = time.perf_counter()
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: lunos\r\n")
        assert SHORT <= await closed_after(reader, started) < SHORT + LATE
        reader, writer = await connect(gw)
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: lunos\r\nContent-Encoding: gzip\r\n"
                     b"Content-Length: 20\r\n\r\n" + gzip.compress(b"{}")[:20])
        assert (await read_one_response(reader)).startswith(b"HTTP/1.1 415")
        writer.close()
        admin = Running(None, f"http://127.0.0.1:{admin_port}", "")  # type: ignore[arg-type]
        reader, writer = await connect(admin)
        started = time.perf_counter()
        writer.write(b"GET /admin/accounts HTTP/1.1\r\nHost: lunos\r\n")
        assert SHORT <= await closed_after(reader, started) < SHORT + LATE
    finally:
        proc.kill()
        await proc.wait()
