"""`UsageCounts`: the five counters of a usage row, shared by the memory
store, the meter's ledger and the records writer."""

from __future__ import annotations

import msgspec

from lunos_proxy.store import UsageCounts, UsageDelta, UsageEvent, UsageRow
from lunos_proxy.store.memory.file import UsageEntry


def _event(input_tokens: int, output_tokens: int, cached: int, cost: int) -> UsageEvent:
    return UsageEvent(request_id="r", account_id="a-1", key_id="k-1", model="m", time=0.0,
                      day="2025-03-01", input_tokens=input_tokens, output_tokens=output_tokens,
                      cached_input_tokens=cached, cost_micros=cost)


def test_adding_counts_one_request_each_unless_a_batch_says_how_many() -> None:
    counts = UsageCounts()
    counts.add(_event(10, 5, 2, 700))
    counts.add(_event(1, 1, 0, 30))
    batch = UsageDelta(account_id="a-1", key_id="k-1", model="m", day="2025-03-01",
                       requests=4, input_tokens=100, output_tokens=50, cached_input_tokens=8,
                       cost_micros=9000)
    counts.add(batch, batch.requests)
    assert counts == UsageCounts(requests=6, input_tokens=111, output_tokens=56,
                                 cached_input_tokens=10, cost_micros=9730)


def test_counts_become_a_delta_and_a_row_with_every_counter() -> None:
    counts = UsageCounts(3, 30, 20, 10, 555)
    assert counts.delta("a-1", "k-1", "m", "2025-03-01") == UsageDelta(
        account_id="a-1", key_id="k-1", model="m", day="2025-03-01", requests=3,
        input_tokens=30, output_tokens=20, cached_input_tokens=10, cost_micros=555,
    )
    assert counts.row("k-1", "m", "2025-03-01") == UsageRow(
        key_id="k-1", model="m", day="2025-03-01", requests=3, input_tokens=30,
        output_tokens=20, cached_input_tokens=10, cost_micros=555,
    )


def test_the_data_file_keeps_a_row_as_the_array_it_always_was() -> None:
    entry = UsageEntry(account_id="a-1", day="2025-03-01", key_id="k-1", model="m",
                       counters=UsageCounts(3, 30, 20, 10, 555))
    written = b'["a-1","2025-03-01","k-1","m",[3,30,20,10,555]]'
    assert msgspec.json.encode(entry) == written
    assert msgspec.json.decode(written, type=UsageEntry) == entry
