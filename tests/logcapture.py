"""Capture every log line the proxy writes, as the CLI configures logging.

`captured_logs` configures logging exactly like `lunos-proxy serve` but
into a buffer, before the gateway (and its plugins' loggers) are built, and
restores the defaults afterwards. Use it before `make_gateway`.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from lunos_proxy.logs import configure_logging


class Captured:
    def __init__(self) -> None:
        self.buffer = io.StringIO()

    @property
    def text(self) -> str:
        return self.buffer.getvalue()

    def lines(self) -> list[dict[str, Any]]:
        """Every line, parsed; a line that is not one JSON object fails the test."""
        return [json.loads(line) for line in self.text.splitlines() if line.strip()]

    def requests(self) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line.get("event") == "request"]


def _reset() -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_lunos", False):
            root.removeHandler(handler)
    structlog.reset_defaults()


@pytest.fixture(autouse=True)
def fresh_logging() -> Iterator[None]:
    """Logging as configured by one test (e.g. running the CLI in-process,
    bound to that test's captured stdout) does not outlive it."""
    yield
    _reset()


@pytest.fixture
def captured_logs() -> Iterator[Captured]:
    captured = Captured()
    configure_logging("debug", "json", captured.buffer)
    yield captured
    _reset()
