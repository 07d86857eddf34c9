"""The usage page and its CSV: by day and model, only the signed-in account's."""

from __future__ import annotations

import re
from typing import Any

from lunos_proxy.console.budgets import nearly_at
from lunos_proxy.store.base import UsageDelta
from tests.conftest import GatewayFactory
from tests.console.support import Browser, console_config, new_account, new_key, signed_in
from tests.fakes import FakeProvider


async def test_usage_by_day_and_model_as_chart_table_and_csv(
    provider: FakeProvider, make_gateway: GatewayFactory, browsers: Any
) -> None:
    gw = await make_gateway(console_config(provider.base_url))
    account = await new_account(gw)
    other = await new_account(gw, "Other", "other@example.com")
    a, b = await new_key(gw, account, "a"), await new_key(gw, account, "b")
    await gw.gateway.store.add_usage([
        UsageDelta(account_id=account, key_id=a["id"], model="gpt-test", day="2026-11-02", input_tokens=10, output_tokens=5, cost_micros=1500),
        UsageDelta(account_id=account, key_id=b["id"], model="gpt-test", day="2026-11-02", input_tokens=1, output_tokens=1, cost_micros=500),
        UsageDelta(account_id=account, key_id=a["id"], model="claude-test", day="2026-11-03", input_tokens=7, output_tokens=3),
        UsageDelta(account_id=account, key_id=a["id"], model="gpt-test", day="2026-10-01", input_tokens=99),
        UsageDelta(account_id=other, key_id="key_other", model="gpt-test", day="2026-11-02", input_tokens=1000),
    ])
    browser: Browser = browsers(gw)
    await browser.sign_in_with_key(a["key"])
    status, text = await browser.get("/console/usage?from=2026-11-01&to=2026-11-03")
    assert status == 200
    rows = re.findall(r'<tr><td data-label="Day">([\d-]+)</td><td data-label="Model">([\w-]+)</td>'
                      r'<td data-label="Requests" class="num">([\d,]+)</td><td data-label="Input tokens" class="num">([\d,]+)</td>'
                      r'<td data-label="Output tokens" class="num">([\d,]+)</td><td data-label="Cost" class="num">([^<]+)</td></tr>', text)
    assert rows == [("2026-11-02", "gpt-test", "2", "11", "6", "$0.002"),
                    ("2026-11-03", "claude-test", "1", "7", "3", "$0.00")]
    assert "3 requests · 18 input tokens · 9 output tokens · $0.002" in text
    assert '<td data-label="Output tokens" class="num">9</td><td data-label="Cost" class="num">$0.002</td></tr></tfoot>' in text
    assert len(re.findall(r"<rect x=", text)) == 2
    # A y-axis at round values, a date tick per day, tooltips with formatted values.
    assert re.findall(r'<text x="2" y="[\d.]+" font-size="12" fill="#374151">([^<]+)</text>', text) == ["5", "10", "15", "20"]
    assert re.findall(r'text-anchor="(?:start|middle)">([^<]+)</text>', text) == ["Nov 1", "Nov 2", "Nov 3"]
    assert "<title>2026-11-02, gpt-test: 17</title>" in text and "<title>2026-11-02: 17</title>" in text
    status, text = await browser.get("/console/usage?from=2026-11-01&to=2026-11-03&metric=cost")
    assert len(re.findall(r"<rect x=", text)) == 1  # claude-test cost nothing
    assert "<title>2026-11-02, gpt-test: $0.002</title>" in text

    async with browser.http.get(gw.url + "/console/usage.csv?from=2026-11-01&to=2026-11-03") as r:
        assert r.status == 200 and r.content_type == "text/csv"
        assert r.headers["Content-Disposition"] == 'attachment; filename="lunos-usage-2026-11-01-2026-11-03.csv"'
        csv_text = await r.text()
    by_prefix = sorted([(a["prefix"], "1,10,5,0,0.001500"), (b["prefix"], "1,1,1,0,0.000500")])
    assert csv_text.splitlines() == [
        "day,model,key,requests,input_tokens,output_tokens,cached_input_tokens,cost",
        *[f"2026-11-02,gpt-test,{prefix},{counts}" for prefix, counts in by_prefix],
        f"2026-11-03,claude-test,{a['prefix']},1,7,3,0,0.000000",
    ]


