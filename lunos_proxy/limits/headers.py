"""Rate-limit headers in the style each SDK knows.

OpenAI (`/v1/chat/completions` and the rest): `x-ratelimit-limit-requests`,
`x-ratelimit-remaining-requests`, `x-ratelimit-reset-requests` (a duration
like "6m0s"), and the `-tokens` equivalents. Anthropic (`/v1/messages`):
`anthropic-ratelimit-requests-limit`, `-remaining`, `-reset` (an RFC 3339
instant), and the `tokens` equivalents. Of several limits of a kind, the
one closest to running out is reported.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime

from ..store import Limit, LimitState

__all__ = ["enforced", "go_duration", "rate_limit_headers"]


def go_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    secs = f"{s:.3f}".rstrip("0").rstrip(".") + "s"
    if h:
        return f"{int(h)}h{int(m)}m{secs}"
    if m:
        return f"{int(m)}m{secs}"
    return secs


def _instant(seconds: float) -> str:
    return datetime.fromtimestamp(time.time() + seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def enforced(limits: Sequence[Limit], kinds: Sequence[str]) -> tuple[tuple[int, ...], ...]:
    """Positions of the enforced (not shadow) limits of each kind: requests, tokens."""
    return tuple(
        tuple(i for i, (lim, k) in enumerate(zip(limits, kinds, strict=True))
              if k == kind and not lim.shadow)
        for kind in _KINDS
    )


def rate_limit_headers(
    wire: str,
    limits: Sequence[Limit],
    kinds: Sequence[str],
    states: Sequence[LimitState],
    into: dict[str, str],
    positions: tuple[tuple[int, ...], ...] | None = None,
) -> None:
    """`positions`: `enforced(limits, kinds)`, when the caller keeps it."""
    for kind, found in zip(_KINDS, positions or enforced(limits, kinds), strict=True):
        if not found:
            continue
        # The first with the lowest share remaining.
        best, least = found[0], 2.0
        for i in found:
            most = limits[i].limit
            ratio = states[i].remaining / most if most else 0.0
            if ratio < least:
                best, least = i, ratio
        lim, st = limits[best], states[best]
        if wire == "anthropic":
            into[f"anthropic-ratelimit-{kind}-limit"] = str(lim.limit)
            into[f"anthropic-ratelimit-{kind}-remaining"] = str(st.remaining)
            into[f"anthropic-ratelimit-{kind}-reset"] = _instant(st.reset)
        else:
            into[f"x-ratelimit-limit-{kind}"] = str(lim.limit)
            into[f"x-ratelimit-remaining-{kind}"] = str(st.remaining)
            into[f"x-ratelimit-reset-{kind}"] = go_duration(st.reset)


_KINDS = ("requests", "tokens")
