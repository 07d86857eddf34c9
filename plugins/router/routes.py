"""Routes built from one config: for each public model its candidates,
strategy and fallbacks, and the access rules that narrow them per caller.

Built once per config generation, so a request does no config lookups:
candidates are pre-split by the client's wire format (`route_key`: the
deployments that serve it as is, and for each endpoint a translation may
serve, every deployment that serves it as is or through a translation),
and only a caller with region or provider restrictions costs a filtering
pass.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

from lunos_proxy.config import Timeouts
from lunos_proxy.providers import ADAPTERS
from lunos_proxy.providers.translate import TRANSLATED_ENDPOINTS
from lunos_proxy.providers.translations import translation_for

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
    "route_key",
]

# The keys of `Route.by_wire`: a client wire format alone for the
# candidates serving it as is, "wire+endpoint" for an endpoint a
# translation may serve (the candidates serving it as is or translated).
ROUTE_KEYS = (
    "openai",
    "anthropic",
    *(f"{wire}+{endpoint}" for wire, ends in TRANSLATED_ENDPOINTS.items() for endpoint in ends),
)


def route_key(wire: str, endpoint: str) -> str:
    """The `Route.by_wire` key for a request."""
    return f"{wire}+{endpoint}" if endpoint in TRANSLATED_ENDPOINTS.get(wire, ()) else wire


def _by_wire(config: Config, candidates: list[Candidate]) -> dict[str, list[Candidate]]:
    out: dict[str, list[Candidate]] = {}
    for key in ROUTE_KEYS:
        wire, _, endpoint = key.partition("+")
        found = []
        for c in candidates:
            adapter = ADAPTERS[config.providers[c.provider].format]
            if wire in adapter.wires or (
                endpoint and translation_for(wire, adapter.speaks, endpoint)
            ):
                found.append(c)
        if found:
            # The same list when every one qualifies: the router's fast path.
            out[key] = candidates if len(found) == len(candidates) else found
    return out


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
        by_wire: dict[str, list[Candidate]],
    ) -> None:
        self.public = public
        self.candidates = candidates
        self.strategy = strategy
        self.fallbacks: list[str] = []  # public names, transitive, in order
        self.by_wire = by_wire  # see route_key
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
        routes[public] = Route(public, candidates, strategy, _by_wire(config, candidates))
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
