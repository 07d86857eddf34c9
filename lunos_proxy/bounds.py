"""Bounded number types for config structs (the YAML and every plugin's settings).

An operator's number is checked as strictly as a client's: a negative limit
or an infinite timeout is refused by `lunos-proxy check` and by a reload,
naming the file and the path, instead of failing every request later. Use
these on struct fields; msgspec enforces them while converting, e.g.
``pipeline[2].settings.plans.free.key.requests_per_minute: expected int >= 0``.

NaN fails every comparison, and the upper bounds keep infinity out, so a
float that passes is finite.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

__all__ = [
    "MAX_SECONDS",
    "Amount",
    "AtLeastOne",
    "Count",
    "Fraction",
    "Port",
    "PositiveNumber",
    "Seconds",
    "SecondsOrZero",
    "Share",
]

# About 31 years: longer than anything a timeout, TTL or retention means.
MAX_SECONDS = 1e9

# A limit or size where 0 means "none allowed".
Count = Annotated[int, msgspec.Meta(ge=0)]
# A count where 0 would stop everything (attempts, connections, cache entries).
AtLeastOne = Annotated[int, msgspec.Meta(ge=1)]
# A duration that must pass (timeouts, windows, intervals).
Seconds = Annotated[float, msgspec.Meta(gt=0, le=MAX_SECONDS)]
# A duration where 0 means "not at all" (a grace period, a cache of none).
SecondsOrZero = Annotated[float, msgspec.Meta(ge=0, le=MAX_SECONDS)]
# A share of something: 0 to 1.
Fraction = Annotated[float, msgspec.Meta(ge=0, le=1)]
# A share that must be more than nothing: above 0, up to 1.
Share = Annotated[float, msgspec.Meta(gt=0, le=1)]
# A price or amount of money.
Amount = Annotated[float, msgspec.Meta(ge=0, le=1e12)]
# A positive finite factor or ratio (weights, multipliers, bytes per token).
PositiveNumber = Annotated[float, msgspec.Meta(gt=0, le=1e12)]
# A TCP port; 0 lets the system pick one.
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
