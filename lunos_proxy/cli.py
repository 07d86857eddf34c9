"""`lunos-proxy serve | check` — the command line."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import ssl
import sys
from collections.abc import Sequence

import structlog
from aiohttp import web

from .app import Gateway
from .config import Config, ConfigError, load_config
from .http_errors import JsonErrorsRunner
from .logs import configure_logging

log = structlog.get_logger("lunos.proxy")

DEFAULT_CONFIG = "config/lunos.yaml"


def _config_path(args: argparse.Namespace) -> str:
    return str(args.config or os.environ.get("LUNOS_CONFIG") or DEFAULT_CONFIG)


def _load_or_report(path: str) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as e:
        for line in e.problems:
            print(line, file=sys.stderr)
        return None


def cmd_check(args: argparse.Namespace) -> int:
    path = _config_path(args)
    config = _load_or_report(path)
    if config is None:
        return 1
    print(
        f"{os.path.basename(path)}: ok ({len(config.providers)} providers, "
        f"{len(config.models)} models, {len(config.pipeline)} plugins)"
    )
    from .crypto import secret_warnings

    for warning in secret_warnings(config.secrets):
        print(f"{os.path.basename(path)}: warning: {warning}", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    path = _config_path(args)
    config = _load_or_report(path)
    if config is None:
        return 1
    server = config.server
    if args.host:
        server.host = args.host
    if args.port is not None:
        server.port = args.port
    if args.admin_host:
        server.admin_host = args.admin_host
    if args.admin_port is not None:
        server.admin_port = args.admin_port
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
        asyncio.run(serve(config, path))
        return 0
    if config.store.url.startswith("memory:") and config.store.url.rstrip("/") != "memory:":
        print(
            "--workers: the embedded store's data file belongs to one process; "
            "use a redis:// store (or memory:// without a file) for several workers",
            file=sys.stderr,
        )
        return 2
    from .workers import run_workers

    def serve_one() -> int:
        asyncio.run(serve(config, path, reuse_port=True))
        return 0

    return run_workers(workers, serve_one)


async def serve(config: Config, path: str, *, reuse_port: bool = False) -> None:
    """Run until SIGTERM/SIGINT; SIGHUP reloads the config file."""
    gateway = Gateway(config)
    await gateway.start()
    from .crypto import load_secrets

    for warning in load_secrets(config.secrets).warnings:
        log.warning("development_default", detail=warning)
    s = config.server
    ssl_context = None
    if s.tls is not None:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(s.tls.cert_file, s.tls.key_file)
    public = JsonErrorsRunner(
        gateway.public_app(),
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=s.shutdown_grace_seconds,
    )
    admin = web.AppRunner(gateway.admin_app(), access_log=None, shutdown_timeout=1.0)
    await public.setup()
    await admin.setup()
    # With several workers every process binds the same ports (SO_REUSEPORT).
    reuse = reuse_port or None
    await web.TCPSite(public, s.host, s.port, ssl_context=ssl_context, reuse_port=reuse).start()
    await web.TCPSite(admin, s.admin_host, s.admin_port, reuse_port=reuse).start()
    log.info(
        "listening",
        host=s.host,
        port=s.port,
        admin_host=s.admin_host,
        admin_port=s.admin_port,
        store=config.store.url.split("://")[0],
    )
    freeze_startup_heap()

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(reload(gateway, path)))
    await stop.wait()
    log.info("stopping", grace_seconds=s.shutdown_grace_seconds)
    # Closes the listener at once, then waits for in-flight requests (open
    # streams included) up to the grace period.
    await public.cleanup()
    await admin.cleanup()
    await gateway.close()
    log.info("stopped")


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


async def reload(gateway: Gateway, path: str) -> bool:
    """Load, validate and swap in a config; on any problem keep the old one."""
    return (await gateway.reload(path)).applied


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(getattr(args, "log_level", "info"), getattr(args, "log_format", "json"))
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
