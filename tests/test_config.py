"""Config validation: every problem named as FILE: where: what; shipped files load."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lunos_proxy.config import ConfigError
from lunos_proxy.crypto import generate_encryption_key
from lunos_proxy.loading import load_config, parse_config

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted([ROOT / "config" / "lunos.yaml", *(ROOT / "config" / "examples").glob("*.yaml")])


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_config(text, "/etc/lunos/lunos.yaml")
    return e.value.problems


def test_bad_base_url_is_named() -> None:
    assert problems("providers:\n  openai: {format: openai, base_url: api.openai.com}\n") == [
        "lunos.yaml: providers.openai.base_url: expected an http(s) URL"
    ]


def test_unknown_keys_are_errors_at_every_level() -> None:
    text = """
serverr: {}
server: {prot: 8080}
providers:
  p: {format: openai, base_url: "http://x", api_kee: k}
"""
    assert problems(text) == [
        "lunos.yaml: (top): unknown key 'serverr' (did you mean server?)",
        "lunos.yaml: server: object contains unknown field prot (did you mean port?)",
        "lunos.yaml: providers.p: object contains unknown field api_kee (did you mean api_key?)",
    ]
    assert problems("zzz: 1\nserver: {qqqq: 1}") == [
        "lunos.yaml: (top): unknown key 'zzz'",
        "lunos.yaml: server: object contains unknown field qqqq",
    ]


def test_numbers_and_switches_can_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LUNOS_TEST_PORT", "9001")
    monkeypatch.delenv("LUNOS_TEST_UNSET", raising=False)
    cfg = parse_config(
        "server: {port: '${LUNOS_TEST_PORT}', admin_port: '${LUNOS_TEST_UNSET:-9002}',"
        " shutdown_grace_seconds: '${LUNOS_TEST_UNSET:-2.5}', allow_unauthenticated: '${LUNOS_TEST_UNSET:-true}'}",
        "x.yaml",
    )
    assert (cfg.server.port, cfg.server.admin_port) == (9001, 9002)
    assert (cfg.server.shutdown_grace_seconds, cfg.server.allow_unauthenticated) == (2.5, True)
    monkeypatch.setenv("LUNOS_TEST_PORT", "eighty")
    assert problems("server: {port: '${LUNOS_TEST_PORT}'}") == [
        "lunos.yaml: server.port: expected int, got str"]


def test_shell_style_references_are_not_sent_as_they_are() -> None:
    text = """
providers:
  a: {format: openai, base_url: "http://x", api_key: $OPENAI_API_KEY}
  b: {format: openai, base_url: "http://x", api_key: "${OPENAI_API_KEY"}
  c: {format: openai, base_url: "http://x", api_key: "sk-$ok-${LUNOS_TEST_UNSET:-x}"}
  d: {format: openai, base_url: "http://x", api_key: "${LUNOS_TEST_UNSET:-${OTHER}}"}
  e: {format: openai, base_url: "http://x", api_key: "${LUNOS_TEST_UNSET:-x}}"}
  f: {format: openai, base_url: "http://x", api_key: "Bearer $OPENAI_API_KEY"}
  g: {format: openai, base_url: "http://x", api_key: "${X-abc}"}
"""
    wrong = ("a '${' that begins no ${NAME} or ${NAME:-default} reference "
             "(references do not nest; $$ is a $)")
    shell = "$OPENAI_API_KEY is not read from the environment: write ${OPENAI_API_KEY} (and $$ for a $)"
    assert problems(text) == [
        f"lunos.yaml: providers.a.api_key: {shell}",
        f"lunos.yaml: providers.b.api_key: {wrong}",
        f"lunos.yaml: providers.d.api_key: {wrong}",
        "lunos.yaml: providers.e.api_key: a '}' too many after a ${...} reference",
        f"lunos.yaml: providers.f.api_key: {shell}",
        f"lunos.yaml: providers.g.api_key: {wrong}",
    ]


def test_a_dollar_is_written_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LUNOS_TEST_UNSET", raising=False)
    cfg = parse_config(
        'providers: {p: {format: openai, base_url: "http://x", api_key: "pa$$word-$${X}-${LUNOS_TEST_UNSET:-d}"}}',
        "x.yaml",
    )
    assert cfg.providers["p"].api_key == "pa$word-${X}-d"


def test_a_wrong_choice_lists_the_choices_and_is_named_once() -> None:
    text = """
