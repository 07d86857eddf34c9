"""The admin listener: /metrics and the admin API.

Each concern of the admin API is one module of this package with a
``setup(app: web.Application, gateway: Gateway) -> None`` function that adds
its routes (under ``/admin/``) and middlewares; modules are found by
listing the package, so adding a concern is adding a file. The listener
binds 127.0.0.1 by default; /metrics is open to whoever reaches it (a
Prometheus scraper), everything under /admin/ is for authenticated
operators.
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
