"""Nothing on the request path keeps the event loop busy for long.

Every path that counts tokens (a provider that reports no usage, a client
that leaves mid-stream or before the answer begins) and a config reload
run under `tests.loop_watch.watch_loop`, which fails on any callback that
used more than 50 ms of the loop thread's CPU (CPU, not wall time, so that
a busy machine preempting the test does not fail it; see that module).
The tokenizer's tables are dropped first, as in a fresh process: the
counts then go to a tokenizer process, and the tables never load into the
serving one (a load on a thread of its own held the interpreter lock, which
this CPU-time watch cannot see, for tens of milliseconds at a time).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import openai
import pytest
import yaml

from lunos_proxy.loading import parse_config
from lunos_proxy.workers import prepare_plugins
from plugins.meter import estimate
from tests.conftest import ADMIN_HEADERS, GatewayFactory
from tests.fakes import FakeProvider
from tests.logcapture import Captured
from tests.loop_watch import watch_loop
from tests.meter_support import (
    KEY_B1,
    PRICING,
    flushed_usage,
    meter_config,
    meter_of,
    recorded_events,
    requests_settled,
)

MESSAGES = [{"role": "user", "content": "hi"}]

AUTH = {"Authorization": f"Bearer {KEY_B1}"}
# 1.2 million characters: past what the tokenizer takes in one call (a
# million characters, 200,000 tokens), so it is counted in pieces.
LONG = "hello " * 200_000
LONG_TOKENS = 200_001  # "hello", 199,999 x " hello", the last " "
FRAMING = 3 + 3 + 1  # reply priming, the message's framing, its role "user"


@pytest.fixture
def fresh_tokenizer(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    process = estimate._TokenizerProcess()
    monkeypatch.setattr(estimate, "_loaded", {})
    monkeypatch.setattr(estimate, "_process", process)
    yield
    process.stop()


@pytest.mark.usefixtures("fresh_tokenizer")
async def test_counting_tokens_and_reloading_keep_the_loop_free(
    provider: FakeProvider, make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    config = meter_config(provider.base_url, tmp_path)
    config.setdefault("server", {})["max_body_bytes"] = 4_000_000
    gw = await make_gateway(config)
    path = tmp_path / "lunos.yaml"
    path.write_text(yaml.safe_dump(config))
    gw.gateway.reloader.path = str(path)
    provider.behaviour.report_usage = False
    chat = gw.v1 + "/chat/completions"
    async with aiohttp.ClientSession() as s:
        with watch_loop(0.05) as work:
            # 1. An answer without usage, to a long prompt: the tables load
            #    (on the tokenizer's thread) and 1.2 MB of text is counted.
            long = {"model": "gpt-test", "messages": [{"role": "user", "content": LONG}]}
            async with s.post(chat, json=long, headers=AUTH) as r:
                assert r.status == 200
            # 2. A client that leaves mid-stream.
            provider.behaviour.chunk_interval = 0.1
            stream = {"model": "gpt-test", "stream": True,
                      "messages": [{"role": "user", "content": LONG}]}
            async with s.post(chat, json=stream, headers=AUTH) as r:
                assert (await r.content.readuntil(b"\n\n")).startswith(b"data: {")
            provider.behaviour.chunk_interval = 0.0
            # 3. A client that leaves before the answer begins.
            provider.behaviour.delay_headers = 0.5
            with pytest.raises(TimeoutError):
                await s.post(chat, json=long, headers=AUTH,
                             timeout=aiohttp.ClientTimeout(total=0.2))
            await requests_settled(gw.gateway)
        provider.behaviour.delay_headers = 0.0
        # (Read before the reload: a new generation has a meter of its own.)
        rows = await flushed_usage(gw.gateway, "acct-b")
        events = await recorded_events(gw.gateway, "acct-b")
        with watch_loop(0.05) as reloading:
            # 4. A reload: the file read and checked, a new generation built.
            async with s.post(gw.admin_url + "/admin/reload", headers=ADMIN_HEADERS) as r:
                assert (r.status, (await r.json())["result"]) == (200, "applied")
    assert work.slow == reloading.slow == [], work.report() + reloading.report()
    assert work.callbacks > 100  # the watch saw the requests go through
    assert [(r.requests, r.input_tokens) for r in rows] == [(3, 3 * (FRAMING + LONG_TOKENS))]
    assert [e.usage_source for e in events] == ["estimated"] * 3
    assert estimate._loaded == {}  # counted by the tokenizer process


@pytest.mark.usefixtures("fresh_tokenizer")
def test_workers_share_the_tables_their_models_count_with(tmp_path: Path) -> None:
    """`serve --workers N` loads them in the parent, before it forks."""
    config = meter_config("http://127.0.0.1:9/v1", tmp_path)
    config["models"]["gpt-4-old"] = {"deployments": [{"provider": "fake", "model": "gpt-4-0613"}]}
    try:
        prepare_plugins(parse_config(yaml.safe_dump(config), "test.yaml"))
        assert sorted(estimate._loaded) == ["cl100k_base", "o200k_base"]
        assert gc.get_freeze_count() > 0  # kept off the workers' collections
    finally:
        gc.unfreeze()
    config["pipeline"][-1]["settings"]["estimate"] = False
    estimate._loaded.clear()
    prepare_plugins(parse_config(yaml.safe_dump(config), "test.yaml"))
    gc.unfreeze()
    assert estimate._loaded == {}


@pytest.mark.usefixtures("fresh_tokenizer")
async def test_a_stream_counted_while_its_client_hangs_up_is_settled_with_the_count(
    captured_logs: Captured, provider: FakeProvider, make_gateway: GatewayFactory,
    tmp_path: Path,
) -> None:
    """The count ends after the client has the whole stream, and the SDK
    closes its connection then, which cancels the request: the count is
    still the usage settled, billed and logged, and the request a success."""
    provider.behaviour.report_usage = False
    config = meter_config(provider.base_url, tmp_path)
    config["pipeline"].insert(1, {"name": "logger"})
    gw = await make_gateway(config)
    async with openai.AsyncOpenAI(base_url=gw.v1, api_key=KEY_B1, max_retries=0) as client:
        stream = await client.chat.completions.create(model="gpt-test", messages=MESSAGES,
                                                      stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "Hello, world!"
    [row] = await flushed_usage(gw.gateway, "acct-b")
    assert (row.input_tokens, row.output_tokens) == (FRAMING + 1, 4)  # "hi"; "Hello, world!"
    [line] = captured_logs.requests()
    assert (line["status"], line["usage_source"], line["output_tokens"]) == (200, "estimated", 4)


async def test_a_reload_with_a_long_pricing_file_keeps_the_loop_free(
    provider: FakeProvider, make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    """The file is read and checked in a thread; the meter then finds the
    table made there, rather than parsing the file again on the loop (a
    pricing file of 500 models takes over 100 ms to parse)."""
    prices = tmp_path / "long-pricing.yaml"
    prices.write_text(PRICING + "".join(
        f"  model-{i}:\n    - {{from: 2020-01-01, input: 2.5, output: 10}}\n" for i in range(500)
    ))
    config = meter_config(provider.base_url, tmp_path, meter={"pricing": str(prices)})
    gw = await make_gateway(config)
    path = tmp_path / "lunos.yaml"
    path.write_text(yaml.safe_dump(config))
    gw.gateway.reloader.path = str(path)
    with prices.open("a") as f:  # a new price: the file must be read again
        f.write("  model-new:\n    - {from: 2020-01-01, input: 1, output: 2}\n")
    async with aiohttp.ClientSession() as s:
        with watch_loop(0.05) as work:
            async with s.post(gw.admin_url + "/admin/reload", headers=ADMIN_HEADERS) as r:
                assert (r.status, (await r.json())["result"]) == (200, "applied")
    assert work.slow == [], work.report()
    assert meter_of(gw.gateway).prices.price(("model-new",), time.time()) is not None
