"""`lunos-proxy serve | check` — the command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import signal
import ssl
import sys
from collections.abc import Sequence
from types import FrameType

import structlog
from aiohttp import web

from .app import Gateway
from .config import Config, ConfigError
from .connections import admin_runner, open_files_warning, public_runner
from .loading import load_config
from .logs import configure_logging
from .open_relay import open_relay
from .worker_control import this_worker

log = structlog.get_logger("lunos.proxy")

DEFAULT_CONFIG = "config/lunos.yaml"

# The exit status for a config that cannot be used (argparse uses it for a
# bad command line too).
CONFIG_PROBLEM = 2


def _config_path(args: argparse.Namespace) -> str:
    return str(args.config or os.environ.get("LUNOS_CONFIG") or DEFAULT_CONFIG)


def _load_or_report(path: str) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as e:
        _report(e)
        return None


def _report(e: ConfigError) -> None:
    for line in e.problems:
        print(line, file=sys.stderr)


def _unauthenticated_warning(config: Config) -> str | None:
    s = config.server
    if s.allow_unauthenticated and open_relay(config) is not None:
        return (f"server.allow_unauthenticated: requests to {s.host or '(every address)'}:"
                f"{s.port} are forwarded to providers without an API key")
    return None


def cmd_check(args: argparse.Namespace) -> int:
    path = _config_path(args)
    config = _load_or_report(path)
    if config is None:
        return CONFIG_PROBLEM
    print(
        f"{os.path.basename(path)}: ok ({len(config.providers)} providers, "
        f"{len(config.models)} models, {len(config.pipeline)} plugins)"
    )
    from .crypto import secret_warnings

    warnings = secret_warnings(config.secrets)
    unauthenticated = _unauthenticated_warning(config)
    if unauthenticated:
        warnings.append(unauthenticated)
    if not config.models:
        warnings.append("models: none configured: every API request would be answered 404")
    for warning in warnings:
        print(f"{os.path.basename(path)}: warning: {warning}", file=sys.stderr)
    return 0


# A SIGHUP that comes while `serve` starts (reading the config, loading
# tables, binding) would end the process with the default action; it is
# remembered instead, and the config is reloaded once serving begins.
_hangup_pending = False


def _remember_hangup(signum: int, frame: FrameType | None) -> None:
    global _hangup_pending
    _hangup_pending = True


def cmd_serve(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGHUP, _remember_hangup)
    path = _config_path(args)
    config = _load_or_report(path)
    if config is None:
        return CONFIG_PROBLEM
    server = config.server
    if args.host:
        server.host = args.host
    if args.port is not None:
        server.port = args.port
    if args.admin_host:
        server.admin_host = args.admin_host
    if args.admin_port is not None:
        server.admin_port = args.admin_port
    # Asked again: --host may have moved a loopback config onto the network.
    relay = open_relay(config)
    if relay is not None and not server.allow_unauthenticated:
        print(f"{os.path.basename(path)}: {relay} (--host {server.host})", file=sys.stderr)
        return CONFIG_PROBLEM
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # uvloop is optional off Linux/macOS
        pass
    workers: int = args.workers
    if workers < 1:
        print("--workers: must be at least 1", file=sys.stderr)
        return 2
    if workers == 1:
        return _serve_reporting(config, path)
    if config.store.url.startswith("memory:") and config.store.url.rstrip("/") != "memory:":
        print(
            "--workers: the embedded store's data file belongs to one process; "
            "use a redis:// store (or memory:// without a file) for several workers",
            file=sys.stderr,
        )
        return 2
    from .workers import prepare_plugins, run_workers

    prepare_plugins(config)

    def serve_one() -> int:
        return _serve_reporting(config, path, reuse_port=True)

    return run_workers(workers, serve_one)


def _serve_reporting(config: Config, path: str, *, reuse_port: bool = False) -> int:
    """`serve`, ending on a config problem (a plugin refusing its settings,
    a port in use) with its ``FILE: where: what`` lines, not a traceback."""
    try:
        asyncio.run(serve(config, path, reuse_port=reuse_port))
    except ConfigError as e:
        _report(e)
        return CONFIG_PROBLEM
    return 0


async def serve(config: Config, path: str, *, reuse_port: bool = False) -> None:
    """Run until SIGTERM/SIGINT; SIGHUP reloads the config file."""
    label = os.path.basename(path)
    try:
        gateway = Gateway(config)
    except ValueError as e:  # the store refused its URL or options
        raise ConfigError([f"{label}: store: {e}"]) from None
    try:
        await gateway.start()
    except BaseException as e:
        await gateway.close()
        if isinstance(e, ValueError):  # a plugin refused its settings or secrets
            raise ConfigError([f"{label}: {e}"]) from None
        raise
    from .crypto import load_secrets

    for warning in load_secrets(config.secrets).warnings:
        log.warning("development_default", detail=warning)
    unauthenticated = _unauthenticated_warning(config)
    if unauthenticated:
        log.warning("unauthenticated_listener", detail=unauthenticated)
    s = config.server
    files = open_files_warning(s.connections)
    if files is not None:
        log.warning("open_files_limit", detail=files)
    ssl_context = None
    if s.tls is not None:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(s.tls.cert_file, s.tls.key_file)
    # Header, body and idle timeouts, connection caps, bodies never inflated
    # by aiohttp (see connections.py).
    public = public_runner(gateway.public_app(), s, shutdown_timeout=s.shutdown_grace_seconds)
    # The same rules on the admin listener, which answers malformed HTTP in
    # JSON too (see http_errors.py).
    admin = admin_runner(gateway.admin_app(), s, shutdown_timeout=1.0)
    await public.setup()
    await admin.setup()
    # With several workers every process binds the same ports (SO_REUSEPORT).
    reuse = reuse_port or None
    try:
        for runner, host, port, where, context in (
            (public, s.host, s.port, "server.port", ssl_context),
            (admin, s.admin_host, s.admin_port, "server.admin_port", None),
        ):
            site = web.TCPSite(runner, host, port, ssl_context=context, reuse_port=reuse)
            try:
                await site.start()
            except OSError as e:
                reason = os.strerror(e.errno) if e.errno else str(e)
                raise ConfigError(
                    [f"{label}: {where}: cannot listen on {host}:{port}: {reason}"]
                ) from None
    except ConfigError:
        await public.cleanup()
        await admin.cleanup()
        await gateway.close()
        raise
    log.info(
        "listening",
        host=s.host,
        port=s.port,
        admin_host=s.admin_host,
        admin_port=s.admin_port,
        store=config.store.url.split("://")[0],
    )
    freeze_startup_heap()
    hand_back_quickly()

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(reload(gateway, path)))
    global _hangup_pending
    if _hangup_pending:  # a SIGHUP came while starting: the file may have changed since
        _hangup_pending = False
        os.kill(os.getpid(), signal.SIGHUP)  # handled now as any later one
    await stop.wait()
    await drain(gateway, stop)
    s = gateway.config.server  # a reload may have changed the grace
    log.info("stopping", grace_seconds=s.shutdown_grace_seconds)
    # Closes the listener at once, then waits for in-flight requests (open
    # streams included) up to the grace period.
    await public.cleanup()
    await admin.cleanup()
    await gateway.close()
    log.info("stopped")


async def drain(gateway: Gateway, stop: asyncio.Event) -> None:
    """Keep serving for `server.drain_seconds` while /readyz answers 503, so
    load balancers (a Kubernetes Service, a compose healthcheck) stop sending
    requests before the listeners close; a second SIGTERM/SIGINT cuts it short."""
    seconds = gateway.config.server.drain_seconds
    if seconds <= 0:
        return
    gateway.draining = True
    stop.clear()
    log.info("draining", seconds=seconds)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def freeze_startup_heap() -> None:
    """Keep the cycle collector off what startup made (modules, the app, its
    config): those objects live as long as the process, yet every full
    collection walked all of them. Requests allocate containers all the time
    and hold them across awaits, so full collections come often; with the
    limits on, walking the startup heap cost about a fifth of each request's
    CPU (bench/RESULTS.md). Only at startup: what a reload retires must stay
    collectable.

    Then the youngest generation is collected after `YOUNG_OBJECTS` new
    containers instead of 700. A request leaves no cycles behind, so the
    collector only ever walked the requests in flight (their containers
    come and go by the hundred): 5 % of the CPU with the limits on, for
    nothing. Cycles that do appear (an exception's traceback) wait at most
    that many allocations, a few megabytes."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_OBJECTS, middle, old)


YOUNG_OBJECTS = 20_000


def hand_back_quickly() -> None:
    """Have a thread that holds the interpreter lock give it back to the
    event loop after `SWITCH_INTERVAL` rather than Python's 5 ms.

    The loop shares the interpreter with threads that run Python for
    milliseconds at a time: the records writer making its rows, the tracing
    exporter encoding a batch of spans, the tokenizer thread. While one of
    them runs, the loop waits for the lock a whole interval at each turn,
    and so does every request in flight: with tracing on (every request
    sampled), the exporter alone put the bench's p99 at 4-5 x its p50, and
    at 0.5 ms 2.3-3.1 x over the runs in bench/RESULTS.md. A hand-over costs a few
    microseconds and happens only while two threads both want the lock."""
    sys.setswitchinterval(SWITCH_INTERVAL)


SWITCH_INTERVAL = 0.0005


async def reload(gateway: Gateway, path: str) -> bool:
    """Load, validate and swap in a config; on any problem keep the old one.
    Under --workers, answer the workers' reload requests made before it began
    (`POST /admin/reload`, see lunos_proxy/worker_control.py)."""
    workers = this_worker()
    waiting = workers.pending() if workers is not None else []
    result = await gateway.reload(path)
    if workers is not None and waiting:
        workers.answer(waiting, result.answer(gateway.config))
    return result.applied


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lunos-proxy", description="The Lunos API gateway.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve_p = sub.add_parser("serve", help="run the proxy")
    serve_p.add_argument("--config", help=f"YAML file (default $LUNOS_CONFIG or {DEFAULT_CONFIG})")
    serve_p.add_argument("--host")
    serve_p.add_argument("--port", type=int)
    serve_p.add_argument("--admin-host")
    serve_p.add_argument("--admin-port", type=int)
    serve_p.add_argument("--log-level", default="info")
    serve_p.add_argument("--log-format", choices=("json", "console"), default="json")
    serve_p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes sharing the ports (SO_REUSEPORT); metrics aggregated across them",
    )
    serve_p.set_defaults(func=cmd_serve)
    check_p = sub.add_parser("check", help="validate a config file and exit")
    check_p.add_argument("--config", help="YAML file")
    check_p.set_defaults(func=cmd_check)
    from .cli_admin import add_commands

    add_commands(sub)
    from .records.cli import add_db_commands

    add_db_commands(sub, _config_or_status)
    return parser


def _config_or_status(args: argparse.Namespace) -> Config | int:
    """The config `args` name, or the exit status after reporting its problems."""
    config = _load_or_report(_config_path(args))
    return CONFIG_PROBLEM if config is None else config


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(getattr(args, "log_level", "info"), getattr(args, "log_format", "json"))
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
