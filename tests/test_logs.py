"""Every log line is one structured record: our events keep their names and
fields, library lines are `library_log` records without client text."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest

from lunos_proxy.logs import LIBRARY_EVENT
from tests.auth_support import STATIC_KEY, auth_config
from tests.conftest import GatewayFactory
from tests.fakes import FakeProvider
from tests.limits.fakes import abuse_fakes  # noqa: F401 - fixture
from tests.limits.helpers import abuse_config, eventually_async, plan, post
from tests.logcapture import Captured
from tests.redis_servers import RedisServer


async def test_the_address_ban_is_one_event_with_its_address_and_duration(
    captured_logs: Captured, provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    cfg = auth_config(provider.base_url)
    cfg["pipeline"].append({"name": "abuse", "settings": {
        "auth_failures": {"limit": 2, "window": 300, "ban_seconds": 30}}})
    gw = await make_gateway(cfg)
    async with aiohttp.ClientSession() as s:
        statuses = [(await post(s, gw, key="lk-wrong-0123456789"))[0] for _ in range(3)]
        assert (await post(s, gw, key=STATIC_KEY))[0] == 429
    assert statuses == [401, 401, 429]
    [line] = [x for x in captured_logs.lines() if x["event"] == "address_banned"]
    assert {k: v for k, v in line.items() if k != "timestamp"} == {
        "event": "address_banned", "level": "warning", "client_addr": "127.0.0.1",
        "banned": "127.0.0.1", "seconds": 30}


@pytest.mark.usefixtures("abuse_fakes")
async def test_a_store_outage_is_limits_store_down_then_up_with_the_policy(
    captured_logs: Captured, redis_server: RedisServer, provider: FakeProvider,
    make_gateway: GatewayFactory,
) -> None:
    settings = plan(key={"requests_per_minute": 10_000}) | {
        "on_store_failure": "fail_open", "retry_store_after": 0.2}
    gw = await make_gateway(abuse_config(provider.base_url, settings, store=redis_server.url,
                                         timeout=0.5, connect_timeout=0.5))
    async with aiohttp.ClientSession() as s:
        assert (await post(s, gw))[0] == 200
        redis_server.stop()
        assert (await post(s, gw))[0] == 200  # fail_open: served by the local limiter
        redis_server.start()

        async def recovered() -> bool:
            return (await post(s, gw))[0] == 200 and any(
                x["event"] == "limits_store_up" for x in captured_logs.lines())

        await eventually_async(recovered, timeout=10)
    store_lines = [{k: v for k, v in x.items() if k != "timestamp"}
                   for x in captured_logs.lines() if x["event"].startswith("limits_store")]
    assert store_lines[0]["event"] == "limits_store_down"
    assert store_lines[0]["error"] in {"ConnectionError", "TimeoutError", "ConnectionRefusedError"}
    assert store_lines == [
        {"event": "limits_store_down", "level": "warning", "policy": "fail_open",
         "error": store_lines[0]["error"]},
        {"event": "limits_store_up", "level": "warning", "policy": "fail_open"},
    ]
    assert "%s" not in captured_logs.text


def test_library_lines_are_records_with_logger_level_and_a_message_without_client_text(
    captured_logs: Captured,
) -> None:
    try:
        raise ValueError("LIB-SECRET in the message")
    except ValueError as e:
        # aiohttp's server loggers: the arguments are the client's (its address).
        logging.getLogger("aiohttp.server").exception("Error handling request from %s", "203.0.113.9")
        logging.getLogger("redis.asyncio.cluster").error("Error %s on %s (%d tries)", e, "node-1", 3)
        logging.getLogger("some.library").warning(f"giving up: {e}", exc_info=True)
    logging.getLogger("some.library").info("%(what)s with %(obj)s", {"what": "done", "obj": object()})
    logging.getLogger("asyncio").error("Task exception was never retrieved\nfuture: <Task LIB-SECRET>")
    lines = [{k: v for k, v in x.items() if k != "timestamp"} for x in captured_logs.lines()]
    stack = lines[0]["exception"]["stack"]
    assert lines == [
        {"event": LIBRARY_EVENT, "level": "error", "logger": "aiohttp.server",
         "message": "Error handling request from %s",
         "exception": {"type": "ValueError", "stack": stack}},
        {"event": LIBRARY_EVENT, "level": "error", "logger": "redis.asyncio.cluster",
         "message": "Error ValueError on node-1 (3 tries)"},
        {"event": LIBRARY_EVENT, "level": "warning", "logger": "some.library",
         "message": "giving up: ValueError", "exception": {"type": "ValueError", "stack": stack}},
        {"event": LIBRARY_EVENT, "level": "info", "logger": "some.library",
         "message": "done with object"},
        {"event": LIBRARY_EVENT, "level": "error", "logger": "asyncio",
         "message": "Task exception was never retrieved"},
    ]
    assert "LIB-SECRET" not in captured_logs.text and "203.0.113.9" not in captured_logs.text


def test_the_access_log_and_library_debug_lines_are_never_written(captured_logs: Captured) -> None:
    access = logging.getLogger("aiohttp.access")
    access.disabled = False  # as if someone turned aiohttp's access log on
    try:
        access.info('127.0.0.1 "GET /v1/chat?q=LIB-SECRET HTTP/1.1" 200')
    finally:
        access.disabled = True
    logging.getLogger("redis._parsers.resp3").debug("Push response: LIB-SECRET")
    assert captured_logs.text == ""


async def test_a_malformed_request_is_logged_by_aiohttp_without_its_bytes_or_address(
    captured_logs: Captured, provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    """The public listener answers a request its parser refuses itself
    (lunos_proxy/http_errors.py): at most a debug `bad_http_request` line
    naming the error's type, never aiohttp's own line with the bytes."""
    gw = await make_gateway(auth_config(provider.base_url))
    port = int(gw.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nBad Header LIB-SECRET\r\n\r\n")
    await writer.drain()
    assert (await reader.read(12))[8:] == b" 400"
    writer.close()
    for _ in range(100):
        if captured_logs.lines():
            break
        await asyncio.sleep(0.01)
    # The public listener's connections log it themselves (http_errors.py),
    # at debug level, with the parser error's type only.
    [line] = captured_logs.lines()
    assert (line["event"], line["level"], line["status"]) == ("bad_http_request", "debug", 400)
    assert line["error"] in {"BadHttpMessage", "InvalidHeader"}
    assert "LIB-SECRET" not in captured_logs.text and "127.0.0.1" not in captured_logs.text
