from __future__ import annotations

from plugins.abuse.anomaly import AnomalyDetector, AnomalyRules


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def detector(clock: Clock, **rules: float) -> AnomalyDetector:
    defaults = {"factor": 5.0, "min_tokens_per_minute": 1000, "alpha": 0.5, "warmup_minutes": 3}
    return AnomalyDetector(AnomalyRules(**{**defaults, **rules}), clock)  # type: ignore[arg-type]


def test_steady_usage_is_never_flagged() -> None:
    clock = Clock()
    d = detector(clock)
    for _ in range(30):
        assert not d.observe("a", 2000)
        clock.now += 60
    assert not d.flagged("a")


def test_a_jump_far_above_the_baseline_is_flagged_once_then_expires() -> None:
    clock = Clock()
    d = detector(clock, flag_minutes=2)
    for _ in range(5):
        d.observe("a", 500)
        clock.now += 60
    assert not d.observe("a", 2000)  # 4x the baseline of 500: not yet
    assert d.observe("a", 1000)  # 3000 > 5 x 500
    assert d.flagged("a") and not d.flagged("b")
    assert not d.observe("a", 5000)  # already flagged: reported once
    clock.now += 121
    assert not d.flagged("a")


def test_no_flag_during_warmup_or_below_the_minimum() -> None:
    clock = Clock()
    d = detector(clock)
    assert not d.observe("new", 50_000)  # no history yet
    small = detector(clock, min_tokens_per_minute=10_000)
    for _ in range(4):
        small.observe("a", 10)
        clock.now += 60
    assert not small.observe("a", 5000)  # 500x the baseline, but a small number


def test_idle_minutes_lower_the_baseline() -> None:
    clock = Clock()
    d = detector(clock)
    for _ in range(4):
        d.observe("a", 1000)
        clock.now += 60
    clock.now += 60 * 10  # ten quiet minutes: the baseline decays toward 0
    assert d.observe("a", 1000)
