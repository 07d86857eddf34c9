"""Hot reload: SIGHUP, `POST /admin/reload`, and an optional watch of the file.

All three end in `Reloader.reload`: the file is read and fully validated,
then a new generation is built and started, and only then swapped in
(`Gateway.swap`); requests in flight finish on the generation they
started with. A file with problems changes nothing: its ``FILE: where:
what`` lines are logged and returned, and `lunos_config_reloads` counts
the result. Reloads run one at a time.

The watch (`server.watch_config_seconds` > 0) polls the file's size and
modification time; polling needs no extra dependency and works on every
filesystem, including the symlink swaps of a Kubernetes ConfigMap.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from .config import Config, ConfigError
from .loading import load_config
from .open_relay import open_relay

if TYPE_CHECKING:
    from .metrics import Metrics

__all__ = ["ReloadResult", "Reloader"]

log = structlog.get_logger("lunos.reload")


@dataclass
class ReloadResult:
    applied: bool
    problems: list[str] = field(default_factory=list)

    def answer(self, config: Config) -> dict[str, Any]:
        """What one process reports of this reload (`config`: the one now in force)."""
        if not self.applied:
            return {"result": "rejected", "problems": self.problems}
        return {"result": "applied", "providers": len(config.providers),
                "models": len(config.models)}


def _stamp(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


class Swappable(Protocol):
    """What the reloader needs of the gateway (`app.Gateway`)."""

    config: Config
    metrics: Metrics

    async def swap(self, config: Config) -> object: ...


class Reloader:
    def __init__(self, gateway: Swappable) -> None:
        self.gateway = gateway
        source = gateway.config.source
        # The file the running config came from; None when it came from text.
        self.path: str | None = source if source and os.path.isfile(source) else None
        self._lock = asyncio.Lock()
        self._watch: asyncio.Task[None] | None = None

    async def reload(self, path: str | None = None) -> ReloadResult:
        path = path or self.path
        metrics = self.gateway.metrics
        label = os.path.basename(path) if path else ""
        async with self._lock:
            if path is None:
                metrics.config_reloads.labels("rejected").inc()
                return ReloadResult(False, ["(none): the config was not loaded from a file"])
            try:
                # Reading and checking a config (and the files it names) takes
                # tens of milliseconds of CPU: not on the event loop.
                config = await asyncio.to_thread(load_config, path)
            except Exception as e:  # a ConfigError, or a check that failed unforeseen
                return self._rejected(
                    e.problems if isinstance(e, ConfigError)
                    else [f"{label}: (file): cannot be checked ({type(e).__name__})"]
                )
            if config.store != self.gateway.config.store:
                log.warning("config_store_unchanged", reason="a new store takes a restart")
            # The listeners are already bound; moving them takes a restart.
            old = self.gateway.config.server
            config.server.host, config.server.port = old.host, old.port
            config.server.admin_host, config.server.admin_port = old.admin_host, old.admin_port
            relay = open_relay(config)
            if relay is not None and not config.server.allow_unauthenticated:
                return self._rejected([f"{label}: {relay} (running on {old.host})"])
            try:
                await self.gateway.swap(config)
            except Exception as e:  # a plugin refused its settings (a missing file, ...)
                return self._rejected(e.problems if isinstance(e, ConfigError)
                                      else [f"{path}: {type(e).__name__}: {e}"])
            self.path = path
            metrics.config_reloads.labels("applied").inc()
            log.info("config_reloaded", providers=len(config.providers), models=len(config.models))
        self.start()
        return ReloadResult(True)

    def _rejected(self, problems: list[str]) -> ReloadResult:
        """A reload refused: counted, each problem logged, the old config kept."""
        self.gateway.metrics.config_reloads.labels("rejected").inc()
        for line in problems:
            log.error("config_rejected", problem=line)
        return ReloadResult(False, problems)

    # -- the file watch ------------------------------------------------------
    def start(self) -> None:
        """Watch the file if the config asks for it and no watch runs yet."""
        if self._watch is not None and not self._watch.done():
            return
        if self.path is None or self.gateway.config.server.watch_config_seconds <= 0:
            return
        watch = self._watch_file(self.path, _stamp(self.path))
        self._watch = asyncio.get_running_loop().create_task(watch)

    async def close(self) -> None:
        task, self._watch = self._watch, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watch_file(self, path: str, seen: tuple[int, int] | None) -> None:
        while True:
            interval = self.gateway.config.server.watch_config_seconds
            if interval <= 0 or path != self.path:
                return
            await asyncio.sleep(interval)
            now = _stamp(path)
            if now is not None and now != seen:
                seen = now
                await self.reload(path)
