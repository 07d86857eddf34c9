"""The careless operator's mistakes in the shipped config, each given to a
real `lunos-proxy serve`: it exits 2 and prints only ``FILE: where: what``
lines (no traceback, nothing on stdout), and starts nothing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
CONFIG = (ROOT / "config" / "lunos.yaml").read_text()
PRICING = (ROOT / "config" / "pricing.yaml").read_text()


def _edit(old: str, new: str) -> Callable[[str, str], tuple[str, str]]:
    def change(config: str, pricing: str) -> tuple[str, str]:
        assert old in config, old
        return config.replace(old, new, 1), pricing
    return change


def _price(pattern: str, value: str) -> Callable[[str, str], tuple[str, str]]:
    def change(config: str, pricing: str) -> tuple[str, str]:
        changed = re.sub(pattern, r"\g<1>" + value, pricing, count=1)
        assert changed != pricing
        return config, changed
    return change


MISTAKES: dict[str, tuple[Callable[[str, str], tuple[str, str]], list[str]]] = {
    "plugin name typo": (_edit("- name: meter", "- name: metre"), [
        "lunos.yaml: pipeline[4].name: unknown plugin 'metre' (installed: abuse, auth, logger, "
        "meter, request_id, router)"]),
    "section name typo": (_edit("server:\n", "sever:\n"), ["lunos.yaml: (top): unknown key 'sever' (did you mean server?)"]),
    "plugin setting typo": (_edit("cache_ttl: 10", "cache_tll: 10"), [
        "lunos.yaml: pipeline[2].settings: object contains unknown field cache_tll (did you mean cache_ttl?)"]),
    "wrong type": (_edit("port: 8080", "port: eighty"), ["lunos.yaml: server.port: expected int, got str"]),
    "yes for a port": (_edit("admin_port: 9090", "admin_port: true"), [
        "lunos.yaml: server.admin_port: expected int, got bool"]),
    "port out of range": (_edit("admin_port: 9090", "admin_port: 99999"), [
        "lunos.yaml: server.admin_port: expected int <= 65535"]),
    "key given twice": (_edit("  port: 8080\n", "  port: 8080\n  port: 8081\n"), [
        "lunos.yaml:16: server.port: duplicate key (first given on line 15)"]),
    "broken YAML": (_edit("  port: 8080\n", "  port: [8080\n"), [
        "lunos.yaml:16: (yaml): not valid YAML: expected ',' or ']', but got ':' (column 13)"]),
    "environment variable unset": (_edit(
        "  demo:\n    format: demo",
        "  demo:\n    format: demo\n  oai:\n    format: openai\n    base_url: https://api.openai.com/v1\n"
        "    api_key: ${LUNOS_TEST_UNSET_OPENAI_KEY}"), [
        "lunos.yaml: providers.oai.api_key: environment variable LUNOS_TEST_UNSET_OPENAI_KEY is not set"]),
    "unknown provider": (_edit("      - provider: demo\n        model: demo-claude",
                               "      - provider: demmo\n        model: demo-claude"), [
        "lunos.yaml: models.demo-claude.deployments[0].provider: unknown provider 'demmo'"]),
    "unknown fallback": (_edit("fallbacks: [demo-chat-backup]", "fallbacks: [demo-chat-bakup]"), [
        "lunos.yaml: models.demo-chat.fallbacks[0]: unknown model 'demo-chat-bakup'"]),
    "unknown plan": (_edit("default_plan: standard", "default_plan: standrd"), [
        "lunos.yaml: pipeline[3].settings: default_plan 'standrd' is not in plans"]),
    "store URL without //": (_edit("url: memory://data/lunos.json", "url: redis:/localhost"), [
        "lunos.yaml: store.url: expected memory://, redis://, rediss://, redis+sentinel:// or "
        "redis+cluster://"]),
    "TLS files missing": (_edit(
        "  # tls: {cert_file: /etc/lunos/tls.crt, key_file: /etc/lunos/tls.key}",
        "  tls: {cert_file: tls.crt, key_file: tls.key}"), [
        "lunos.yaml: server.tls.cert_file: cannot read {dir}/tls.crt: no such file",
        "lunos.yaml: server.tls.key_file: cannot read {dir}/tls.key: no such file"]),
    "pricing file misnamed": (_edit("pricing: pricing.yaml", "pricing: prices.yaml"), [
        "lunos.yaml: pipeline[4].settings.pricing: cannot read {dir}/prices.yaml: no such file"]),
    "NaN price": (_price(r"(input: )[0-9.]+", ".nan"), [
        "pricing.yaml: models.demo-chat[0].input: expected a finite number"]),
    "infinite price": (_price(r"(output: )[0-9.]+", ".inf"), [
        "pricing.yaml: models.demo-chat[0].output: expected a finite number"]),
    "price out of range": (_price(r"(output: )[0-9.]+", "1e12"), [
        "pricing.yaml: models.demo-chat[0].output: expected at most 1000000000"]),
    "NaN budget": (_edit("        # accounts: {demo: {daily: 1.50", "        accounts: {demo: {daily: .nan}}\n"
                                                                   "        # x: {demo: {daily: 1.50"), [
        "lunos.yaml: pipeline[4].settings.budgets: budget amounts need at most 6 decimals and must be >= 0"]),
    "guessable admin token": (_edit("token: ${LUNOS_ADMIN_TOKEN:-}", "token: changeme"), [
        "lunos.yaml: admin: token is 8 characters, too few to be safe: use at least 24 "
        "(e.g. lat- and the output of openssl rand -hex 24)"]),
    "request id header that is no header name": (
        _edit("      header: x-request-id", '      header: "X Request Id"'), [
            "lunos.yaml: pipeline[0].settings: header must be an HTTP header name such as "
            "x-request-id (no spaces, colons or line breaks), not 'X Request Id'"]),
    "provider key with a trailing newline": (_edit(
        "  demo:\n    format: demo",
        "  demo:\n    format: demo\n  oai:\n    format: openai\n    base_url: https://api.openai.com/v1\n"
        '    api_key: "sk-test-0123\\n"\n    headers: {"X Team": a}'), [
        "lunos.yaml: providers.oai: api_key has a line break (a trailing newline from a file or "
        "echo?); headers: 'X Team' is no HTTP header name"]),
    "webhook delivery without its URL": (_edit("  delivery: log", "  delivery: webhook"), [
        "lunos.yaml: console: delivery webhook needs webhook_url and public_url"]),
}


@pytest.mark.parametrize("mistake", MISTAKES, ids=list(MISTAKES))
def test_serve_refuses_the_mistake_with_file_where_what_lines_and_exit_2(
    tmp_path: Path, mistake: str
) -> None:
    change, expected = MISTAKES[mistake]
    config, pricing = change(CONFIG, PRICING)
    (tmp_path / "lunos.yaml").write_text(config)
    (tmp_path / "pricing.yaml").write_text(pricing)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUNOS_")}
    res = subprocess.run(
        [sys.executable, "-m", "lunos_proxy", "serve", "--config", str(tmp_path / "lunos.yaml"),
         "--port", str(free_port()), "--admin-port", str(free_port())],
        capture_output=True, text=True, cwd=tmp_path, timeout=60, env={**env, "PYTHONPATH": str(ROOT)},
    )
    assert (res.returncode, res.stdout) == (2, ""), res.stderr
    assert res.stderr.splitlines() == [line.format(dir=tmp_path) for line in expected]
    assert not (tmp_path / "data").exists()  # nothing was started or created