providers: {demo: {format: demoo, base_url: "http://x"}}
models: {m: {deployments: [{provider: demo, model: a}]}, n: {deployments: [{provider: demo, model: b}]}}
pipeline: [{name: logger, settings: {address: truncate}}]
"""
    assert problems(text) == [
        "lunos.yaml: providers.demo.format: invalid enum value 'demoo' "
        "(one of: openai, anthropic, azure, gemini, demo)",
        "lunos.yaml: pipeline[0].settings.address: invalid enum value 'truncate' "
        "(one of: full, truncated, hashed, dropped)",
    ]


def test_missing_env_var_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LUNOS_TEST_MISSING_KEY", raising=False)
    monkeypatch.setenv("LUNOS_TEST_PRESENT", "sk-from-env")
    text = """
providers:
  a: {format: openai, base_url: "http://x", api_key: "${LUNOS_TEST_MISSING_KEY}"}
  b: {format: openai, base_url: "http://x", api_key: "${LUNOS_TEST_PRESENT}"}
  c: {format: openai, base_url: "${LUNOS_TEST_UNSET_URL:-http://fallback:1/v1}"}
"""
    assert problems(text) == [
        "lunos.yaml: providers.a.api_key: environment variable LUNOS_TEST_MISSING_KEY is not set"
    ]
    good = text.replace("${LUNOS_TEST_MISSING_KEY}", "literal")
    cfg = parse_config(good, "x.yaml")
    assert cfg.providers["b"].api_key == "sk-from-env"
    assert cfg.providers["c"].base_url == "http://fallback:1/v1"


def test_wrong_types_are_named() -> None:
    text = """
server: {port: eighty}
providers:
  p: {format: openai, base_url: "http://x", timeouts: {idle: soon}}
pipeline:
  - {name: request_id, settings: {trust_incoming: maybe}}
"""
    assert problems(text) == [
        "lunos.yaml: server.port: expected int, got str",
        "lunos.yaml: providers.p.timeouts.idle: expected float, got str",
        "lunos.yaml: pipeline[0].settings.trust_incoming: expected bool, got str",
    ]


def test_all_problems_are_reported_not_just_the_first() -> None:
    text = """
providers:
  p: {format: openai, base_url: "ftp://x", max_connections: 0}
models:
  m: {deployments: [{provider: nowhere, model: x, weight: 0}]}
  n: {aliases: [m], deployments: []}
pipeline:
  - name: no_such_plugin
