"""Metric definitions and the /metrics handler.

Labels are bounded by config: model and provider names, status class,
error type from a fixed taxonomy. Never an account, key or address.
Buckets follow the OpenTelemetry GenAI conventions (durations to ~80 s,
time to first token from 1 ms).
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

DURATION_BUCKETS = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
)
TTFT_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)


class Metrics:
    """Every metric the proxy exports, on one registry per process."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "lunos_requests",
            "Requests answered, by public model, provider, status class and error type.",
            ("model", "provider", "status_class", "error_type"),
            registry=r,
        )
        self.request_duration = Histogram(
            "lunos_request_duration_seconds",
            "Time from receiving a request to its last byte.",
            ("model", "provider"),
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.time_to_first_byte = Histogram(
            "lunos_upstream_time_to_first_byte_seconds",
            "Time from sending to the provider to its first byte.",
            ("model", "provider"),
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.overhead = Histogram(
            "lunos_gateway_overhead_seconds",
            "Time spent in the gateway: total minus time waiting on the provider.",
            (),
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("lunos_requests_in_flight", "Requests being served now.", registry=r)
        self.config_reloads = Counter(
            "lunos_config_reloads", "Config reloads, by result.", ("result",), registry=r
        )
        self.store_up = Gauge(
            "lunos_store_up", "1 while the state store answers, 0 while it does not.", registry=r
        )

    def status_class(self, status: int) -> str:
        return f"{status // 100}xx" if status else "none"

    async def handle(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
