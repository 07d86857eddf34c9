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

from lunos_proxy.store import Limit, LimitState

__all__ = ["enforced", "go_duration", "rate_limit_headers"]


def go_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    # In whole milliseconds, so 59.9996 s reads "1m0s", never "60s".
    h, ms = divmod(round(seconds * 1000), 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    secs = f"{s}.{ms:03d}".rstrip("0") + "s" if ms else f"{s}s"
    if h:
        return f"{h}h{m}m{secs}"
    if m:
        return f"{m}m{secs}"
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
    anthropic = wire == "anthropic"
    names = _ANTHROPIC if anthropic else _OPENAI
    for kind, found in zip(_KINDS, positions or enforced(limits, kinds), strict=True):
        if not found:
            continue
        best = found[0]
        if len(found) > 1:  # the first with the lowest share remaining
            least = 2.0
            for i in found:
                most = limits[i].limit
                ratio = states[i].remaining / most if most else 0.0
                if ratio < least:
                    best, least = i, ratio
        st = states[best]
        limit_name, remaining_name, reset_name = names[kind]
        into[limit_name] = str(limits[best].limit)
        into[remaining_name] = str(st.remaining)
        into[reset_name] = _instant(st.reset) if anthropic else go_duration(st.reset)


_KINDS = ("requests", "tokens")
_OPENAI = {
    kind: (f"x-ratelimit-limit-{kind}", f"x-ratelimit-remaining-{kind}",
           f"x-ratelimit-reset-{kind}")
    for kind in _KINDS
}
_ANTHROPIC = {
    kind: (f"anthropic-ratelimit-{kind}-limit", f"anthropic-ratelimit-{kind}-remaining",
           f"anthropic-ratelimit-{kind}-reset")
    for kind in _KINDS
}
