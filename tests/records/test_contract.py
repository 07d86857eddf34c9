"""The records contract: every backend (SQLite, PostgreSQL) passes the same tests."""

from __future__ import annotations

import msgspec
import pytest

from lunos_proxy.records import EventQuery, Records
from lunos_proxy.records.base import MAX_PAGE, BillingRecord, UsageEvent, UsageRow


def event(n: int, *, account: str = "acct_a", key: str = "key_1", model: str = "m1",
          day: str = "2026-12-01", time: float | None = None, cost: int = 10,
          endpoint: str = "chat/completions") -> UsageEvent:
    return UsageEvent(
        request_id=f"req-{n}", account_id=account, key_id=key, model=model, provider="p",
        time=time if time is not None else 1_764_547_200.0 + n, day=day, status=200,
        stream=bool(n % 2), input_tokens=n, output_tokens=2 * n, cached_input_tokens=n // 2,
        cache_creation_tokens=1, reasoning_tokens=3, cost_micros=cost, usage_source="reported",
        endpoint=endpoint, latency_ms=1000 + n,
    )


def line(account: str = "acct_a", period: str = "2026-12-01", model: str = "m1", *,
         requests: int = 1, cost: int = 10, id: str = "b1", created: float = 1.0) -> BillingRecord:
    return BillingRecord(id=id, account_id=account, period=period, model=model,
                         requests=requests, input_tokens=5 * requests, output_tokens=7 * requests,
                         cost_micros=cost, created=created)


async def everything(records: Records, **query: object) -> list[UsageEvent]:
    return [e async for e in records.all_events(EventQuery(account_id="acct_a", **query))]  # type: ignore[arg-type]


async def test_added_events_read_back_whole_oldest_first(records: Records) -> None:
    written = [event(3), event(1), event(2)]
    assert await records.add("batch-1", written, [])
    page = await records.events(EventQuery(account_id="acct_a"))
    assert page.events == [event(1), event(2), event(3)]
    assert page.next == ""


async def test_a_repeated_batch_changes_nothing(records: Records) -> None:
    assert await records.add("batch-1", [event(1), event(2)], [line(requests=2, cost=20)])
    assert not await records.add("batch-1", [event(1), event(2)], [line(requests=2, cost=20)])
    assert len(await everything(records)) == 2
    [only] = await records.billing("acct_a")
    assert (only.requests, only.cost_micros) == (2, 20)


async def test_ledger_lines_sum_per_account_day_and_model(records: Records) -> None:
    await records.add("b1", [], [line(requests=2, cost=20, id="first", created=5.0),
                                 line(model="m2", requests=1, cost=7, id="other")])
    await records.add("b2", [], [line(requests=3, cost=30, id="second", created=9.0),
                                 line("acct_b", requests=1, cost=1, id="b")])
    lines = await records.billing("acct_a")
    assert lines == [
        BillingRecord(id="first", account_id="acct_a", period="2026-12-01", model="m1",
                      requests=5, input_tokens=25, output_tokens=35, cost_micros=50, created=5.0),
        BillingRecord(id="other", account_id="acct_a", period="2026-12-01", model="m2",
                      requests=1, input_tokens=5, output_tokens=7, cost_micros=7, created=1.0),
    ]
    assert [b.cost_micros for b in await records.billing("acct_b")] == [1]


async def test_queries_select_by_days_key_model_and_endpoint(records: Records) -> None:
    await records.add("b", [
        event(1, day="2026-11-30"), event(2), event(3, key="key_2"), event(4, model="m2"),
        event(5, day="2026-12-02", endpoint="messages"), event(6, account="acct_b"),
    ], [])
    ids = lambda events: [e.request_id for e in events]  # noqa: E731
    assert ids(await everything(records)) == [f"req-{n}" for n in range(1, 6)]
    assert ids(await everything(records, first_day="2026-12-01", last_day="2026-12-01")) == [
        "req-2", "req-3", "req-4"]
    assert ids(await everything(records, key_id="key_2")) == ["req-3"]
    assert ids(await everything(records, model="m2")) == ["req-4"]
    assert ids(await everything(records, key_id="key_1", model="m1",
                                first_day="2026-12-01")) == ["req-2", "req-5"]
    assert ids(await everything(records, endpoint="messages")) == ["req-5"]
    assert ids(await everything(records, endpoint="embeddings")) == []
    assert await records.count(EventQuery(account_id="acct_a", endpoint="chat/completions")) == 4


