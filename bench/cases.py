"""The benchmark cases: each is a name, whether it streams, and Lunos's config.

Add a case with the decorator; the function gets the fake provider's base
URL and the run's scratch directory and returns the Lunos config as a dict
(written out as YAML). Start from `lunos_config`, the one place that knows
the config schema:

    @case("router 50 deployments", stream=False, about="50 weighted deployments")
    def router_50(upstream: str, scratch: Path) -> dict[str, Any]:
        cfg = lunos_config(upstream, scratch)
        cfg["models"]["bench-model"]["deployments"] = [
            {"provider": "fake", "model": "bench-model", "weight": 1} for _ in range(50)
        ]
        return cfg

Every case is measured against the same three targets (the fake provider
directly, the floor, Lunos), so its Lunos/floor ratio compares like with like.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ConfigFactory = Callable[[str, Path], dict[str, Any]]

MODEL = "bench-model"


@dataclass(frozen=True)
class Case:
    name: str
    stream: bool
    lunos_config: ConfigFactory
    about: str


CASES: dict[str, Case] = {}


def case(name: str, *, stream: bool, about: str) -> Callable[[ConfigFactory], ConfigFactory]:
    def register(factory: ConfigFactory) -> ConfigFactory:
        if name in CASES:
            raise ValueError(f"benchmark case {name!r} is defined twice")
        CASES[name] = Case(name, stream, factory, about)
        return factory

    return register


def lunos_config(
    upstream: str, scratch: Path, pipeline: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A Lunos config with one fake OpenAI provider serving `bench-model`."""
    return {
        "store": {"url": f"memory://{scratch.resolve()}/lunos-store.json"},
        "providers": {
            "fake": {"format": "openai", "base_url": f"{upstream}/v1", "api_key": "sk-fake"}
        },
        "models": {MODEL: {"deployments": [{"provider": "fake", "model": MODEL}]}},
        "pipeline": pipeline if pipeline is not None else [{"name": "request_id"}],
    }


@case("plain", stream=False, about="request_id plugin only; small JSON completion")
def plain(upstream: str, scratch: Path) -> dict[str, Any]:
    return lunos_config(upstream, scratch)


@case("stream", stream=True, about="request_id plugin only; SSE stream of 8 events")
def stream(upstream: str, scratch: Path) -> dict[str, Any]:
    return lunos_config(upstream, scratch)
