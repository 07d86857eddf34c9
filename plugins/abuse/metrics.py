"""The abuse plugin's metrics: rule names and modes, never an address or account.

Made once per process (`Metrics.add`) and kept across reloads. A rule's
refusal series appears with its first refusal.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from lunos_proxy.metrics import Counter, Gauge

__all__ = ["AbuseMetrics"]


class AbuseMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.limits_store_degraded = Gauge(
            "lunos_limits_store_degraded",
            "1 while limits run on the store-failure policy (local limiter or 503).",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.abuse_refusals = Counter(
            "lunos_abuse_refusals",
            "Requests a rule refused; mode=shadow: would have refused, let through.",
            ("rule", "mode"),
            registry=r,
        )
        self.abuse_bans = Counter(
            "lunos_abuse_bans", "Addresses banned for repeated auth failures.", registry=r
        )
        self.abuse_anomalies = Counter(
            "lunos_abuse_anomalies",
            "Accounts flagged for a token rate far above their own baseline.",
            registry=r,
        )
