"""The request log: the account's own requests, metadata only, filtered and paged."""

from __future__ import annotations

import re
import time
from typing import Any

import openai

from lunos_proxy.console.numbers import duration
from lunos_proxy.console.requests import ENDPOINTS
from lunos_proxy.records import EventQuery
from lunos_proxy.store.base import UsageEvent
from plugins.meter.plugin import METERED
from tests.conftest import GatewayFactory
from tests.console.support import Browser, console_config, new_account, new_key
from tests.fakes import FakeProvider
from tests.meter_support import PRICING, flushed_records

ROW = re.compile(r'<tr><td data-label="Time">([^<]+)</td><td data-label="Key"><span><code>([^<]+)</code>')


async def test_request_log_shows_the_accounts_requests_and_never_their_content(
    provider: FakeProvider, make_gateway: GatewayFactory, browsers: Any, tmp_path: Any
) -> None:
    pricing = tmp_path / "pricing.yaml"
    pricing.write_text(PRICING)
    config = console_config(provider.base_url)
    config["pipeline"].append({"name": "meter", "settings": {"pricing": str(pricing)}})
    gw = await make_gateway(config)
    account = await new_account(gw)
    signin, laptop = await new_key(gw, account, "signin"), await new_key(gw, account, "laptop")
    other = await new_key(gw, await new_account(gw, "Bob", "bob@example.com"), "bob")
    secret_prompt = "canary-prompt-7f3a9 tell nobody"
    for made in (laptop, laptop, other):
        client = openai.AsyncOpenAI(base_url=gw.v1, api_key=made["key"], max_retries=0)
        async with client:
            reply = await client.chat.completions.create(
                model="gpt-test", messages=[{"role": "user", "content": secret_prompt}])
    answer = reply.choices[0].message.content
    assert answer
    await flushed_records(gw.gateway)

    browser: Browser = browsers(gw)
    await browser.sign_in_with_key(signin["key"])
    status, text = await browser.get("/console/requests")
    assert status == 200
    rows = ROW.findall(text)
    assert [prefix for _, prefix in rows] == [f"{laptop['prefix']}…"] * 2  # not Bob's
    assert "2 requests since" in text and "gpt-test" in text and ">200<" in text
    assert secret_prompt not in text and answer not in text
    assert text.count('<td data-label="Endpoint"><code>chat/completions</code></td>') == 2
    latencies = re.findall(r'<td data-label="Latency" class="num">([^<]+)</td>', text)
    assert len(latencies) == 2 and all(re.fullmatch(r"\d+ ms|[\d,]+\.\d s", t) for t in latencies), latencies
    events = [e async for e in gw.gateway.records.all_events(EventQuery(account_id=account))]
    assert sorted(latencies) == sorted(duration(e.latency_ms) for e in events)
    status, text = await browser.get("/console/requests?endpoint=messages")
    assert ROW.findall(text) == [] and "No requests match these filters." in text
    assert '<option value="messages" selected>Messages (Anthropic)</option>' in text
    status, text = await browser.get("/console/requests?endpoint=chat%2Fcompletions")
    assert len(ROW.findall(text)) == 2
    status, text = await browser.get("/console/requests?endpoint=%2Fv1%2Fsecret")  # not a route
    assert len(ROW.findall(text)) == 2 and "/v1/secret" not in text

    status, text = await browser.get(f"/console/requests?key={signin['id']}")
    assert ROW.findall(text) == [] and "No requests match these filters." in text
    status, text = await browser.get("/console/requests?status=server")
    assert ROW.findall(text) == []
    status, text = await browser.get(f"/console/requests?key={laptop['id']}&model=gpt-test&status=ok")
    assert len(ROW.findall(text)) == 2

    # The keys page shows each key's use this month and when it was last used.
    status, text = await browser.get("/console/keys")
    row = re.search(rf'<tr data-key-id="{laptop["id"]}">(.*?)</tr>', text, re.S)
    assert row is not None
    assert '<td data-label="Requests" class="num">2</td>' in row.group(1)
    assert re.search(r'<td data-label="Last used">\d{4}-\d\d-\d\d \d\d:\d\d</td>', row.group(1))
    idle = re.search(rf'<tr data-key-id="{signin["id"]}">(.*?)</tr>', text, re.S)
    assert idle is not None and '<td data-label="Last used">never</td>' in idle.group(1)


async def test_request_log_pages_newest_first(
    provider: FakeProvider, make_gateway: GatewayFactory, browsers: Any
) -> None:
    gw = await make_gateway(console_config(provider.base_url))
    account = await new_account(gw)
    made = await new_key(gw, account)
    now = time.time()
    day = time.strftime("%Y-%m-%d", time.gmtime(now))
    assert await gw.gateway.records.add("b", [
        UsageEvent(request_id=f"req_{i}", account_id=account, key_id=made["id"], model="gpt-test",
                   time=now - 1000 + i, day=day, status=200 if i % 10 else 429, input_tokens=1000 + i)
        for i in range(60)], [])
    browser: Browser = browsers(gw)
    await browser.sign_in_with_key(made["key"])
    status, text = await browser.get("/console/requests")
    assert len(ROW.findall(text)) == 50 and "Page 1 of 2" in text and 'id="prev-page"' not in text
    first_tokens = re.findall(r'data-label="Input tokens" class="num">([\d,]+)<', text)
    assert first_tokens[:2] == ["1,059", "1,058"]
    nxt = re.search(r'<a href="([^"]+)" rel="next" id="next-page">', text)
    assert nxt is not None
    status, text = await browser.get(nxt.group(1).replace("&amp;", "&"))
    assert status == 200 and len(ROW.findall(text)) == 10 and "Page 2 of 2" in text and 'id="next-page"' not in text
    assert re.findall(r'data-label="Input tokens" class="num">([\d,]+)<', text)[0] == "1,009"
    back = re.search(r'<a href="([^"]+)" rel="prev" id="prev-page">', text)
    assert back is not None
    status, text = await browser.get(back.group(1).replace("&amp;", "&"))
    assert status == 200 and "Page 1 of 2" in text
    assert re.findall(r'data-label="Input tokens" class="num">([\d,]+)<', text) == first_tokens
    _, text = await browser.get("/console/requests?status=client")
    assert len(ROW.findall(text)) == 6 and "6 requests since" in text
    # Events recorded before they held endpoint and latency show neither.
    assert text.count('<td data-label="Endpoint">—</td>') == 6
    assert text.count('<td data-label="Latency" class="num">—</td>') == 6


def test_the_endpoint_filter_offers_every_metered_route() -> None:
    assert set(ENDPOINTS) == METERED


def test_durations_read_in_milliseconds_below_a_second() -> None:
    assert [duration(ms) for ms in (0, 340, 999, 1000, 2412, 61_000)] == [
        "0 ms", "340 ms", "999 ms", "1.0 s", "2.4 s", "61.0 s"]
