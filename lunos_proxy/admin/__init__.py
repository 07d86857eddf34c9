"""The admin listener: /metrics and the admin API.

Each concern of the admin API is one module of this package with a
``setup(app: web.Application, gateway: Gateway) -> None`` function that adds
its routes (under ``/admin/``) and middlewares; modules are found by
listing the package, so adding a concern is adding a file. The listener
binds 127.0.0.1 by default; /metrics is open to whoever reaches it (a
Prometheus scraper), everything under /admin/ is for authenticated
operators.

Every /admin/ route is closed unless it declares the scope it needs:
decorate its handler with `auth.requires(scope, action)`. Scopes are
``read`` (look), ``operator`` (change accounts and keys, reload, export) and
``full`` (delete accounts, manage admin tokens). The guard in `auth.py`
checks the caller's admin token, refuses a missing scope with 403, and
appends an audit record for every authenticated call; name what the call
acted on with `auth.audit_about` (path parameters ``account_id``, ``key_id``
and ``token_id`` are checked against their id formats, 400 otherwise, and
recorded by themselves; a route needs no other parameter, see
`auth.PATH_IDS`)::

    from aiohttp import web

    from .auth import GATEWAY, audit_about, requires, send

    @requires("read", "usage.show")
    async def show_usage(request: web.Request) -> web.Response:
        gateway = request.app[GATEWAY]
        ...
        return send({"rows": rows})

    def setup(app: web.Application, gateway: Gateway) -> None:
        app.router.add_get("/admin/usage/{account_id}", show_usage)

Errors are raised with `auth.admin_error(status, message)`; JSON bodies are
read with `auth.read_body(request, SomeStruct)`.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from ..app import Gateway

__all__ = ["admin_app"]


def admin_app(gateway: Gateway) -> web.Application:
    app = web.Application()
    app.router.add_get("/metrics", gateway.metrics.handle)
    for module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        setup = getattr(importlib.import_module(f"{__name__}.{module}"), "setup", None)
        if setup is not None:
            setup(app, gateway)
    return app
