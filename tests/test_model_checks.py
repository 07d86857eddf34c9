"""Route checks: every problem a `FILE: where: what` line, from load and `lunos-proxy check`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lunos_proxy.config import ConfigError
from lunos_proxy.loading import parse_config

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


def test_fallback_across_wire_formats_is_rejected() -> None:
    assert problems("""
  gpt-4o: {fallbacks: [claude-sonnet, azure-4o, demo-any], deployments: [{provider: oa, model: gpt-4o}]}
  claude-sonnet: {fallbacks: [demo-any], deployments: [{provider: an, model: claude}]}
  azure-4o: {deployments: [{provider: az, model: prod-4o}]}
  demo-any: {deployments: [{provider: demo, model: demo-chat}]}
""") == [
        "routes.yaml: models.gpt-4o.fallbacks[0]: 'claude-sonnet' is served in the anthropic format "
        "and 'gpt-4o' in openai; a fallback across wire formats needs translation, which Lunos does not do",
    ]


def test_one_model_cannot_mix_wire_formats() -> None:
    assert problems("""
  mixed: {deployments: [{provider: oa, model: x}, {provider: an, model: y}]}
""") == [
        "routes.yaml: models.mixed.deployments: the deployments speak different wire formats; "
        "one model is served in one format",
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
