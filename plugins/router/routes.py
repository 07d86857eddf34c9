"""Routes built from one config: for each public model its candidates,
strategy and fallbacks, and the access rules that narrow them per caller.

Built once per config generation, so a request does no config lookups:
candidates are pre-split by the client's wire format, and only a caller
with region or provider restrictions costs a filtering pass.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

from lunos_proxy.config import Timeouts
from lunos_proxy.model_checks import model_wires

from .state import Candidate, Registry
from .strategies import Strategy, make_strategy

if TYPE_CHECKING:
    from lunos_proxy.config import Config, Deployment, ProviderConfig
    from lunos_proxy.exchange import Principal
    from lunos_proxy.views import PriceBook

__all__ = [
    "Route",
    "build_routes",
    "candidates_for",
    "qualifies",
]


class Route:
    __slots__ = (
        "by_wire",
        "candidates",
        "capped",
        "fallbacks",
        "first_tier",
        "public",
        "strategy",
        "tiered",
    )

    def __init__(
        self,
        public: str,
        candidates: list[Candidate],
        strategy: Strategy,
        wires: frozenset[str],
    ) -> None:
        self.public = public
        self.candidates = candidates
        self.strategy = strategy
        self.fallbacks: list[str] = []  # public names, transitive, in order
        self.by_wire = {wire: candidates for wire in wires}
        self.tiered = len({c.priority for c in candidates}) > 1
        # The pool while nothing is impaired: the best tier as listed.
        top = min((c.priority for c in candidates), default=0)
        self.first_tier = [c for c in candidates if c.priority == top]
        self.capped = any(c.max_concurrent is not None for c in candidates)


def qualifies(c: Candidate, principal: Principal | None) -> bool:
    """Data residency and provider rules: a deployment with no region never
    qualifies for an account restricted to some regions."""
    if principal is None:
        return True
    regions, providers = principal.allowed_regions, principal.allowed_providers
    if regions is not None and c.region not in regions:
        return False
    return providers is None or c.provider in providers


def _timeouts(d: Deployment, p: ProviderConfig) -> Timeouts:
    own = d.timeouts
    if own is None:
        return p.timeouts
    base = p.timeouts
    return Timeouts(
        connect=own.connect or base.connect,
        first_byte=own.first_byte or base.first_byte,
        idle=own.idle or base.idle,
    )


def build_routes(
    config: Config,
    registry: Registry,
    rng: random.Random,
    explore: float,
    prices: PriceBook | None = None,
) -> tuple[dict[str, Route], dict[str, str]]:
    """Routes by public name, and every name clients may send -> public name."""
    routes: dict[str, Route] = {}
    names: dict[str, str] = {}
    for public, m in config.models.items():
        candidates = []
        for i, d in enumerate(m.deployments):
            p = config.providers[d.provider]
            price = prices.price_per_million(d.provider, d.model) if prices else None
            candidates.append(
                Candidate(
                    i,
                    d,
                    d.region or p.region,
                    _timeouts(d, p),
                    d.price if price is None else price,
                    registry.state(d.id),
                )
            )
        strategy = make_strategy(m.strategy, rng, explore)
        routes[public] = Route(public, candidates, strategy, model_wires(config, m))
        names.setdefault(public, public)
        for alias in m.aliases:
            names.setdefault(alias, public)
    for public, route in routes.items():
        route.fallbacks = _chain(config, names, public)
    return routes, names


def _chain(config: Config, names: dict[str, str], public: str) -> list[str]:
    """Fallbacks of `public`, then theirs, depth first, each once."""
    out: list[str] = []

    def walk(model: str) -> None:
        for name in config.models[model].fallbacks:
            target = names.get(name)
            if target is not None and target != public and target not in out:
                out.append(target)
                walk(target)

    walk(public)
    return out


def candidates_for(route: Route, wire: str, principal: Principal | None) -> Sequence[Candidate]:
    found = route.by_wire.get(wire, ())
    if principal is None or (
        principal.allowed_regions is None and principal.allowed_providers is None
    ):
        return found
    return [c for c in found if qualifies(c, principal)]
