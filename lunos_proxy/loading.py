"""Load a config: the YAML schema (config.py), then the checks that need
more than the schema: the models section as a graph (model_checks.py) and
each pipeline plugin's settings, converted to its `Settings` struct.

`lunos-proxy check`, startup and every reload go through `load_config`;
every problem comes back at once as ``FILE: where: what`` lines in a
`ConfigError`, and nothing is half-applied.
"""

from __future__ import annotations

import os
from pathlib import Path

from .config import Config, ConfigError, convert, parse_schema, read_config_text
from .model_checks import check_routes
from .plugin import PluginError, find_plugin

__all__ = ["load_config", "parse_config"]


def parse_config(text: str, source: str) -> Config:
    """Parse and validate YAML text; raise ConfigError listing every problem."""
    label = Path(source).name or source
    problems: list[str] = []
    cfg = parse_schema(text, source, problems)
    problems += check_routes(cfg)
    _plugin_settings(cfg, problems)
    if problems:
        raise ConfigError([f"{label}: {p}" for p in problems])
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
