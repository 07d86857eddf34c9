"""The plugin contract and the registry that finds plugins by name.

A plugin is an ordinary aiohttp middleware (``async (request, handler)``)
with a name and a settings struct. The pipeline in the YAML names plugins
in order; each is found through the ``lunos_proxy.plugins`` entry-point
group, built-ins exactly like third-party ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, cast

import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler

if TYPE_CHECKING:
    from .config import Config
    from .metrics import Metrics
    from .records.base import Records
    from .store.base import Store

__all__ = [
    "ENTRY_POINT_GROUP",
    "Handler",
    "Plugin",
    "PluginError",
    "Services",
    "ViewKey",
    "Views",
    "find_plugin",
]

ENTRY_POINT_GROUP = "lunos_proxy.plugins"
T = TypeVar("T")


class ViewKey(Generic[T]):
    """A typed key into `Views`, like aiohttp's `web.AppKey`:

        ROUTING: ViewKey[RoutingView] = ViewKey("routing")
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<ViewKey {self.name}>"


class Views:
    """Objects plugins publish for the runtime and each other, under typed
    keys (see lunos_proxy/views.py): no lookups by plugin name."""

    __slots__ = ("_items",)

    def __init__(self) -> None:
        self._items: dict[ViewKey[Any], object] = {}

    def __setitem__(self, key: ViewKey[T], value: T) -> None:
        self._items[key] = value

    # Read per request (auth asks for the address guard): no cast() call.
    def __getitem__(self, key: ViewKey[T]) -> T:
        return self._items[key]  # type: ignore[return-value]

    def __contains__(self, key: ViewKey[Any]) -> bool:
        return key in self._items

    def get(self, key: ViewKey[T]) -> T | None:
        return self._items.get(key)  # type: ignore[return-value]

    def setdefault(self, key: ViewKey[T], value: T) -> T:
        return cast(T, self._items.setdefault(key, value))


@dataclass(eq=False)
class Services:
    """What the running proxy lends to every plugin."""

    config: Config
    store: Store
    metrics: Metrics
    # Usage events and the billing ledger (lunos_proxy/records/); None only
    # for a plugin built outside a gateway (a test), which then keeps none.
    records: Records | None = None
    # What plugins publish for the runtime and each other (lunos_proxy/views.py).
    views: Views = field(default_factory=Views)
    # Objects that outlive a config reload (the gateway's lifetime), under
    # keys of the plugin's own: what a plugin learnt at run time and must
    # not forget when the routes change (the router's breakers and latencies).
    lasting: Views = field(default_factory=Views)


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

    What the admin API, the console or other plugins may read of a plugin
    it publishes as a view (`services.views`, see lunos_proxy/views.py);
    its metrics it declares itself and registers with `services.metrics.add`.
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

    @classmethod
    def prepare(cls, settings: Any, config: Config) -> None:
        """Load read-only tables that requests will need, before serving.

        ``lunos-proxy serve --workers N`` calls it once in the parent,
        before it forks, so that the workers share the pages instead of
        each loading a copy on a request. No event loop runs yet."""
        return None

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
