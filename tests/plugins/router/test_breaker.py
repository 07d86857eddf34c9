"""The circuit breaker on a fake clock: exact transitions."""

from __future__ import annotations

from plugins.router.breaker import Breaker, BreakerSettings, BreakerState

SETTINGS = BreakerSettings(window_seconds=10, failure_rate=0.5, min_requests=4, open_seconds=5, probes=2)


def test_stays_closed_below_the_minimum_number_of_requests() -> None:
    b = Breaker(SETTINGS)
    for t in range(3):
        b.record(float(t), ok=False)
    assert b.state is BreakerState.CLOSED


def test_opens_when_the_failure_rate_reaches_the_threshold() -> None:
    b = Breaker(SETTINGS)
    b.record(1.0, ok=True)
    b.record(1.0, ok=True)
    b.record(1.0, ok=False)
    assert b.state is BreakerState.CLOSED
    b.record(1.0, ok=False)  # 2 of 4
    assert b.state is BreakerState.OPEN
    assert not b.available(5.9)
    assert b.available(6.0)


def test_old_failures_leave_the_window() -> None:
    b = Breaker(SETTINGS)
    for _ in range(3):
        b.record(0.0, ok=False)
    assert b.counts(5.0) == (3, 3)
    assert b.counts(10.5) == (0, 0)
    b.record(10.5, ok=False)
    assert b.state is BreakerState.CLOSED


def test_half_open_admits_a_limited_number_of_probes() -> None:
    b = Breaker(SETTINGS)
    for _ in range(4):
        b.record(0.0, ok=False)
    assert b.begin(5.0) is True and b.state is BreakerState.HALF_OPEN
    assert b.available(5.0)
    assert b.begin(5.0) is True
    assert not b.available(5.0)  # two probes out
    b.release(True)  # one caller went away
    assert b.available(5.0)


def test_probe_success_closes_and_probe_failure_reopens() -> None:
    b = Breaker(SETTINGS)
    for _ in range(4):
        b.record(0.0, ok=False)
    probe = b.begin(5.0)
    b.record(5.1, ok=False, probe=probe)
    assert b.state is BreakerState.OPEN and b.opened_until == 10.1
    probe = b.begin(10.1)
    b.record(10.2, ok=True, probe=probe)
    assert b.state is BreakerState.CLOSED
    assert b.counts(10.2) == (0, 0)