async def test_usage_period_must_be_valid_dates(
    provider: FakeProvider, make_gateway: GatewayFactory, browsers: Any
) -> None:
    gw = await make_gateway(console_config(provider.base_url))
    _, _made, browser = await signed_in(gw, browsers)
    # A wrong date is not shown back (the page quotes no input): its field is
    # empty, what is wrong is said next to it, and the page still shows (the
    # last 30 days). A valid date in the other field stays.
    status, text = await browser.get("/console/usage?from=yesterday&to=2026-11-03")
    assert status == 400 and 'id="from" value=""' in text and 'aria-invalid="true"' in text
    assert "yesterday" not in text
    assert '<span class="error" id="from-error">From: Write the date as YYYY-MM-DD' in text
    assert 'id="to" value="2026-11-03"' in text and 'id="spend-today"' in text and 'id="no-usage"' in text
    status, text = await browser.get("/console/usage?from=2026-11-03&to=2026-11-01")
    assert status == 400 and "The last day must not be before the first." in text
    status, text = await browser.get("/console/usage")
    assert status == 200 and "No usage in this period." in text


async def test_budgets_page_shows_the_meters_limits_spend_and_alert_thresholds(
    provider: FakeProvider, make_gateway: GatewayFactory, browsers: Any
) -> None:
    import datetime as dt

    from lunos_proxy.store.base import SpendDelta
    from tests.auth_support import admin

    config = console_config(provider.base_url)
    config["pipeline"].append({"name": "meter", "settings": {"budgets": {
        "plans": {"pro": {"daily": "2", "monthly": "40", "soft": [0.5, 0.9]}}}}})
    gw = await make_gateway(config)
    status, account = await admin(gw, "POST", "/admin/accounts", {"name": "Ada", "email": "ada@example.com", "plan": "pro"})
    assert status == 201
    made = await new_key(gw, account["id"])
    today = dt.datetime.now(dt.UTC).date()
    subject = f"account:{account['id']}"
    await gw.gateway.store.add_spend([SpendDelta(subject=subject, period=f"d:{today.isoformat()}", micros=1_500_000),
                                      SpendDelta(subject=subject, period=f"m:{today.isoformat()[:7]}", micros=4_000_000)])
    browser: Browser = browsers(gw)
    await browser.sign_in_with_key(made["key"])
    status, text = await browser.get("/console/budgets")
    assert status == 200
    rows = re.findall(r'<tr><td data-label="Applies to">Your account</td><td data-label="Limit">(\w+)</td>'
                      r'<td data-label="Period">([\d-]+)</td><td data-label="Amount" class="num">([^<]+)</td>'
                      r'<td data-label="Spent" class="num">([^<]+)</td><td data-label="Used" class="num">(\d+%)</td>'
                      r'<td data-label="Alerts at">([^<]*)</td></tr>', text)
    assert rows == [("Daily", today.isoformat(), "$2.00", "$1.50", "75%", "50%, 90%"),
                    ("Monthly", today.isoformat()[:7], "$40.00", "$4.00", "10%", "50%, 90%")]
    assert '<progress max="100" value="75" aria-label="Your account daily budget used: 75%">' in text
    assert 'id="budget-exhausted"' not in text
    assert 'id="budget-nearly-spent"' not in text  # 75 %: below the highest alert, 90 %
    # The overview shows the same budgets; at 90 % of the daily one, both warn
    # with what is left and when it resets; once it is spent, both say
    # requests are refused and when that ends.
    status, text = await browser.get("/console/usage")
    assert '<progress max="100" value="10" aria-label="Your account monthly budget used: 10%">' in text
    await gw.gateway.store.add_spend([SpendDelta(subject=subject, period=f"d:{today.isoformat()}", micros=300_000)])
    tomorrow = (today + dt.timedelta(days=1)).isoformat()
    for page in ("/console/usage", "/console/budgets"):
        status, text = await browser.get(page)
        assert ('<div class="banner near" role="status" id="budget-nearly-spent">Your account: the daily budget '
                f'of $2.00 is nearly spent ($1.80, 90%). $0.20 is left until it resets on {tomorrow} 00:00 UTC; '
                'past it, requests with any of your keys are refused.</div>') in text
        assert text.count('class="banner near"') == 1 and 'id="budget-exhausted"' not in text
    await gw.gateway.store.add_spend([SpendDelta(subject=subject, period=f"d:{today.isoformat()}", micros=200_000)])
    for page in ("/console/usage", "/console/budgets"):
        status, text = await browser.get(page)
        assert ('<div class="banner exhausted" role="alert" id="budget-exhausted">Your account: the daily budget '
                f'of $2.00 is spent ($2.00). Requests with any of your keys are refused until it resets on {tomorrow} 00:00 UTC.</div>') in text
        assert 'class="banner near"' not in text


