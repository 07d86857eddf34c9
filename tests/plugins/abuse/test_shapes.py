"""Shapes: the limits of one kind of request, built once and reused."""

from __future__ import annotations

from lunos_proxy.store import Limit, LimitSet, LimitState
from plugins.abuse.plans import ScopeLimits, Shape

SCOPE = ScopeLimits(requests_per_minute=60, tokens_per_minute=10_000, concurrent=2,
                    concurrent_streams=1)


def test_limits_cost_one_request_and_the_reservation_in_tokens() -> None:
    shape = Shape([("k:key_1:", SCOPE, True), ("a:", SCOPE, False)], ttl=30)
    limits = shape.limits(700)
    assert isinstance(limits, LimitSet) and limits.family is shape
    assert list(limits) == [
        Limit("k:key_1:rpm", 60, 60.0, 1), Limit("k:key_1:tpm", 10_000, 60.0, 700),
        Limit("a:rpm", 60, 60.0, 1), Limit("a:tpm", 10_000, 60.0, 700),
    ]
    assert shape.kinds == ("requests", "tokens", "requests", "tokens")
    assert [s.key for s in shape.slots] == ["k:key_1:conc", "k:key_1:streams", "a:conc"]
    assert not shape.shadowed


def test_a_repeated_reservation_reuses_the_limits_and_another_rebuilds_only_tokens() -> None:
    shape = Shape([("a:", SCOPE, False)], ttl=30)
    first = shape.limits(700)
    assert shape.limits(700) is first
    other = shape.limits(50)
    assert other is not first and other.family is first.family
    assert other[0] is first[0]  # the request limit is the same object
    assert other[1] == Limit("a:tpm", 10_000, 60.0, 50)


def test_settlement_charges_the_difference_to_token_limits_that_took_the_reservation() -> None:
    shadow = ScopeLimits(tokens_per_minute=5, shadow=True)
    shape = Shape([("a:", SCOPE, False), ("a:safe:", shadow, False)], ttl=30)
    assert shape.shadowed
    charge = shape.charge("acct:a", 700)
    states = [LimitState(0, 0.0, True), LimitState(0, 0.0, True), LimitState(0, 0.0, False)]
    assert charge.settlement(250, states) == [Limit("a:tpm", 10_000, 60.0, -450)]
    assert charge.settlement(700, states) == []