"""
    got = problems(text)
    assert got[:6] == [
        "lunos.yaml: providers.p.base_url: expected an http(s) URL",
        "lunos.yaml: providers.p.max_connections: must be at least 1",
        "lunos.yaml: models.m.deployments[0].provider: unknown provider 'nowhere'",
        "lunos.yaml: models.m.deployments[0].weight: must be greater than 0",
        "lunos.yaml: models.n.deployments: needs at least one deployment",
        "lunos.yaml: models.n.aliases: 'm' is already a name of 'm'",
    ]
    assert got[6].startswith("lunos.yaml: pipeline[0].name: unknown plugin 'no_such_plugin' (installed: ")
    assert len(got) == 7


def test_yaml_syntax_error_names_the_line() -> None:
    assert problems("server:\n  port: [8080\n") == [
        "lunos.yaml:3: (yaml): not valid YAML: expected ',' or ']', but got '<stream end>' (column 1)"]


@pytest.mark.parametrize("text, problem", [
    ("server:\n  port: 1\n host: x\n",
     "3: (yaml): the indentation does not line up with the lines above (column 2)"),
    ("server:\n\tport: 1\n", "2: (yaml): a tab: indent with spaces (column 1)"),
    ("server:\n  port: 1\n    host: x\n",
     "3: (yaml): a ':' where a value was expected (a key indented too far, or a value "
     "holding ': ' that needs quotes) (column 9)"),
])
def test_the_usual_yaml_mistakes_are_said_plainly(text: str, problem: str) -> None:
    assert problems(text) == ["lunos.yaml:" + problem]


def shipped_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment the shipped configs reference, with usable values."""
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AZURE_OPENAI_API_KEY", "GROQ_API_KEY", "GEMINI_API_KEY",
                 "LUNOS_ADMIN_TOKEN"):
        monkeypatch.setenv(name, "test-value-for-" + name.lower())
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "https://example.openai.azure.com")
    monkeypatch.setenv("LUNOS_HASH_SECRET", "shipped-config-test-hash-secret-0123456789")
    monkeypatch.setenv("LUNOS_ENCRYPTION_KEYS", generate_encryption_key())


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_loads(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shipped_env(monkeypatch)
    config = load_config(path)
    assert config.models, f"{path.name} defines no models"


def test_check_command_exit_codes_and_output(tmp_path: Path) -> None:
    good = subprocess.run([sys.executable, "-m", "lunos_proxy", "check", "--config",
                           str(ROOT / "config" / "lunos.yaml")], capture_output=True, text=True)
    assert good.returncode == 0, good.stderr
    assert good.stdout.startswith("lunos.yaml: ok")
    bad = tmp_path / "broken.yaml"
    bad.write_text("providers:\n  openai: {format: openai, base_url: nope}\n")
    res = subprocess.run([sys.executable, "-m", "lunos_proxy", "check", "--config", str(bad)],
                         capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr == "broken.yaml: providers.openai.base_url: expected an http(s) URL\n"


def test_values_that_would_break_requests_are_refused() -> None:
    text = """
secrets: {hash_secret: too-short}
providers:
  p: {format: openai, base_url: "http://x", timeouts: {idle: .nan}}
models:
  m:
    deployments:
      - {provider: p, model: a, weight: .nan}
      - {provider: p, model: b, weight: .inf, timeouts: {connect: .nan}}
pipeline:
  - name: router
    settings: {max_attempts: 0, deadline_seconds: 0, breaker: {window_seconds: 0, probes: 0}}
"""
    found = problems(text)
    for expected in (
        "lunos.yaml: secrets.hash_secret: must be at least 32 characters",
        "lunos.yaml: providers.p.timeouts.idle: must be greater than 0",
        "lunos.yaml: models.m.deployments[0].weight: must be greater than 0",
        "lunos.yaml: models.m.deployments[1].weight: must be greater than 0",
        "lunos.yaml: models.m.deployments[1].timeouts.connect: must be greater than 0",
    ):
        assert expected in found, found
    assert "lunos.yaml: pipeline[0].settings.max_attempts: expected int >= 1" in found, found


@pytest.mark.parametrize("settings, problem", [
    ("{deadline_seconds: 0}", "deadline_seconds: expected float > 0.0"),
    ("{breaker: {window_seconds: 0}}", "breaker.window_seconds: expected float > 0.0"),
    ("{breaker: {probes: 0}}", "breaker.probes: expected int >= 1"),
    ("{breaker: {failure_rate: 1.5}}", "breaker.failure_rate: expected float <= 1.0"),
])
def test_router_settings_that_would_stop_every_request_are_refused(settings: str, problem: str) -> None:
    assert problems(f"pipeline:\n  - {{name: router, settings: {settings}}}\n") == [
        f"lunos.yaml: pipeline[0].settings.{problem}"]
