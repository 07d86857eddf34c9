"""POST /admin/reload (scope: operator): reload the config file, as SIGHUP does.

    200 {"result": "applied", "providers": 2, "models": 5}
    422 {"result": "rejected", "problems": ["lunos.yaml: models.x.fallbacks[0]: unknown model 'y'"]}

A rejected file changes nothing; the running config stays in force.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from .auth import GATEWAY, requires, send

if TYPE_CHECKING:
    from ..host import Host


@requires("operator", "config.reload")
async def reload(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    result = await gateway.reload()
    if not result.applied:
        return send({"result": "rejected", "problems": result.problems}, 422)
    config = gateway.config
    return send(
        {"result": "applied", "providers": len(config.providers), "models": len(config.models)}
    )


def setup(app: web.Application, gateway: Host) -> None:
    app.router.add_post("/admin/reload", reload)
