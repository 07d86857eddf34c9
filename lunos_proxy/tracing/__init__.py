"""Traces without content: optional OpenTelemetry spans for each request.

Off by default (``tracing: {enabled: false}``); the OpenTelemetry SDK is
not even imported then, and the request path is composed without a single
tracing call (`lunos_proxy.app.Generation` picks the plain pieces).

When on, `spans.Tracing` gives every API request one SERVER span, one
INTERNAL child per plugin (nested as the middlewares are), and one CLIENT
span per upstream attempt under the layer that made it (the router's, or
the last plugin's), exported over OTLP/HTTP by a batch processor on its
own thread. The attributes follow the OpenTelemetry GenAI semantic
conventions (``gen_ai.*``) plus the routing fields (``lunos.*``), and are
chosen from what Lunos itself decided or counted, never from what a client
or provider wrote: see `spans` for the full list and docs/ops.md for
what a span never holds.

Trace context: a client's W3C ``traceparent`` makes the request span its
child, and each attempt sends the provider a ``traceparent`` naming the
attempt span. The client's ``tracestate`` passes to the provider as the
forwarder's allow-list lets it, and is recorded nowhere.
"""

from __future__ import annotations

import asyncio
import importlib
from typing import TYPE_CHECKING

from .settings import TracingConfig

if TYPE_CHECKING:
    from ..config import Config
    from .spans import Tracing

__all__ = ["TracingConfig", "import_tracing", "tracing_for"]

_SPANS = "lunos_proxy.tracing.spans"


def tracing_for(config: Config) -> Tracing | None:
    """The tracing of a generation built from `config`; None when off."""
    if not config.tracing.enabled:
        return None
    from .spans import Tracing

    return Tracing(config.tracing, config)


async def import_tracing(settings: TracingConfig) -> None:
    """Import the SDK and the OTLP exporter in a thread (a few hundred ms,
    once per process) so a reload that turns tracing on does not stall the
    loop building its generation."""
    if settings.enabled:
        await asyncio.to_thread(importlib.import_module, _SPANS)
