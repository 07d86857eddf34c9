"""Secure by default: a proxy reachable from other machines authenticates.

A proxy that forwards without checking keys spends the operator's provider
keys for anyone who can reach it. `open_relay` names that problem for a
config; the loader refuses such a config (so do `serve`, after its --host
override, and a reload, after keeping the running listeners) unless it
says ``server.allow_unauthenticated: true``, and then `serve` logs the
same problem as a warning at every start.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import Config

__all__ = ["is_loopback", "open_relay"]

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """Whether a listener on `host` is reachable from this machine only."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a name or "" (every address): reachable from elsewhere
        return False


def open_relay(cfg: Config) -> str | None:
    """The problem with a config that lets anyone spend its providers' keys,
    whatever `server.allow_unauthenticated` says.

    A public listener on a non-loopback address that forwards to a provider
    (any but the built-in demo, which costs nothing) needs a plugin that
    authenticates in its pipeline (`Plugin.authenticates`: the auth plugin)."""
    from .plugin import PluginError, find_plugin

    s = cfg.server
    if is_loopback(s.host):
        return None
    if all(p.format == "demo" for p in cfg.providers.values()):
        return None
    for entry in cfg.pipeline:
        try:
            if find_plugin(entry.name).authenticates:
                return None
        except PluginError:
            continue  # reported by _plugin_settings
    return (
        f"server.host: {s.host or '(every address)'} is reachable from other machines, "
        "and no plugin in the pipeline authenticates, so anyone could spend the providers' "
        "keys: add the auth plugin to the pipeline, bind 127.0.0.1, or set "
        "server.allow_unauthenticated: true"
    )