def test_a_budget_is_nearly_spent_from_the_highest_alert_below_the_whole_limit() -> None:
    assert [nearly_at(soft) for soft in ((0.5, 0.9), (0.5, 0.8, 1.0), (1.0, 1.5), (), (0.95,))] == [
        0.9, 0.8, 0.8, 0.8, 0.95]


async def test_budgets_page_without_a_meter_says_nothing_is_limited(
    provider: FakeProvider, make_gateway: GatewayFactory, browsers: Any
) -> None:
    import datetime as dt

    gw = await make_gateway(console_config(provider.base_url))
    account, made, browser = await signed_in(gw, browsers)
    today = dt.datetime.now(dt.UTC).date()
    await gw.gateway.store.add_usage([
        UsageDelta(account_id=account, key_id=made["id"], model="gpt-test", day=today.isoformat(),
                   requests=1200, input_tokens=1_000_000, output_tokens=234_567, cost_micros=12_345_678),
        UsageDelta(account_id=account, key_id=made["id"], model="gpt-test", day=(today - dt.timedelta(days=40)).isoformat(),
                   cost_micros=99_000_000)])
    status, text = await browser.get("/console/budgets")
    assert status == 200 and "No budget limits your account (spend is not metered" in text
    # Spend is shown without a budget too: today's and this month's (not the older day's).
    assert '<span class="big" id="spend-today">$12.35</span><span class="small">1,200 requests · 1,234,567 tokens</span>' in text
    month = '<span class="big" id="spend-month">$12.35</span>'
    assert month in text


