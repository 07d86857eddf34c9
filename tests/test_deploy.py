"""The deployment files are well-formed and agree with the code."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lunos_proxy.loading import parse_config

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def test_compose_config_is_a_valid_lunos_config() -> None:
    config = parse_config((DEPLOY / "lunos.compose.yaml").read_text(), "lunos.compose.yaml")
    assert config.store.url == "redis://redis:6379/0"
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert set(compose["services"]) == {"redis", "lunos-a", "lunos-b"}


def test_k8s_configmap_holds_a_valid_lunos_config(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = list(yaml.safe_load_all((DEPLOY / "k8s" / "lunos.yaml").read_text()))
    assert [d["kind"] for d in docs] == ["ConfigMap", "Deployment", "Service"]
    monkeypatch.setenv("LUNOS_REDIS_URL", "redis://redis:6379/0")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    config = parse_config(docs[0]["data"]["lunos.yaml"], "lunos.yaml")
    assert list(config.models) == ["gpt-4o-mini"]
    pod = docs[1]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > config.server.shutdown_grace_seconds
    probes = pod["containers"][0]
    assert (probes["readinessProbe"]["httpGet"]["path"], probes["livenessProbe"]["httpGet"]["path"]) == (
        "/readyz", "/healthz")
