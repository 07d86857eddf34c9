"""Build the console's aiohttp app, mounted by the gateway under /console."""

from __future__ import annotations

from importlib.resources import files
from typing import TYPE_CHECKING

import structlog
from aiohttp import web
from aiohttp_session import session_middleware

from ..crypto import load_secrets
from . import budgets, email_change, keys, privacy, requests, signin, usage
from .guard import guard
from .pages import GATEWAY, public
from .session import RedisSessions, session_storage

if TYPE_CHECKING:
    from ..app import Gateway

__all__ = ["console_app"]

log = structlog.get_logger("lunos.console")

_STATIC = {"console.css": "text/css", "console.js": "text/javascript"}


@public
async def home(request: web.Request) -> web.Response:
    raise web.HTTPSeeOther("/console/usage")


@public
async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    kind = _STATIC.get(name)
    if kind is None:
        raise web.HTTPNotFound()
    body = files("lunos_proxy.console").joinpath("static", name).read_bytes()
    return web.Response(body=body, content_type=kind)


def console_app(gateway: Gateway) -> web.Application:
    config = gateway.config
    storage = session_storage(config, load_secrets(config.secrets))
    app = web.Application(middlewares=[session_middleware(storage), guard])
    app[GATEWAY] = gateway
    app.router.add_get("/", home)
    app.router.add_get("/static/{name}", static)
    for module in (signin, usage, requests, keys, budgets, privacy, email_change):
        module.routes(app)

    async def announce(app: web.Application) -> None:
        if config.console.delivery == "log":
            log.warning("console_development_delivery",
                        detail="console sign-in links are written to this log (delivery: log)")

    async def close(app: web.Application) -> None:
        if isinstance(storage, RedisSessions):
            await storage.close()

    app.on_startup.append(announce)
    app.on_cleanup.append(close)
    return app
