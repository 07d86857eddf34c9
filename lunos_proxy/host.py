"""What the admin API and the console read of the running gateway.

`app.Gateway` is the one implementation; the admin and console packages
depend on this protocol instead of on app.py, which builds them (so no
import circle). A plugin's own state is reached only through the views it
publishes (lunos_proxy/views.py), never through the gateway's internals.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .config import Config
    from .metrics import Metrics
    from .plugin import Views
    from .records import Records
    from .reload import ReloadResult
    from .store.base import Store

__all__ = ["Host"]


class Host(Protocol):
    config: Config  # the running config (swapped on reload)
    store: Store
    records: Records  # usage events and the billing ledger
    metrics: Metrics

    @property
    def views(self) -> Views:
        """What the current generation's plugins publish (empty before start)."""

    async def reload(self, path: str | None = None) -> ReloadResult:
        """Load, validate and swap in the config file; on any problem keep the old one."""
