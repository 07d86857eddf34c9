"""Load a config: the YAML schema (config.py), then the checks that need
more than the schema: the models section as a graph (model_checks.py),
each pipeline plugin's settings (converted to its `Settings` struct), a
public listener without authentication (open_relay.py), and the files the
config names (config_files.py).

`lunos-proxy check`, startup and every reload go through `load_config`;
every problem comes back at once as ``FILE: where: what`` lines in a
`ConfigError`, and nothing is half-applied.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

from .config import Config, ConfigError, convert, parse_schema, read_config_text
from .config_files import resolve_files
from .model_checks import check_routes
from .open_relay import open_relay
from .plugin import PluginError, find_plugin

__all__ = ["load_config", "parse_config"]


def parse_config(text: str, source: str) -> Config:
    """Parse and validate YAML text; raise ConfigError listing every problem."""
    label = Path(source).name or source
    problems: list[str] = []
    cfg = parse_schema(text, source, problems)
    problems += check_routes(cfg)
    _plugin_settings(cfg, problems)
    relay = open_relay(cfg)
    if relay is not None and not cfg.server.allow_unauthenticated:
        problems.append(relay)
    file_problems = _check_files(cfg, Path(source).absolute().parent, problems)
    if problems or file_problems:
        raise ConfigError([f"{label}: {p}" for p in problems] + file_problems)
    return cfg


def load_config(path: str | os.PathLike[str]) -> Config:
    return parse_config(read_config_text(path), str(Path(path)))


def _plugin_settings(cfg: Config, problems: list[str]) -> None:
    names: set[str] = set()
    for i, entry in enumerate(cfg.pipeline):
        where = f"pipeline[{i}]"
        if entry.name in names:
            problems.append(f"{where}.name: plugin {entry.name!r} appears twice")
        names.add(entry.name)
        try:
            cls = find_plugin(entry.name)
        except PluginError as e:
            problems.append(f"{where}.name: {e}")
            cfg.plugin_settings.append(None)
            continue
        settings = convert(entry.settings, cls.Settings, f"{where}.settings", problems)
        cfg.plugin_settings.append(settings)


def _check_files(cfg: Config, base: Path, problems: list[str]) -> list[str]:
    """Resolve and check the files the config names (see `config_files`);
    returns the problems found inside them, as whole lines."""
    inside: list[str] = []
    resolve_files(cfg.server, "server", base, problems, inside)
    if cfg.store.url.startswith(("redis://", "rediss://", "redis+")):
        from .store.redis.connect import RedisOptions  # loads redis-py: only for Redis

        options = convert(cfg.store.options, RedisOptions, "store.options", problems)
        if options is not None:
            resolve_files(options, "store.options", base, problems, inside)
            for name in cfg.store.options:  # the store gets the resolved paths
                cfg.store.options[name] = getattr(options, name)
    for i, settings in enumerate(cfg.plugin_settings):
        resolve_files(settings, f"pipeline[{i}].settings", base, problems, inside)
    tls = cfg.server.tls
    if tls is not None and not any(p.startswith("server.tls.") for p in problems):
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                tls.cert_file, tls.key_file
            )
        except (ssl.SSLError, OSError) as e:
            problems.append(f"server.tls: cannot use the certificate and key: {e}")
    return inside
