"""Rate-limit headers in the style each SDK knows.

OpenAI (`/v1/chat/completions` and the rest): `x-ratelimit-limit-requests`,
`x-ratelimit-remaining-requests`, `x-ratelimit-reset-requests` (a duration
like "6m0s"), and the `-tokens` equivalents. Anthropic (`/v1/messages`):
`anthropic-ratelimit-requests-limit`, `-remaining`, `-reset` (an RFC 3339
instant), and the `tokens` equivalents. Of several limits of a kind, the
one closest to running out is reported.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from lunos_proxy.store import Limit, LimitState

__all__ = ["Headers", "go_duration", "rate_limit_headers"]


def go_duration(seconds: float) -> str:
    if seconds < 1:
        ms = round(seconds * 1000)
        return _MILLISECONDS[ms] if ms >= 0 else f"{ms}ms"
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


def _enforced(limits: Sequence[Limit], kinds: Sequence[str]) -> tuple[tuple[int, ...], ...]:
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
) -> None:
    Headers(limits, kinds).write(wire, states, into)


class Headers:
    """`rate_limit_headers` for limits known before their states (a Shape's):
    which limits can be reported for each kind, and their limits as text,
    worked out once."""

    __slots__ = ("_kinds",)

    def __init__(self, limits: Sequence[Limit], kinds: Sequence[str]) -> None:
        # Per kind that has enforced limits: its header names for each wire,
        # then (position, limit, limit as text) per limit.
        self._kinds = tuple(
            (_OPENAI[kind], _ANTHROPIC[kind],
             tuple((i, limits[i].limit, str(limits[i].limit)) for i in found))
            for kind, found in zip(_KINDS, _enforced(limits, kinds), strict=True)
            if found
        )

    def write(self, wire: str, states: Sequence[LimitState], into: dict[str, str]) -> None:
        anthropic = wire == "anthropic"
        for openai, anthropic_names, found in self._kinds:
            if len(found) == 1:
                best, _, limit = found[0]
                st = states[best]
            else:  # the first with the lowest share remaining
                least = math.inf
                for i, most, text in found:
                    state = states[i]
                    ratio = state.remaining / most if most else 0.0
                    if ratio < least:
                        st, limit, least = state, text, ratio
            limit_name, remaining_name, reset_name = anthropic_names if anthropic else openai
            into[limit_name] = limit
            into[remaining_name] = str(st.remaining)
            reset = st.reset
            if anthropic:
                into[reset_name] = _instant(reset)
            elif 0 <= reset < 1:  # go_duration's usual case, without its call
                into[reset_name] = _MILLISECONDS[round(reset * 1000)]
            else:
                into[reset_name] = go_duration(reset)


_KINDS = ("requests", "tokens")
# Resets under a second, the usual ones, written once.
_MILLISECONDS = tuple(f"{ms}ms" for ms in range(1001))
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