async def test_pages_cover_every_event_once_in_order_even_at_equal_times(records: Records) -> None:
    # 25 events, several sharing a timestamp: paging must neither skip nor repeat.
    events = [event(n, time=1_764_547_200.0 + n // 4) for n in range(25)]
    await records.add("b1", events[:10], [])
    await records.add("b2", events[10:], [])
    seen: list[str] = []
    query = EventQuery(account_id="acct_a", limit=4)
    pages = 0
    while True:
        page = await records.events(query)
        pages += 1
        assert len(page.events) <= 4
        seen += [e.request_id for e in page.events]
        if not page.next:
            break
        query = EventQuery(account_id="acct_a", limit=4, after=page.next)
    assert seen == [f"req-{n}" for n in range(25)]
    assert pages == 7


async def test_a_page_is_never_larger_than_the_maximum(records: Records) -> None:
    await records.add("b", [event(n) for n in range(3)], [])
    page = await records.events(EventQuery(account_id="acct_a", limit=MAX_PAGE * 10))
    assert len(page.events) == 3
    page = await records.events(EventQuery(account_id="acct_a", limit=0))
    assert len(page.events) == 1 and page.next


async def test_a_cursor_that_is_not_one_is_refused(records: Records) -> None:
    with pytest.raises(ValueError):
        await records.events(EventQuery(account_id="acct_a", after="not-a-cursor"))


async def test_summary_sums_per_day_key_and_model(records: Records) -> None:
    await records.add("b", [event(1), event(2), event(3, key="key_2"),
                            event(4, day="2026-12-02", cost=5), event(9, account="acct_b")], [])
    assert await records.summary("acct_a", "2026-12-01", "2026-12-31") == [
        UsageRow(key_id="key_1", model="m1", day="2026-12-01", requests=2, input_tokens=3,
                 output_tokens=6, cached_input_tokens=1, cost_micros=20),
        UsageRow(key_id="key_2", model="m1", day="2026-12-01", requests=1, input_tokens=3,
                 output_tokens=6, cached_input_tokens=1, cost_micros=10),
        UsageRow(key_id="key_1", model="m1", day="2026-12-02", requests=1, input_tokens=4,
                 output_tokens=8, cached_input_tokens=2, cost_micros=5),
    ]
    assert await records.summary("acct_a", "2026-12-02", "2026-12-02") == [
        UsageRow(key_id="key_1", model="m1", day="2026-12-02", requests=1, input_tokens=4,
                 output_tokens=8, cached_input_tokens=2, cost_micros=5)]


async def test_erasure_deletes_events_and_pseudonymises_the_ledger(records: Records) -> None:
    await records.add("b", [event(1), event(2, day="2026-12-02"), event(3, account="acct_b")],
                      [line(), line(period="2026-12-02"), line("acct_b")])
    assert await records.erase("acct_a", "anon_1") == (2, 2)
    assert await everything(records) == []
    assert await records.billing("acct_a") == []
    kept = await records.billing("anon_1")
    assert [(b.account_id, b.period) for b in kept] == [("anon_1", "2026-12-01"),
                                                        ("anon_1", "2026-12-02")]
    assert [e.request_id for e in (await records.events(EventQuery(account_id="acct_b"))).events] \
        == ["req-3"]
    assert await records.erase("acct_a", "anon_2") == (0, 0)


async def test_retention_drops_days_before_the_cut(records: Records) -> None:
    await records.add("b1", [event(1, day="2026-11-29"), event(2, day="2026-11-30")], [])
    await records.add("b2", [event(3, day="2026-12-01")],
                      [line(period="2026-11-30"), line(period="2026-12-01")])
    assert await records.expire("2026-12-01") == 2
    assert [e.request_id for e in await everything(records)] == ["req-3"]
    assert len(await records.billing("acct_a")) == 2  # the ledger has its own retention
    assert await records.expire("2026-12-01", billing_before="2026-12-01") == 0
    assert [b.period for b in await records.billing("acct_a")] == ["2026-12-01"]
    # A day dropped can be written again (a late event), and dropped again.
    await records.add("b3", [event(4, day="2026-11-30")], [])
    assert len(await everything(records)) == 2
    assert await records.expire("2026-12-01") == 1


async def test_migrating_a_current_schema_changes_nothing(records: Records) -> None:
    assert await records.migrate() == []
    await records.ping()


async def test_newest_first_pages_walk_back_and_first_walks_forward_again(records: Records) -> None:
    await records.add("b", [event(n, time=1_764_547_200.0 + n // 3) for n in range(10)], [])
    newest = EventQuery(account_id="acct_a", newest_first=True, limit=4)
    one = await records.events(newest)
    assert [e.request_id for e in one.events] == ["req-9", "req-8", "req-7", "req-6"]
    two = await records.events(EventQuery(account_id="acct_a", newest_first=True, limit=4,
                                          after=one.next))
    assert [e.request_id for e in two.events] == ["req-5", "req-4", "req-3", "req-2"]
    # Back from page two: the same query oldest first, past page two's first event.
    back = await records.events(EventQuery(account_id="acct_a", limit=4, after=two.first))
    assert [e.request_id for e in back.events] == ["req-6", "req-7", "req-8", "req-9"]
    assert back.next == ""


async def test_count_and_status_ranges_select_the_same_events(records: Records) -> None:
    statuses = [200, 200, 429, 401, 502, 200]
    await records.add("b", [msgspec.structs.replace(event(n), status=s)
                            for n, s in enumerate(statuses)], [])
    client = EventQuery(account_id="acct_a", status_from=400, status_to=500)
    assert [e.status for e in (await records.events(client)).events] == [429, 401]
    assert await records.count(client) == 2
    assert await records.count(EventQuery(account_id="acct_a", after="x", limit=1)) == 6
    assert await records.count(EventQuery(account_id="acct_a", status_from=500)) == 1
    assert await records.count(EventQuery(account_id="acct_b")) == 0


async def test_a_closed_store_says_so_as_a_records_error(records: Records) -> None:
    from lunos_proxy.records import RecordsError

    await records.close()
    with pytest.raises(RecordsError):
        await records.add("b", [event(1)], [])
    await records.close()  # closing twice is harmless


async def test_lines_of_one_account_day_and_model_in_one_batch_are_summed(records: Records) -> None:
    await records.add("b", [], [line(requests=1, cost=10, id="a", created=1.0),
                                line(requests=2, cost=20, id="b", created=2.0)])
    [only] = await records.billing("acct_a")
    assert (only.id, only.requests, only.cost_micros, only.created) == ("a", 3, 30, 1.0)
