"""server.connections and server.request_decompression: documented in the
shipped config with their defaults, and bounded."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
import yaml

from lunos_proxy.config import ConfigError, ConnectionsConfig, ServerConfig
from lunos_proxy.loading import parse_config

ROOT = Path(__file__).resolve().parent.parent


def test_the_shipped_config_documents_every_setting_at_its_default() -> None:
    shipped = yaml.safe_load((ROOT / "config" / "lunos.yaml").read_text())["server"]
    assert shipped["connections"] == msgspec.to_builtins(ConnectionsConfig())
    assert shipped["request_decompression"] is ServerConfig().request_decompression is False
    guide = (ROOT / "docs" / "operators.md").read_text()
    for field in ConnectionsConfig.__struct_fields__:
        assert f"`{field}`" in guide


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ("header_timeout_seconds: 0", "header_timeout_seconds: must be from 0.1 to 300"),
        ("header_timeout_seconds: .nan", "header_timeout_seconds: must be from 0.1 to 300"),
        ("body_timeout_seconds: -1", "body_timeout_seconds: must be from 0.1 to 3600"),
        ("body_timeout_seconds: .inf", "body_timeout_seconds: must be from 0.1 to 3600"),
        ("body_min_rate: -5", "body_min_rate: must be from 0 to 1073741824"),
        ("idle_timeout_seconds: 86400", "idle_timeout_seconds: must be from 0.1 to 3600"),
        ("max_open: 0", "max_open: must be from 1 to 1000000"),
        ("max_per_address: -1", "max_per_address: must be from 0 to 1000000"),
        ("{max_open: 10, max_per_address: 11}", "max_per_address: must not exceed max_open"),
    ],
)
def test_connection_settings_out_of_bounds_are_refused(settings: str, problem: str) -> None:
    body = settings if settings.startswith("{") else "{" + settings + "}"
    with pytest.raises(ConfigError) as e:
        parse_config(f"server:\n  connections: {body}\n", "lunos.yaml")
    assert e.value.problems == [f"lunos.yaml: server.connections.{problem}"]


def test_the_bounds_themselves_are_accepted() -> None:
    text = """
server:
  request_decompression: true
  connections: {header_timeout_seconds: 0.1, body_timeout_seconds: 3600, body_min_rate: 0,
                idle_timeout_seconds: 3600, max_open: 1, max_per_address: 0}
"""
    c = parse_config(text, "lunos.yaml").server.connections
    assert (c.header_timeout_seconds, c.body_min_rate, c.max_open, c.max_per_address) == (0.1, 0, 1, 0)
