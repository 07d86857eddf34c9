"""The `router` plugin: which deployment serves a request, with the parts only it uses.

    plugin.py      the middleware (`Router`): pick, forward, retry, fall back
    routes.py      per-config routes: candidates, strategy, fallbacks, access rules
    strategies.py  how one deployment is picked (the `Strategy` protocol)
    breaker.py     the circuit breaker per deployment
    state.py       live state that outlives reloads: in-flight, latency, cooldowns

The checks of the `models` section the router relies on (deployment names,
fallbacks, one wire format per model) run whenever a config is loaded,
router or not: they are the runtime's, in lunos_proxy/model_checks.py.
"""

from .plugin import Router

__all__ = ["Router"]
