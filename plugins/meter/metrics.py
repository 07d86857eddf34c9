"""The meter's metrics (tokens and cost are request-level: lunos_proxy/metrics.py).

Made once per process (`Metrics.add`) and kept across reloads; `prepare`
makes a config's series at 0 when the meter starts on it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from lunos_proxy.metrics import Counter, Gauge

if TYPE_CHECKING:
    from lunos_proxy.config import Config

__all__ = ["DROPPED", "MeterMetrics"]

DROPPED = ("events", "shutdown")


class MeterMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.usage_estimated = Counter(
            "lunos_usage_estimated",
            "Responses whose usage was counted by the gateway (the provider reported none).",
            ("model", "provider"),
            registry=r,
        )
        self.meter_unpriced = Counter(
            "lunos_meter_unpriced_requests",
            "Metered requests whose model has no price in force (cost 0).",
            ("model",),
            registry=r,
        )
        self.meter_backlog = Gauge(
            "lunos_meter_backlog",
            "Usage rows and events recorded but not yet written to the store.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.meter_write_failures = Counter(
            "lunos_meter_write_failures", "Failed attempts to write usage (retried).", registry=r
        )
        self.meter_dropped = Counter(
            "lunos_meter_dropped",
            "Usage that could not be kept: events over the backlog bound, rows lost at shutdown.",
            ("what",),
            registry=r,
        )
        self.webhook_failures = Counter(
            "lunos_webhook_failures",
            "Budget notifications given up on after every retry.",
            registry=r,
        )
        for what in DROPPED:
            self.meter_dropped.labels(what)

    def prepare(self, config: Config) -> None:
        """Make, at 0, per public model its unpriced and estimated series."""
        for public, model in config.models.items():
            self.meter_unpriced.labels(public)
            for provider in sorted({d.provider for d in model.deployments}):
                self.usage_estimated.labels(public, provider)
