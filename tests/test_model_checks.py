"""Route checks: every problem a `FILE: where: what` line, from load and `lunos-proxy check`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lunos_proxy.config import ConfigError
from lunos_proxy.loading import parse_config
from lunos_proxy.providers.anthropic import AnthropicAdapter

PROVIDERS = """
providers:
  oa: {format: openai, base_url: "http://127.0.0.1:1/v1"}
  az: {format: azure, base_url: "https://x.openai.azure.com"}
  an: {format: anthropic, base_url: "http://127.0.0.1:1"}
  demo: {format: demo}
"""


def problems(models: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_config(PROVIDERS + "models:\n" + models, "/etc/lunos/routes.yaml")
    return e.value.problems


def test_unknown_provider_empty_list_and_bad_weight_are_named() -> None:
    assert problems("""
  a: {deployments: [{provider: nope, model: x}]}
  b: {deployments: []}
  c: {deployments: [{provider: oa, model: x, weight: 0}, {provider: oa, model: y, weight: -1}]}
""") == [
        "routes.yaml: models.a.deployments[0].provider: unknown provider 'nope'",
        "routes.yaml: models.b.deployments: needs at least one deployment",
        "routes.yaml: models.c.deployments[0].weight: must be greater than 0",
        "routes.yaml: models.c.deployments[1].weight: must be greater than 0",
    ]


def test_duplicate_aliases_are_named() -> None:
    assert problems("""
  a: {aliases: [gpt], deployments: [{provider: oa, model: x}]}
  b: {aliases: [gpt, a], deployments: [{provider: oa, model: y}]}
""") == [
        "routes.yaml: models.b.aliases: 'gpt' is already a name of 'a'",
        "routes.yaml: models.b.aliases: 'a' is already a name of 'a'",
    ]


def test_fallback_cycles_and_unknown_fallbacks_are_named() -> None:
    assert problems("""
  a: {fallbacks: [b], deployments: [{provider: oa, model: x}]}
  b: {fallbacks: [c-alias, ghost], deployments: [{provider: oa, model: y}]}
  c: {aliases: [c-alias], fallbacks: [a], deployments: [{provider: oa, model: z}]}
  d: {fallbacks: [d], deployments: [{provider: oa, model: w}]}
""") == [
        "routes.yaml: models.b.fallbacks[1]: unknown model 'ghost'",
        "routes.yaml: models.a.fallbacks: fallback cycle a -> b -> c -> a",
        "routes.yaml: models.d.fallbacks: fallback cycle d -> d",
    ]


def test_fallbacks_and_deployments_across_wire_formats_are_accepted() -> None:
    config = parse_config(PROVIDERS + """models:
  gpt-4o: {fallbacks: [claude-sonnet, azure-4o, demo-any], deployments: [{provider: oa, model: gpt-4o}]}
  claude-sonnet: {fallbacks: [gpt-4o-alias], deployments: [{provider: an, model: claude}]}
  azure-4o: {aliases: [gpt-4o-alias], deployments: [{provider: az, model: prod-4o}]}
  demo-any: {deployments: [{provider: demo, model: demo-chat}]}
  mixed: {deployments: [{provider: oa, model: x}, {provider: an, model: y}, {provider: az, model: z}]}
""", "/etc/lunos/routes.yaml")
    assert config.models["mixed"].deployments[1].provider == "an"


def test_a_format_no_translation_reaches_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    # A provider format with no translation to the others (as a third-party
    # adapter's own format would be): no model may mix it with them.
    monkeypatch.setattr(AnthropicAdapter, "speaks", "acme")
    assert problems("""
  gpt-4o: {fallbacks: [claude-sonnet], deployments: [{provider: oa, model: gpt-4o}]}
  claude-sonnet: {deployments: [{provider: an, model: claude}]}
  mixed: {deployments: [{provider: oa, model: x}, {provider: an, model: y}]}
""") == [
        "routes.yaml: models.mixed.deployments: some deployments serve the openai format "
        "and others cannot, even through a translation",
        "routes.yaml: models.gpt-4o.fallbacks[0]: 'claude-sonnet' cannot serve 'gpt-4o''s openai "
        "clients, not even through a translation",
    ]


def test_deployment_names_capacity_and_timeouts_are_checked() -> None:
    assert problems("""
  a:
    deployments:
      - {provider: oa, model: x}
      - {provider: oa, model: x, capacity: {requests_per_minute: 0}}
      - {provider: oa, model: y, name: shared, timeouts: {first_byte: -1}}
  b: {deployments: [{provider: az, model: z, name: shared}]}
""") == [
        "routes.yaml: models.a.deployments[1]: a second deployment named 'oa/x'; give each its own `name`",
        "routes.yaml: models.a.deployments[1].capacity.requests_per_minute: must be greater than 0",
        "routes.yaml: models.a.deployments[2].timeouts.first_byte: must be greater than 0",
        "routes.yaml: models.b.deployments[0].name: 'shared' already names oa/y in 'a'",
    ]


def test_check_command_prints_route_problems(tmp_path: Path) -> None:
    bad = tmp_path / "lunos.yaml"
    bad.write_text(PROVIDERS + "models:\n  a: {fallbacks: [a], deployments: [{provider: oa, model: x, weight: 0}]}\n")
    res = subprocess.run([sys.executable, "-m", "lunos_proxy", "check", "--config", str(bad)],
                         capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr == (
        "lunos.yaml: models.a.deployments[0].weight: must be greater than 0\n"
        "lunos.yaml: models.a.fallbacks: fallback cycle a -> a\n"
    )
