"""Install test plugins the way a third-party package is installed: an
entry point in a .dist-info folder put on sys.path."""

from __future__ import annotations

from pathlib import Path

import pytest


def register_plugins(where: Path, dist: str, plugins: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Register `plugins` (name → ``module:Class``) as distribution `dist`."""
    info = where / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = "".join(f"{name} = {target}\n" for name, target in plugins.items())
    (info / "entry_points.txt").write_text("[lunos_proxy.plugins]\n" + lines)
    monkeypatch.syspath_prepend(str(where))
