"""The monitoring files in deploy/: valid for Prometheus, and about metrics that exist."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from lunos_proxy.metrics import Metrics
from plugins.abuse.metrics import AbuseMetrics
from plugins.meter.metrics import MeterMetrics
from plugins.router.metrics import RouterMetrics

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
RULES = DEPLOY / "alerts" / "lunos.rules.yml"
DASHBOARD = DEPLOY / "grafana" / "lunos-dashboard.json"

_METRIC = re.compile(r"\b(lunos_[a-z0-9_]+)(\{[^}]*\})?")
_RECORDED = re.compile(r"\blunos:[a-z0-9_:]+")
_BY = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_LABEL = re.compile(r"([a-z_]+)\s*(?:=~|!~|!=|=)")
_ALWAYS = {"le", "instance", "job"}


def exported() -> dict[str, set[str]]:
    """Every sample name the proxy can export, with its label names."""
    names: dict[str, set[str]] = {}
    metrics = Metrics()
    for plugin_metrics in (AbuseMetrics, MeterMetrics, RouterMetrics):  # the suite's own
        metrics.add(plugin_metrics)
    for metric in metrics.registry._collector_to_names:  # every registered metric
        labels = set(getattr(metric, "_labelnames", ()))
        kind = metric._type  # type: ignore[attr-defined]
        base = metric._name  # type: ignore[attr-defined]
        suffixes = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_sum", "_count"]}[kind]
        for suffix in suffixes:
            names[base + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return names


def rule_exprs() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in board["templating"]["list"] if "definition" in v]
    return exprs


def check_expr(expr: str, known: dict[str, set[str]], recorded: set[str]) -> list[str]:
    problems = []
    used = _METRIC.findall(expr)
    labels_in_expr = set(_ALWAYS)
    for name, selector in used:
        if name not in known:
            problems.append(f"{name}: no such metric")
            continue
        labels_in_expr |= known[name]
        for label in _LABEL.findall(selector):
            if label not in known[name] | _ALWAYS:
                problems.append(f"{name}: no label {label}")
    for name in _RECORDED.findall(expr):
        if name not in recorded:
            problems.append(f"{name}: not a recording rule")
    for group in _BY.findall(expr):
        for label in filter(None, (x.strip() for x in group.split(","))):
            if label not in labels_in_expr:
                problems.append(f"by ({label}): no metric in the expression has it")
    for function in re.findall(r"label_values\(\s*(lunos_[a-z0-9_]+)\s*,\s*([a-z_]+)\)", expr):
        if function[1] not in known.get(function[0], set()):
            problems.append(f"label_values: {function[0]} has no label {function[1]}")
    return problems


def recorded_names() -> set[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}


def promtool(*args: str, cwd: Path = DEPLOY) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_scrape_config_and_its_rule_files_are_valid() -> None:
    result = promtool("check", "config", "prometheus/prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout


def test_alert_rules_are_valid_and_cover_the_issue_list() -> None:
    result = promtool("check", "rules", "alerts/lunos.rules.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    groups = yaml.safe_load(RULES.read_text())["groups"]
    alerts = {rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule}
    assert alerts == {
        "LunosErrorRate", "LunosGatewayErrorRate", "LunosModelAllDeploymentsDown", "LunosBreakerOpen",
        "LunosBudgetExhaustion", "LunosStoreErrors", "LunosStoreDown", "LunosStoreSlow",
        "LunosEventLoopLag", "LunosOverheadHigh", "LunosNoTraffic", "LunosDown",
        "LunosRecordsBacklog",
    }


def test_alert_rules_fire_on_the_series_they_are_written_for() -> None:
    result = promtool("test", "rules", "lunos.rules.test.yml", cwd=DEPLOY / "alerts")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize(("source", "exprs"), [("rules", rule_exprs), ("dashboard", dashboard_exprs)])
def test_queries_reference_only_metrics_and_labels_that_exist(source: str, exprs: Any) -> None:
    known, recorded = exported(), recorded_names()
    problems = {expr: check_expr(expr, known, recorded) for expr in exprs()}
    assert {e: p for e, p in problems.items() if p} == {}


def test_the_check_itself_catches_a_misspelt_metric_and_label() -> None:
    known = exported()
    assert check_expr('sum by (modle) (rate(lunos_request_total{model="x"}[5m]))', known, set()) == [
        "lunos_request_total: no such metric",
        "by (modle): no metric in the expression has it",
    ]
    assert check_expr('rate(lunos_requests_total{account="a"}[5m])', known, set()) == [
        "lunos_requests_total: no label account"
    ]


def test_dashboard_covers_every_area_the_issue_names() -> None:
    board = json.loads(DASHBOARD.read_text())
    rows = [p["title"] for p in board["panels"] if p["type"] == "row"]
    assert rows == [
        "Traffic", "Latency and overhead", "Tokens and cost", "Errors", "Routing", "Limits", "Metering", "State store",
    ]
    used = {m for e in dashboard_exprs() for m, _ in _METRIC.findall(e)}
    # Every metric the proxy exports has a panel (a histogram through its buckets).
    missing = {n for n in exported() if not n.endswith(("_sum", "_count"))} - used
    assert missing == set(), f"add a panel to {DASHBOARD.name} for {sorted(missing)}"