async def test_account_holder_sets_own_alert_thresholds_and_the_meter_notifies_at_them(
    provider: FakeProvider, make_gateway: GatewayFactory, browsers: Any, tmp_path: Any
) -> None:
    import json

    import openai

    from tests.auth_support import admin
    from tests.e2e.test_budgets import Receiver
    from tests.fakes import COMPLETION_TOKENS, PROMPT_TOKENS
    from tests.meter_support import PRICING, cost, meter_of

    per_request = cost("gpt-test", PROMPT_TOKENS, COMPLETION_TOKENS)  # 88 micro-dollars
    pricing = tmp_path / "pricing.yaml"
    pricing.write_text(PRICING)
    async with Receiver() as hook:
        config = console_config(provider.base_url)
        config["pipeline"].append({"name": "meter", "settings": {
            "pricing": str(pricing),
            "budgets": {"refresh_seconds": 0,
                        "plans": {"pro": {"daily": "0.0002", "soft": [0.5, 0.9]}}},
            "webhook": {"url": hook.url, "secret": "whsec-test-0123456789"}}})
        gw = await make_gateway(config)
        status, account = await admin(gw, "POST", "/admin/accounts",
                                      {"name": "Ada", "email": "ada@example.com", "plan": "pro"})
        assert status == 201
        made = await new_key(gw, account["id"])
        other = await new_account(gw, "Bob", "bob@example.com")
        browser: Browser = browsers(gw)
        await browser.sign_in_with_key(made["key"])
        await browser.get("/console/budgets")

        for typed, why in (("150", "150 is outside 1 to 100"), ("0.5, 0.8", "0.5 is outside 1 to 100"),
                           ("50, lots", "“lots” is not a number")):
            status, text = await browser.post("/console/budgets/alerts", {"thresholds": typed})
            assert status == 400 and f'<span class="error" id="thresholds-error">{why}' in text
            assert f'id="alert-thresholds" value="{typed}"' in text  # what was typed stays
        assert (await gw.gateway.store.account(account["id"])).alert_thresholds is None  # type: ignore[union-attr]
        assert "Alerts go to the service operator's budget-alert hook" in text

        status, text = await browser.post("/console/budgets/alerts", {"thresholds": "75%, 30"})
        assert status == 200 and "Saved: alerts at 30 %, 75 %" in text
        assert (await gw.gateway.store.account(account["id"])).alert_thresholds == [0.3, 0.75]  # type: ignore[union-attr]
        assert (await gw.gateway.store.account(other)).alert_thresholds is None  # type: ignore[union-attr]
        row = re.search(r'<tr><td data-label="Applies to">Your account</td><td data-label="Limit">Daily</td>.*?<td data-label="Alerts at">([^<]*)</td></tr>', text)
        assert row is not None and row.group(1) == "30%, 75%"

        # One request spends 88 of 200 (44 %): past the holder's 30 %, short of the plan's 50 %.
        client = openai.AsyncOpenAI(base_url=gw.v1, api_key=made["key"], max_retries=0)
        async with client:
            await client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
        meter = meter_of(gw.gateway)
        assert await meter.ledger.flush()
        assert meter.notifier is not None
        await meter.notifier.close()
    payloads = [json.loads(body) for _, body in hook.calls]
    assert [(p["subject_id"], p["threshold"], p["spent_micros"]) for p in payloads] == [
        (account["id"], 0.3, per_request)]

    status, text = await browser.post("/console/budgets/alerts", {"thresholds": ""})
    assert status == 200
    assert (await gw.gateway.store.account(account["id"])).alert_thresholds is None  # type: ignore[union-attr]


def test_nearly_spent_banners_say_what_is_left_of_credit_and_of_a_keys_budget() -> None:
    from lunos_proxy.console.pages import _templates

    banners = _templates.get_template("_budget.html").make_module().banners
    credit = {"what": "Your account", "kind": "Prepaid credit", "limit": "$10.00", "spent": "$8.50",
              "used": "85%", "left": "$1.50", "resets": "when credit is added", "nearly": True, "exhausted": False}
    key = {"what": "Key laptop (lk-AbC12x…)", "kind": "Monthly", "limit": "$5.00", "spent": "$4.50",
           "used": "90%", "left": "$0.50", "resets": "2027-01-01 00:00 UTC", "nearly": True, "exhausted": False}
    html = str(banners([credit, key]))
    assert re.findall(r'<div class="banner near" role="status" id="([\w-]+)">([^<]+)</div>', html) == [
        ("budget-nearly-spent", "Your account: the prepaid credit of $10.00 is nearly spent ($8.50, 85%). "
         "$1.50 is left; past it, requests with any of your keys are refused until credit is added."),
        ("budget-nearly-spent-2", "Key laptop (lk-AbC12x…): the monthly budget of $5.00 is nearly spent "
         "($4.50, 90%). $0.50 is left until it resets on 2027-01-01 00:00 UTC; past it, requests with "
         "this key are refused."),
    ]
