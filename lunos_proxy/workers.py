"""`lunos-proxy serve --workers N`: N processes sharing the listening ports.

The parent prepares the metrics directory (``PROMETHEUS_MULTIPROC_DIR``:
the one given in the environment, emptied, or a fresh temporary one), then
forks N workers. Each worker runs the whole proxy and binds the public and
the admin port with ``SO_REUSEPORT``, so the kernel spreads connections
over them. Every worker writes its metric values to memory-mapped files in
that directory, and /metrics, whichever worker answers it, aggregates the
files of all workers (see `lunos_proxy.metrics`).

Each worker has an id (0 .. N-1, ``LUNOS_WORKER_ID``) that its log lines
carry as ``worker``, and shares a control directory with the others
(``LUNOS_WORKER_CONTROL``) through which ``POST /admin/reload`` reaches
every worker (see `lunos_proxy.worker_control`).

The parent serves nothing itself. It passes SIGTERM, SIGINT and SIGHUP on
to every worker, marks an exited worker's live gauges dead, and removes the
metric files when the last worker is gone. If a worker dies on its own the
parent stops the others and exits 1, so the service manager restarts the
whole set with a clean directory.
"""

from __future__ import annotations

import gc
import glob
import os
import shutil
import signal
import tempfile
from collections.abc import Callable
from types import FrameType

import structlog
from prometheus_client import multiprocess

from .config import Config
from .metrics import MULTIPROC_ENV
from .plugin import find_plugin
from .worker_control import CONTROL_ENV, WORKER_ENV

__all__ = ["prepare_metrics_dir", "prepare_plugins", "run_workers"]

log = structlog.get_logger("lunos.proxy")


def prepare_metrics_dir() -> tuple[str, bool]:
    """The directory every worker shares, emptied; and whether we made it."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        os.makedirs(given, exist_ok=True)
        _clean(given)
        return given, False
    made = tempfile.mkdtemp(prefix="lunos-metrics-")
    os.environ[MULTIPROC_ENV] = made
    return made, True


def prepare_plugins(config: Config) -> None:
    """Let each plugin load its shared tables (`Plugin.prepare`) before the
    fork, and keep the collector off them: frozen objects are never walked,
    so a worker's collections do not write to (and un-share) their pages."""
    for entry, settings in zip(config.pipeline, config.plugin_settings, strict=True):
        find_plugin(entry.name).prepare(settings, config)
    gc.collect()
    gc.freeze()


def _clean(directory: str) -> None:
    for path in glob.glob(os.path.join(directory, "*.db")):
        os.remove(path)


def run_workers(count: int, serve_one: Callable[[], int]) -> int:
    """Fork `count` workers, each running `serve_one()`; return the exit code."""
    directory, made = prepare_metrics_dir()
    control = tempfile.mkdtemp(prefix="lunos-workers-")
    os.environ[CONTROL_ENV] = f"{control}:{count}:{os.getpid()}"
    children: set[int] = set()
    stopping = False

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if signum != signal.SIGHUP:
            stopping = True
        for pid in list(children):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    for worker in range(count):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.environ[WORKER_ENV] = str(worker)
                structlog.contextvars.bind_contextvars(worker=worker)
                code = serve_one()
            finally:
                os._exit(code)
        children.add(pid)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    log.info("workers_started", workers=count, pids=sorted(children), metrics_dir=directory)

    code = 0
    while children:
        pid, status = os.waitpid(-1, 0)
        if pid not in children:
            continue
        children.discard(pid)
        multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
        exit_code = os.waitstatus_to_exitcode(status)
        if exit_code != 0:
            code = 1
        if not stopping:
            log.error("worker_exited", pid=pid, exit_code=exit_code)
            code = 1
            forward(signal.SIGTERM, None)
    shutil.rmtree(control, ignore_errors=True)
    if made:
        shutil.rmtree(directory, ignore_errors=True)
    else:
        _clean(directory)
    log.info("stopped")
    return code
