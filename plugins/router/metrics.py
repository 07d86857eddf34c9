"""The router's metrics; `deployment` is a config-given id, never a client's.

Made once per process (`Metrics.add`) and kept across reloads; `prepare`
makes a config's series at 0 when the router starts on it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from lunos_proxy.metrics import TTFT_BUCKETS, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from lunos_proxy.config import Config

__all__ = ["ATTEMPT_OUTCOMES", "SKIP_REASONS", "RouterMetrics"]

ATTEMPT_OUTCOMES = (
    "ok", "unreachable", "timeout", "rate_limited", "server_error", "client_error", "stream_broken",
)  # fmt: skip
SKIP_REASONS = ("cooldown", "breaker", "capacity")


class RouterMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.breaker_open = Gauge(
            "lunos_breaker_open",
            "1 while a deployment's circuit breaker is open, else 0 (set by the router).",
            ("model", "deployment", "provider"),
            registry=r,
            multiprocess_mode="livemax",
        )
        self.deployment_attempts = Counter(
            "lunos_deployment_attempts",
            "Upstream attempts per deployment, by outcome (ok, unreachable, timeout, "
            "rate_limited, server_error, client_error, stream_broken).",
            ("model", "deployment", "outcome"),
            registry=r,
        )
        self.deployment_ttfb = Histogram(
            "lunos_deployment_time_to_first_byte_seconds",
            "Time from sending to a deployment to its first byte.",
            ("deployment",),
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.route_retries = Counter(
            "lunos_route_retries",
            "Attempts after a request's first, by public model.",
            ("model",),
            registry=r,
        )
        self.route_fallbacks = Counter(
            "lunos_route_fallbacks",
            "Requests that moved on to a fallback model, by model and fallback.",
            ("model", "fallback"),
            registry=r,
        )
        self.route_skips = Counter(
            "lunos_route_skips",
            "Deployments passed over, by reason (cooldown, breaker, capacity).",
            ("deployment", "reason"),
            registry=r,
        )

    def prepare(self, config: Config, multiprocess: bool) -> None:
        """Make, at 0, per deployment its breaker, attempt and skip series. A
        breaker open across a reload stays open; breaker series of
        deployments `config` no longer has are dropped, so one left at 0
        cannot hide that every deployment of a model is down."""
        breakers: set[tuple[str, str, str]] = set()
        for public, model in config.models.items():
            self.route_retries.labels(public)
            for fallback in model.fallbacks:
                self.route_fallbacks.labels(public, fallback)
            for d in model.deployments:
                breakers.add((public, d.id, d.provider))
                self.breaker_open.labels(public, d.id, d.provider)
                self.deployment_ttfb.labels(d.id)
                for outcome in ATTEMPT_OUTCOMES:
                    self.deployment_attempts.labels(public, d.id, outcome)
                for reason in SKIP_REASONS:
                    self.route_skips.labels(d.id, reason)
        if not multiprocess:
            # (Several workers: a worker's value stays in its file until the
            # set restarts; prometheus_client cannot drop one there.)
            for labels in set(self.breaker_open._metrics) - breakers:
                self.breaker_open.remove(*labels)
