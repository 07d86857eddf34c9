"""GET /admin/routing (scope: read): each deployment's breaker, cooldown,
in-flight count and latency.

    {"router": true,
     "deployments": [{"deployment": "openai-eu/gpt-4o", "breaker": "open",
                      "breaker_open_seconds_left": 12.5, "window_requests": 0,
                      "window_failures": 0, "cooldown_seconds_left": 0.0,
                      "in_flight": 0, "latency_ms": 412.0}]}

Deployments appear once the router has been built with them. Without the
router in the pipeline (it publishes `lunos_proxy.views.ROUTING`) the answer
says so: ``{"router": false, "deployments": []}``. Ids and numbers only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from ..views import ROUTING
from .auth import GATEWAY, requires, send

if TYPE_CHECKING:
    from ..host import Host


@requires("read", "routing.show")
async def routing(request: web.Request) -> web.Response:
    view = request.app[GATEWAY].views.get(ROUTING)
    deployments = [] if view is None else view.snapshot()
    return send({"router": view is not None, "deployments": deployments})


def setup(app: web.Application, gateway: Host) -> None:
    app.router.add_get("/admin/routing", routing)
