"""The plugin example of docs/plugins.md, registered through a real entry point."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import GatewayFactory, basic_config
from tests.fakes import FakeProvider

# The example from docs/plugins.md, verbatim between the markers.
GUIDE = (Path(__file__).resolve().parent.parent / "docs" / "plugins.md").read_text()
EXAMPLE = GUIDE.split("<!-- plugin-example -->\n```python\n")[1].split("```")[0]


@pytest.fixture
def stamp_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Install the example as a third-party distribution: a module plus an
    entry point in a .dist-info folder on sys.path."""
    (tmp_path / "lunos_stamp.py").write_text(EXAMPLE)
    dist = tmp_path / "lunos_stamp-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lunos-stamp\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        textwrap.dedent("""\
            [lunos_proxy.plugins]
            stamp = lunos_stamp:Stamp
        """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("lunos_stamp", None)


async def test_readme_plugin_example_runs_in_the_pipeline(
    stamp_plugin: None, provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    cfg = basic_config(provider.base_url)
    cfg["pipeline"] = [
        {"name": "request_id"},
        {"name": "stamp", "settings": {"header": "x-served-by", "blocked": ["gpt-same"]}},
    ]
    gw = await make_gateway(cfg)
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.v1 + "/chat/completions", json={"model": "gpt-test", "messages": []}) as r:
            assert r.status == 200
            assert r.headers["x-served-by"] == "chat/completions"
        async with s.post(gw.v1 + "/chat/completions", json={"model": "gpt-same", "messages": []}) as r:
            assert r.status == 403
            assert (await r.json())["error"]["message"] == "The model 'gpt-same' is blocked here."
            assert r.headers["x-served-by"] == "chat/completions"  # error responses carry it too
    assert [r.json()["model"] for r in provider.received] == ["gpt-upstream"]


async def test_bad_plugin_settings_are_a_startup_error(stamp_plugin: None, provider: FakeProvider) -> None:
    from lunos_proxy.config import ConfigError
    from lunos_proxy.loading import parse_config

    cfg = f"""
providers: {{fake: {{format: openai, base_url: "{provider.base_url}"}}}}
pipeline:
  - {{name: stamp, settings: {{header: x, colour: red}}}}
"""
    with pytest.raises(ConfigError) as e:
        parse_config(cfg, "lunos.yaml")
    assert e.value.problems == ["lunos.yaml: pipeline[0].settings: object contains unknown field colour"]
