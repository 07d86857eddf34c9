"""The plugin contract and the registry that finds plugins by name.

A plugin is an ordinary aiohttp middleware (``async (request, handler)``)
with a name and a settings struct. The pipeline in the YAML names plugins
in order; each is found through the ``lunos_proxy.plugins`` entry-point
group, built-ins exactly like third-party ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler

if TYPE_CHECKING:
    from .config import Config
    from .forward import Forwarder
    from .metrics import Metrics
    from .store.base import Store

__all__ = ["ENTRY_POINT_GROUP", "Handler", "Plugin", "PluginError", "Services", "find_plugin"]

ENTRY_POINT_GROUP = "lunos_proxy.plugins"


@dataclass(eq=False)
class Services:
    """What the running proxy lends to every plugin."""

    config: Config
    store: Store
    metrics: Metrics
    forwarder: Forwarder
    # Objects one plugin offers others (e.g. a key cache), by name.
    shared: dict[str, Any] = field(default_factory=dict)
    # Objects that outlive a config reload (the gateway's lifetime), by
    # plugin name: what a plugin learnt at run time and must not forget
    # when the routes change (the router's breakers and latencies).
    lasting: dict[str, Any] = field(default_factory=dict)


class NoSettings(msgspec.Struct, forbid_unknown_fields=True):
    pass


class Plugin:
    """Base of every plugin; subclass it and implement `__call__`.

    `__call__` is the middleware: do your work on the request's Exchange,
    await `handler(request)` to run the rest of the pipeline and the
    forwarder, then look at the final Exchange. Raise a
    `lunos_proxy.errors.GatewayError` to refuse a request; the client gets
    it in its SDK's error shape. A streamed body is already on its way when
    `handler` returns, so to see it register an `Observer` before calling
    `handler`.

        class Stamp(Plugin):
            name = "stamp"

            class Settings(msgspec.Struct, forbid_unknown_fields=True):
                header: str = "x-stamped"

            async def __call__(self, request, handler):
                exchange_of(request).response_headers[self.settings.header] = "1"
                return await handler(request)

    Register it under the ``lunos_proxy.plugins`` entry-point group
    (``stamp = "my_package.stamp:Stamp"``) and name it in the pipeline.
    `start` and `stop` run once with the app, for connections or tasks.
    """

    name: ClassVar[str] = ""
    Settings: ClassVar[type[msgspec.Struct]] = NoSettings
    # True for a plugin that refuses every request without a valid credential:
    # a public listener forwarding to providers needs one in its pipeline
    # (`lunos_proxy.config.open_relay`).
    authenticates: ClassVar[bool] = False
    # aiohttp treats objects carrying this as new-style middlewares.
    __middleware_version__: ClassVar[int] = 1

    def __init__(self, settings: Any, services: Services) -> None:
        self.settings = settings
        self.services = services

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        return await handler(request)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


class PluginError(Exception):
    """A pipeline entry that cannot be built (unknown name, bad settings)."""


def find_plugin(name: str) -> type[Plugin]:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            cls = ep.load()
            if not (isinstance(cls, type) and issubclass(cls, Plugin)):
                raise PluginError(f"{name}: entry point {ep.value} is not a Plugin subclass")
            return cls
    known = sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})
    raise PluginError(f"unknown plugin {name!r} (installed: {', '.join(known) or 'none'})")
