"""Checks of the models section that need the whole routing graph; run by
`lunos_proxy.loading.load_config` (so by `lunos-proxy check` and every reload)
whether or not the router is in the pipeline.

The basic ones (unknown provider, empty deployment list, weight <= 0,
duplicate aliases) sit with the rest of the schema checks in config.py;
these are the ones that need the whole routing graph: deployment names,
capacity and timeouts, fallbacks (unknown or cyclic), and wire formats: a
model may mix deployments of any formats, and fall back to a model of
another format, wherever a translation joins them (providers/translate.py);
a combination without one is refused.
Each problem is a ``where: what`` line; the loader prefixes the file name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .config import positive

if TYPE_CHECKING:
    from .config import Config, ModelConfig

__all__ = ["check_routes", "model_wires", "served_wires"]


def model_wires(cfg: Config, model: ModelConfig) -> frozenset[str]:
    """The client wire formats every deployment of `model` serves as is."""
    from .providers import ADAPTERS

    wires: frozenset[str] | None = None
    for d in model.deployments:
        provider = cfg.providers.get(d.provider)
        if provider is None:
            continue
        served = ADAPTERS[provider.format].wires
        wires = served if wires is None else wires & served
    return wires if wires is not None else frozenset()


def served_wires(cfg: Config, model: ModelConfig) -> frozenset[str]:
    """The client wire formats every deployment of `model` serves, as is or
    through a translation of its chat endpoint."""
    from lunos_proxy.providers import ADAPTERS
    from lunos_proxy.providers.translate import TRANSLATED_ENDPOINTS
    from lunos_proxy.providers.translations import translation_for

    wires: frozenset[str] | None = None
    for d in model.deployments:
        provider = cfg.providers.get(d.provider)
        if provider is None:
            continue
        adapter = ADAPTERS[provider.format]
        served = frozenset(
            wire
            for wire, endpoints in TRANSLATED_ENDPOINTS.items()
            if wire in adapter.wires or translation_for(wire, adapter.speaks, endpoints[0])
        )
        wires = served if wires is None else wires & served
    return wires if wires is not None else frozenset()


def _native(cfg: Config, model: ModelConfig) -> frozenset[str]:
    """The client wire formats some deployment of `model` serves as is."""
    from lunos_proxy.providers import ADAPTERS

    out: frozenset[str] = frozenset()
    for d in model.deployments:
        provider = cfg.providers.get(d.provider)
        if provider is not None:
            out |= ADAPTERS[provider.format].wires
    return out


def check_routes(cfg: Config) -> list[str]:
    problems: list[str] = []
    owners: dict[str, tuple[str, str, str]] = {}  # deployment id -> provider, model, public
    for public, m in cfg.models.items():
        where = f"models.{public}"
        seen: set[str] = set()
        for i, d in enumerate(m.deployments):
            at = f"{where}.deployments[{i}]"
            if d.id in seen:
                problems.append(
                    f"{at}: a second deployment named {d.id!r}; give each its own `name`"
                )
            seen.add(d.id)
            owner = owners.setdefault(d.id, (d.provider, d.model, public))
            if owner[:2] != (d.provider, d.model):
                problems.append(
                    f"{at}.name: {d.id!r} already names {owner[0]}/{owner[1]} in {owner[2]!r}"
                )
            problems += _positive(at, d)
        if (
            cfg.providers
            and m.deployments
            and all(d.provider in cfg.providers for d in m.deployments)
        ):
            missing = _native(cfg, m) - served_wires(cfg, m)
            if missing:
                problems.append(
                    f"{where}.deployments: some deployments serve the {_fmt(missing)} format "
                    "and others cannot, even through a translation"
                )
    problems += _check_fallbacks(cfg)
    return problems


def _positive(at: str, d: object) -> list[str]:
    out: list[str] = []
    for group in ("capacity", "timeouts"):
        values = getattr(d, group)
        if values is None:
            continue
        for field in values.__struct_fields__:
            v = getattr(values, field)
            if v is not None and not positive(v):
                out.append(f"{at}.{group}.{field}: must be greater than 0")
    return out


def _check_fallbacks(cfg: Config) -> list[str]:
    problems: list[str] = []
    names = {public: public for public in cfg.models}
    for public, m in cfg.models.items():
        for alias in m.aliases:
            names.setdefault(alias, public)
    graph: dict[str, list[str]] = {}
    for public, m in cfg.models.items():
        graph[public] = []
        mine = _native(cfg, m)
        for i, name in enumerate(m.fallbacks):
            at = f"models.{public}.fallbacks[{i}]"
            target = names.get(name)
            if target is None:
                problems.append(f"{at}: unknown model {name!r}")
                continue
            graph[public].append(target)
            theirs = served_wires(cfg, cfg.models[target])
            if mine and theirs and not mine <= theirs:
                problems.append(
                    f"{at}: {name!r} cannot serve {public!r}'s {_fmt(mine - theirs)} clients, "
                    "not even through a translation"
                )
    for cycle in _cycles(graph):
        problems.append(f"models.{cycle[0]}.fallbacks: fallback cycle {' -> '.join(cycle)}")
    return problems


def _fmt(wires: frozenset[str]) -> str:
    return "/".join(sorted(wires))


def _cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Each cycle once, starting from the model listed first in the file."""
    order = {name: i for i, name in enumerate(graph)}
    found: list[list[str]] = []
    seen_sets: set[frozenset[str]] = set()
    done: set[str] = set()

    def visit(node: str, path: list[str], on_path: set[str]) -> None:
        for nxt in graph.get(node, ()):
            if nxt in on_path:
                cycle = path[path.index(nxt) :]
                key = frozenset(cycle)
                if key not in seen_sets:
                    seen_sets.add(key)
                    start = min(range(len(cycle)), key=lambda i: order[cycle[i]])
                    cycle = cycle[start:] + cycle[:start]
                    found.append([*cycle, cycle[0]])
            elif nxt not in done:
                path.append(nxt)
                on_path.add(nxt)
                visit(nxt, path, on_path)
                on_path.discard(nxt)
                path.pop()
        done.add(node)

    for start in graph:
        if start not in done:
            visit(start, [start], {start})
    return found
