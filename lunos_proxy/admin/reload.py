"""POST /admin/reload: reload the config file, as SIGHUP does.

    200 {"result": "applied", "providers": 2, "models": 5}
    422 {"result": "rejected", "problems": ["lunos.yaml: models.x.fallbacks[0]: unknown model 'y'"]}

A rejected file changes nothing; the running config stays in force.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from .auth import requires

if TYPE_CHECKING:
    from ..app import Gateway


def setup(app: web.Application, gateway: Gateway) -> None:
    @requires("operator", "config.reload")
    async def reload(request: web.Request) -> web.Response:
        result = await gateway.reload()
        if not result.applied:
            return web.json_response(
                {"result": "rejected", "problems": result.problems}, status=422
            )
        config = gateway.config
        return web.json_response(
            {"result": "applied", "providers": len(config.providers), "models": len(config.models)}
        )

    app.router.add_post("/admin/reload", reload)
