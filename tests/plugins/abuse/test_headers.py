from __future__ import annotations

import pytest

from lunos_proxy.store import Limit, LimitState
from plugins.abuse.headers import go_duration, rate_limit_headers


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.02, "20ms"), (1, "1s"), (1.5, "1.5s"), (60, "1m0s"), (360, "6m0s"), (3723, "1h2m3s")],
)
def test_reset_durations_read_like_openai_s(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


def test_the_limit_closest_to_running_out_is_reported_and_shadow_ones_never() -> None:
    limits = [Limit("a", 100, 60), Limit("b", 10, 60), Limit("c", 1, 60, shadow=True),
              Limit("t", 1000, 60, cost=50)]
    states = [LimitState(50, 30.0), LimitState(8, 12.0), LimitState(0, 60.0),
              LimitState(950, 3.0)]
    headers: dict[str, str] = {}
    rate_limit_headers("openai", limits, ["requests"] * 3 + ["tokens"], states, headers)
    assert headers == {
        "x-ratelimit-limit-requests": "100",
        "x-ratelimit-remaining-requests": "50",
        "x-ratelimit-reset-requests": "30s",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "950",
        "x-ratelimit-reset-tokens": "3s",
    }
