"""Routing: which deployment serves a request (used by plugins/router.py).

    checks.py      route checks run when a config is loaded
    routes.py      per-config routes: candidates, strategy, fallbacks, access rules
    strategies.py  how one deployment is picked (the `Strategy` protocol)
    breaker.py     the circuit breaker per deployment
    state.py       live state that outlives reloads: in-flight, latency, cooldowns
"""
