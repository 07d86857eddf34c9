"""The careless operator: open relays, out-of-range numbers, repeated keys and
missing files are refused with a line naming the file, the place and the
problem; `check` and `serve` exit 2 and never print a traceback."""

from __future__ import annotations

import asyncio
import copy
import errno
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from lunos_proxy.app import Gateway
from lunos_proxy.config import Config, ConfigError
from lunos_proxy.loading import load_config, parse_config
from lunos_proxy.plugin import find_plugin
from tests.conftest import ADMIN_TOKEN, GatewayFactory, basic_config, free_port
from tests.fakes import FakeProvider
from tests.test_config import SHIPPED, shipped_env

ROOT = Path(__file__).resolve().parent.parent


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_config(text, "/etc/lunos/lunos.yaml")
    return e.value.problems


def run(*args: str, cwd: Path | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lunos_proxy", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def write(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def open_relay(provider_url: str = "http://127.0.0.1:9/v1", **server: Any) -> dict[str, Any]:
    """A config forwarding to a paid provider on every address, with no auth."""
    return basic_config(provider_url, server={"host": "0.0.0.0", **server})


RELAY = (": server.host: 0.0.0.0 is reachable from other machines, and no plugin in the "
         "pipeline authenticates, so anyone could spend the providers' keys: add the auth "
         "plugin to the pipeline, bind 127.0.0.1, or set server.allow_unauthenticated: true")


# -- shipped configs --------------------------------------------------------

@pytest.fixture
async def started() -> AsyncIterator[list[Gateway]]:
    gateways: list[Gateway] = []
    yield gateways
    for gateway in gateways:
        await gateway.close()


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
async def test_every_shipped_config_refuses_a_request_without_a_key(
    path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, provider: FakeProvider,
    started: list[Gateway],
) -> None:
    shipped_env(monkeypatch)
    monkeypatch.chdir(tmp_path)  # the data files the configs name land here
    config = load_config(path)
    assert any(find_plugin(entry.name).authenticates for entry in config.pipeline)
    for p in config.providers.values():
        if p.format != "demo":
            p.base_url = provider.base_url
    config.store.url, config.store.options = "memory://", {}
    gateway = Gateway(config)
    await gateway.start()
    started.append(gateway)
    runner = web.AppRunner(gateway.public_app(), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        public, model = next(iter(config.models.items()))
        fmt = config.providers[model.deployments[0].provider].format
        route = "/v1/messages" if fmt == "anthropic" else "/v1/chat/completions"
        body = {"model": public, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
        async with aiohttp.ClientSession() as s, s.post(f"http://127.0.0.1:{port}{route}", json=body) as r:
            assert r.status == 401
            error = (await r.json())["error"]
        assert error["type"] == ("authentication_error" if fmt == "anthropic" else "invalid_request_error")
        assert provider.received == []
    finally:
        await runner.cleanup()


# -- open relays --------------------------------------------------------------

def test_check_and_serve_refuse_an_open_relay(tmp_path: Path) -> None:
    path = write(tmp_path / "relay.yaml", open_relay())
    for command in (["check"], ["serve", "--port", str(free_port()), "--admin-port", str(free_port())]):
        res = run(*command, "--config", str(path))
        assert (res.returncode, res.stderr) == (2, "relay.yaml" + RELAY + "\n"), res.stderr


def test_serve_refuses_a_host_override_that_opens_a_loopback_config(tmp_path: Path) -> None:
    path = write(tmp_path / "local.yaml", basic_config("http://127.0.0.1:9/v1"))
    assert run("check", "--config", str(path)).returncode == 0
    res = run("serve", "--config", str(path), "--host", "0.0.0.0", "--port", str(free_port()))
    assert res.returncode == 2
    assert res.stderr == "local.yaml" + RELAY + " (--host 0.0.0.0)\n"


@pytest.mark.parametrize("server, pipeline, providers", [
    ({"host": "127.0.0.1"}, [{"name": "request_id"}], None),
    ({"host": "::1"}, [{"name": "request_id"}], None),
    ({"host": "localhost"}, [{"name": "request_id"}], None),
    ({"host": "0.0.0.0"}, [{"name": "request_id"}, {"name": "auth"}], None),
    ({"host": "0.0.0.0"}, [{"name": "request_id"}], {"demo": {"format": "demo"}}),
], ids=["ipv4-loopback", "ipv6-loopback", "localhost", "with-auth", "demo-only"])
def test_configs_that_are_no_open_relay_load(
    server: dict[str, Any], pipeline: list[dict[str, Any]], providers: dict[str, Any] | None
) -> None:
    config = basic_config("http://127.0.0.1:9/v1", server=server, pipeline=pipeline)
    if providers is not None:
        config["providers"] = providers
        config["models"] = {"m": {"deployments": [{"provider": "demo", "model": "demo-chat"}]}}
    assert isinstance(parse_config(yaml.safe_dump(config), "x.yaml"), Config)


def test_every_address_and_a_lan_address_count_as_public() -> None:
    for host in ("", "::", "192.168.1.10", "lunos.internal"):
        config = basic_config("http://127.0.0.1:9/v1", server={"host": host})
        found = problems(yaml.safe_dump(config))
        assert len(found) == 1 and found[0].startswith("lunos.yaml: server.host: "), found


async def test_allow_unauthenticated_serves_and_warns_at_every_start(
    tmp_path: Path, provider: FakeProvider
) -> None:
    path = write(tmp_path / "open.yaml", open_relay(provider.base_url, allow_unauthenticated=True))
    check = run("check", "--config", str(path))
    assert check.returncode == 0
    port = free_port()
    assert check.stderr.endswith(
        "open.yaml: warning: server.allow_unauthenticated: requests to 0.0.0.0:8080 are "
        "forwarded to providers without an API key\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lunos_proxy", "serve", "--config", str(path), "--port", str(port),
        "--admin-port", str(free_port()), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        while not any('"listening"' in line for line in lines):
            line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
            assert line, "serve ended: " + (await proc.stderr.read()).decode()  # type: ignore[union-attr]
            lines.append(line)
        [warning] = [yaml.safe_load(line) for line in lines if "unauthenticated_listener" in line]
        assert warning["level"] == "warning"
        assert warning["detail"] == (f"server.allow_unauthenticated: requests to 0.0.0.0:{port} "
                                     "are forwarded to providers without an API key")
        body = {"model": "gpt-test", "messages": []}
        async with aiohttp.ClientSession() as s:
            async with s.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body) as r:
                assert r.status == 200
    finally:
        proc.terminate()
        await proc.wait()


# -- numbers ------------------------------------------------------------------

def _plugin(name: str, settings: str) -> str:
    return f"pipeline:\n  - {{name: {name}, settings: {settings}}}\n"


_MODEL = ("providers: {p: {format: openai, base_url: 'http://x'}}\n"
          "models: {m: {deployments: [{provider: p, model: a, DEPLOY}]}}\n")


@pytest.mark.parametrize("text, problem", [
    ("server: {port: -1}", "server.port: expected int >= 0"),
    ("server: {admin_port: 70000}", "server.admin_port: expected int <= 65535"),
    ("server: {shutdown_grace_seconds: -1}", "server.shutdown_grace_seconds: expected float >= 0.0"),
    ("server: {watch_config_seconds: .inf}", "server.watch_config_seconds: expected float <= 1000000000.0"),
    ("server: {max_body_bytes: 10}", "server.max_body_bytes: must be at least 1024"),
    (_MODEL.replace("DEPLOY", "priority: 0"), "models.m.deployments[0].priority: expected int >= 1"),
    (_MODEL.replace("DEPLOY", "price: -0.1"), "models.m.deployments[0].price: expected float >= 0.0"),
    (_MODEL.replace("DEPLOY", "capacity: {requests_per_minute: -5}"),
     "models.m.deployments[0].capacity.requests_per_minute: must be greater than 0"),
    ("console: {sign_in: {per_address: 0}}", "console.sign_in.per_address: expected int >= 1"),
    ("console: {code_ttl_seconds: .nan}", "console.code_ttl_seconds: expected float > 0.0"),
    ("console: {rotation_grace_seconds: -1}", "console.rotation_grace_seconds: expected float >= 0.0"),
    (_plugin("abuse", "{plans: {free: {key: {requests_per_minute: -5}}}}"),
     "pipeline[0].settings.plans.free.key.requests_per_minute: expected int >= 0"),
    (_plugin("abuse", "{plans: {free: {account_model: {concurrent: -1}}}}"),
     "pipeline[0].settings.plans.free.account_model.concurrent: expected int >= 0"),
    (_plugin("abuse", "{plans: {p: {safe_tokens_per_minute: -1}}}"),
     "pipeline[0].settings.plans.p.safe_tokens_per_minute: expected int >= 0"),
    (_plugin("abuse", "{address: {tokens_per_day: -1}}"),
     "pipeline[0].settings.address.tokens_per_day: expected int >= 0"),
    (_plugin("abuse", "{tokens: {default_max_tokens: -1}}"),
     "pipeline[0].settings.tokens.default_max_tokens: expected int >= 0"),
    (_plugin("abuse", "{tokens: {bytes_per_token: 0}}"),
     "pipeline[0].settings.tokens.bytes_per_token: expected float > 0.0"),
    (_plugin("abuse", "{auth_failures: {limit: -1}}"), "pipeline[0].settings.auth_failures.limit: expected int >= 0"),
    (_plugin("abuse", "{auth_failures: {window: 0}}"),
     "pipeline[0].settings.auth_failures.window: expected float > 0.0"),
    (_plugin("abuse", "{auth_failures: {ban_seconds: .inf}}"),
     "pipeline[0].settings.auth_failures.ban_seconds: expected float <= 1000000000.0"),
    (_plugin("abuse", "{sizes: {max_messages: -1}}"), "pipeline[0].settings.sizes.max_messages: expected int >= 0"),
    (_plugin("abuse", "{anomaly: {alpha: 1.5}}"), "pipeline[0].settings.anomaly.alpha: expected float <= 1.0"),
    (_plugin("abuse", "{anomaly: {factor: -2}}"), "pipeline[0].settings.anomaly.factor: expected float > 0.0"),
    (_plugin("abuse", "{anomaly: {min_tokens_per_minute: -1}}"),
     "pipeline[0].settings.anomaly.min_tokens_per_minute: expected int >= 0"),
    (_plugin("abuse", "{concurrency_ttl: 1}"), "pipeline[0].settings.concurrency_ttl: expected float >= 3.0"),
    (_plugin("abuse", "{local_share: 0}"), "pipeline[0].settings.local_share: expected float > 0.0"),
    (_plugin("abuse", "{retry_store_after: -1}"), "pipeline[0].settings.retry_store_after: expected float > 0.0"),
    (_plugin("auth", "{cache_ttl: -1}"), "pipeline[0].settings.cache_ttl: expected float >= 0.0"),
    (_plugin("auth", "{negative_ttl: .nan}"), "pipeline[0].settings.negative_ttl: expected float >= 0.0"),
    (_plugin("auth", "{cache_size: -1}"), "pipeline[0].settings.cache_size: expected int >= 0"),
    (_plugin("logger", "{user_agent_length: 9999}"),
     "pipeline[0].settings: user_agent_length must be between 0 and 512"),
    (_plugin("meter", "{flush_interval_seconds: 0}"),
     "pipeline[0].settings.flush_interval_seconds: expected float > 0.0"),
    (_plugin("meter", "{max_pending_events: 0}"), "pipeline[0].settings.max_pending_events: expected int >= 1"),
    (_plugin("meter", "{events_retention_days: -1}"),
     "pipeline[0].settings.events_retention_days: expected int >= 1"),
    (_plugin("meter", "{budgets: {refresh_seconds: -1}}"),
     "pipeline[0].settings.budgets.refresh_seconds: expected float >= 0.0"),
    (_plugin("meter", "{budgets: {accounts: {a: {daily: -1}}}}"),
     "pipeline[0].settings.budgets: budget amounts need at most 6 decimals and must be >= 0"),
    (_plugin("meter", "{webhook: {url: 'http://x', secret: s, max_attempts: 0}}"),
     "pipeline[0].settings.webhook.max_attempts: expected int >= 1"),
    (_plugin("meter", "{webhook: {url: 'http://x', secret: s, timeout_seconds: -1}}"),
     "pipeline[0].settings.webhook.timeout_seconds: expected float > 0.0"),
    (_plugin("router", "{max_cooldown_seconds: -1}"),
     "pipeline[0].settings.max_cooldown_seconds: expected float >= 0.0"),
    (_plugin("router", "{breaker: {open_seconds: .inf}}"),
     "pipeline[0].settings.breaker.open_seconds: expected float <= 1000000000.0"),
])
def test_numbers_out_of_range_are_refused_naming_the_path(text: str, problem: str) -> None:
    assert problems(text) == ["lunos.yaml: " + problem]


def test_redis_options_are_bounded_when_the_store_opens() -> None:
    from lunos_proxy.store.redis import RedisStore

    with pytest.raises(Exception, match=r"Expected `int` >= 1 - at `\$.max_connections`"):
        RedisStore("redis://127.0.0.1:1/0", max_connections=0)


async def test_negative_limit_is_refused_by_a_reload_and_the_old_config_stays(
    provider: FakeProvider, make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    good = basic_config(provider.base_url, pipeline=[
        {"name": "request_id"},
        {"name": "abuse", "settings": {"address": {"requests_per_minute": 100}}},
    ])
    gw = await make_gateway(good)
    before = gw.gateway.config
    bad = copy.deepcopy(good)
    bad["pipeline"][1]["settings"]["address"]["requests_per_minute"] = -5
    path = write(tmp_path / "lunos.yaml", bad)
    gw.gateway.reloader.path = str(path)
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.admin_url + "/admin/reload", headers=headers) as r:
            assert r.status == 422
            assert (await r.json())["problems"] == [
                "lunos.yaml: pipeline[1].settings.address.requests_per_minute: expected int >= 0"]
        async with s.post(gw.v1 + "/chat/completions", json={"model": "gpt-test", "messages": []}) as r:
            assert r.status == 200
    assert gw.gateway.config is before
    res = run("check", "--config", str(path))
    assert (res.returncode, res.stderr) == (
        2, "lunos.yaml: pipeline[1].settings.address.requests_per_minute: expected int >= 0\n")


# -- duplicate keys -------------------------------------------------------------

def test_a_key_given_twice_is_refused_with_its_line_and_path() -> None:
    text = """\
server:
  port: 8080
  host: 127.0.0.1
  port: 8081
pipeline:
  - name: abuse
    settings:
      plans:
        free: {key: {requests_per_minute: 10, requests_per_minute: 20}}
"""
    assert problems(text) == [
        "lunos.yaml:4: server.port: duplicate key (first given on line 2)",
        "lunos.yaml:9: pipeline[0].settings.plans.free.key.requests_per_minute: "
        "duplicate key (first given on line 9)",
    ]


def test_a_key_given_twice_in_the_pricing_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "pricing.yaml").write_text(
        "currency: USD\ncurrency: EUR\nmodels: {}\n")
    path = write(tmp_path / "lunos.yaml", basic_config(
        "http://127.0.0.1:9/v1", pipeline=[{"name": "meter", "settings": {"pricing": "pricing.yaml"}}]))
    res = run("check", "--config", str(path))
    assert (res.returncode, res.stderr) == (
        2, "pricing.yaml:2: currency: duplicate key (first given on line 1)\n")


# -- files ----------------------------------------------------------------------

def test_a_missing_pricing_file_is_refused_by_check_with_its_full_path(tmp_path: Path) -> None:
    path = write(tmp_path / "lunos.yaml", basic_config(
        "http://127.0.0.1:9/v1", pipeline=[{"name": "meter", "settings": {"pricing": "prices.yaml"}}]))
    res = run("check", "--config", str(path))
    assert (res.returncode, res.stderr) == (
        2, f"lunos.yaml: pipeline[0].settings.pricing: cannot read {tmp_path / 'prices.yaml'}: no such file\n")


def test_a_broken_pricing_file_is_refused_by_check(tmp_path: Path) -> None:
    (tmp_path / "pricing.yaml").write_text("models: {m: [{from: 2024-01-01, input: -1, output: 1}]}\n")
    path = write(tmp_path / "lunos.yaml", basic_config(
        "http://127.0.0.1:9/v1", pipeline=[{"name": "meter", "settings": {"pricing": "pricing.yaml"}}]))
    res = run("check", "--config", str(path))
    assert res.returncode == 2
    assert res.stderr.startswith("pricing.yaml: models.m[0].input: "), res.stderr


def test_tls_files_are_checked(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("not a certificate\n")
    found = problems(yaml.safe_dump(basic_config(
        "http://127.0.0.1:9/v1", server={"tls": {"cert_file": str(tmp_path / "cert.pem"),
                                                 "key_file": "tls/key.pem"}})))
    assert found == ["lunos.yaml: server.tls.key_file: cannot read /etc/lunos/tls/key.pem: no such file"]
    (tmp_path / "key.pem").write_text("not a key\n")
    found = problems(yaml.safe_dump(basic_config(
        "http://127.0.0.1:9/v1", server={"tls": {"cert_file": str(tmp_path / "cert.pem"),
                                                 "key_file": str(tmp_path / "key.pem")}})))
    assert len(found) == 1 and found[0].startswith(
        "lunos.yaml: server.tls: cannot use the certificate and key: "), found


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    (folder / "pricing.yaml").write_text("currency: EUR\nmodels: {}\n")
    path = write(folder / "lunos.yaml", basic_config(
        "http://127.0.0.1:9/v1", pipeline=[{"name": "meter", "settings": {"pricing": "pricing.yaml"}}]))
    elsewhere = tmp_path / "work"
    elsewhere.mkdir()
    res = run("check", "--config", str(path), cwd=elsewhere)
    assert res.returncode == 0, res.stderr
    assert "pricing" not in res.stderr
    cwd = os.getcwd()
    os.chdir(elsewhere)
    try:
        config = load_config(Path("..") / "etc" / "lunos.yaml")
    finally:
        os.chdir(cwd)
    assert config.plugin_settings[0].pricing == str(elsewhere / ".." / "etc" / "pricing.yaml")
    # The default config (what `make run` serves) finds its pricing table beside it.
    res = run("check", "--config", str(ROOT / "config" / "lunos.yaml"), cwd=elsewhere)
    assert res.returncode == 0, res.stderr


# -- serve ------------------------------------------------------------------------

def test_serve_with_a_broken_config_exits_2_without_a_traceback(tmp_path: Path) -> None:
    config = basic_config("http://127.0.0.1:9/v1", pipeline=[
        {"name": "abuse", "settings": {"plans": {"p": {"key": {"requests_per_minute": -5}}}}},
        {"name": "meter", "settings": {"pricing": "missing.yaml"}},
    ])
    path = write(tmp_path / "lunos.yaml", config)
    res = run("serve", "--config", str(path), "--port", str(free_port()))
    assert res.returncode == 2
    assert res.stderr.splitlines() == [
        "lunos.yaml: pipeline[0].settings.plans.p.key.requests_per_minute: expected int >= 0",
        f"lunos.yaml: pipeline[1].settings.pricing: cannot read {tmp_path / 'missing.yaml'}: no such file",
    ]
    assert "Traceback" not in res.stdout + res.stderr


def test_serve_on_a_port_in_use_exits_2_without_a_traceback(tmp_path: Path) -> None:
    path = write(tmp_path / "lunos.yaml", basic_config("http://127.0.0.1:9/v1"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = run("serve", "--config", str(path), "--port", str(port), "--admin-port", str(free_port()))
    assert res.returncode == 2
    assert res.stderr == f"lunos.yaml: server.port: cannot listen on 127.0.0.1:{port}: {os.strerror(errno.EADDRINUSE)}\n"
    assert "Traceback" not in res.stdout


async def test_a_reload_cannot_drop_auth_from_a_proxy_serve_put_on_the_network(
    provider: FakeProvider, make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    with_auth = basic_config(provider.base_url, pipeline=[{"name": "request_id"}, {"name": "auth"}])
    gw = await make_gateway(with_auth)
    gw.gateway.config.server.host = "0.0.0.0"  # as `serve --host 0.0.0.0` leaves it
    before = gw.gateway.config
    gw.gateway.reloader.path = str(write(tmp_path / "lunos.yaml", basic_config(provider.base_url)))
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.admin_url + "/admin/reload", headers=headers) as r:
            assert r.status == 422
            assert (await r.json())["problems"] == ["lunos.yaml" + RELAY + " (running on 0.0.0.0)"]
        async with s.post(gw.v1 + "/chat/completions", json={"model": "gpt-test", "messages": []}) as r:
            assert r.status == 401
    assert gw.gateway.config is before


def test_redis_options_are_checked_when_the_config_loads(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("a CA bundle\n")
    text = yaml.safe_dump({"store": {"url": "rediss://127.0.0.1:1/0", "options": {
        "max_connections": 0, "timeout": 0.5}}})
    assert problems(text) == ["lunos.yaml: store.options.max_connections: expected int >= 1"]
    text = yaml.safe_dump({"store": {"url": "rediss://127.0.0.1:1/0", "options": {
        "ssl_ca_certs": str(tmp_path / "ca.pem"), "ssl_certfile": "client.pem"}}})
    assert problems(text) == [
        "lunos.yaml: store.options.ssl_certfile: cannot read /etc/lunos/client.pem: no such file"]
    path = tmp_path / "lunos.yaml"
    path.write_text(text.replace(str(tmp_path / "ca.pem"), "ca.pem").replace("client.pem", "ca.pem"))
    assert load_config(path).store.options == {
        "ssl_ca_certs": str(tmp_path / "ca.pem"), "ssl_certfile": str(tmp_path / "ca.pem")}


def test_bad_encryption_keys_are_refused_by_check_and_serve(tmp_path: Path) -> None:
    config = basic_config("http://127.0.0.1:9/v1", secrets={"encryption_keys": "k1:not-32-bytes"})
    path = write(tmp_path / "lunos.yaml", config)
    line = "lunos.yaml: secrets.encryption_keys: each encryption key must be KEY_ID:BASE64URL of 32 bytes\n"
    res = run("check", "--config", str(path))
    assert (res.returncode, res.stderr) == (2, line)
    res = run("serve", "--config", str(path), "--port", str(free_port()), "--admin-port", str(free_port()))
    assert (res.returncode, res.stderr) == (2, line)


# -- files that are not UTF-8 ---------------------------------------------------------

def test_a_config_that_is_not_utf8_is_one_line_and_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "lunos.yaml"
    path.write_bytes(b"# Z\xfcrich office\n" + yaml.safe_dump(basic_config("http://127.0.0.1:9/v1")).encode())
    for command in (["check"], ["serve", "--port", str(free_port()), "--admin-port", str(free_port())]):
        res = run(*command, "--config", str(path))
        assert (res.returncode, res.stderr) == (2, "lunos.yaml: (file): not UTF-8 text (byte 3)\n")
        assert "Traceback" not in res.stdout


def test_a_pricing_file_that_is_not_utf8_is_named_by_check(tmp_path: Path) -> None:
    (tmp_path / "pricing.yaml").write_bytes(b"currency: EUR\n# \xe9t\xe9\n")
    path = write(tmp_path / "lunos.yaml", basic_config("http://127.0.0.1:9/v1", pipeline=[
        {"name": "meter", "settings": {"pricing": "pricing.yaml"}}]))
    res = run("check", "--config", str(path))
    assert (res.returncode, res.stderr) == (2, "pricing.yaml: (file): not UTF-8 text (byte 16)\n")


async def test_a_reload_of_a_file_that_is_not_utf8_is_refused_and_counted(
    provider: FakeProvider, make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw = await make_gateway(basic_config(provider.base_url))
    before = gw.gateway.config
    path = tmp_path / "lunos.yaml"
    path.write_bytes(b"# \xff\n" + yaml.safe_dump(basic_config(provider.base_url)).encode())
    gw.gateway.reloader.path = str(path)
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.admin_url + "/admin/reload", headers=headers) as r:
            assert r.status == 422
            assert (await r.json())["problems"] == ["lunos.yaml: (file): not UTF-8 text (byte 2)"]
    assert gw.gateway.config is before
    rejected = gw.gateway.metrics.config_reloads.labels("rejected")._value.get()
    assert rejected == 1


def _catches_sighup(pid: int) -> bool:
    """Whether the process has a handler for SIGHUP (its SigCgt mask in /proc)."""
    status = Path(f"/proc/{pid}/status").read_text()
    [mask] = [line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")]
    return bool(int(mask, 16) & (1 << (signal.SIGHUP - 1)))


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def test_a_sighup_while_serve_starts_is_kept_for_after_it_listens(
    provider: FakeProvider, tmp_path: Path
) -> None:
    """SIGHUP's default action ends a process: one that comes while `serve`
    reads its config and starts must neither end it nor be lost."""
    port, admin_port = free_port(), free_port()
    path = write(tmp_path / "lunos.yaml", basic_config(provider.base_url))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lunos_proxy", "serve", "--config", str(path), "--port", str(port),
        "--admin-port", str(admin_port), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        for _ in range(4000):
            if _catches_sighup(proc.pid):
                break
            await asyncio.sleep(0.002)
        # Caught from the start of `serve`, long before its listeners exist.
        assert not _listening(port) and not _listening(admin_port)
        proc.send_signal(signal.SIGHUP)
        assert proc.stdout is not None
        lines: list[str] = []
        while not any('"config_reloaded"' in line for line in lines):
            line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
            assert line, "serve ended: " + (await proc.stderr.read()).decode()  # type: ignore[union-attr]
            lines.append(line)
        assert any('"listening"' in line for line in lines[:-1])  # reloaded once serving
        assert proc.returncode is None
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{port}/healthz") as r:
                assert r.status == 200
    finally:
        proc.terminate()
        await proc.wait()


# -- a base URL that is an endpoint; a config with no models ---------------------------

@pytest.mark.parametrize("url", [
    "https://api.openai.com/v1/chat/completions",
    "https://api.anthropic.com/v1/messages/",
    "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:generateContent",
])
def test_a_base_url_that_names_an_endpoint_is_refused(url: str) -> None:
    text = yaml.safe_dump({"providers": {"p": {"format": "openai", "base_url": url}}})
    assert problems(text) == [
        "lunos.yaml: providers.p.base_url: give the API's base (such as "
        "https://api.openai.com/v1), not one of its endpoints"]


def test_check_warns_when_no_model_is_configured(tmp_path: Path) -> None:
    path = tmp_path / "lunos.yaml"
    path.write_text("# nothing yet\n")
    res = run("check", "--config", str(path))
    assert res.returncode == 0
    assert res.stdout == "lunos.yaml: ok (0 providers, 0 models, 0 plugins)\n"
    assert res.stderr.endswith(
        "lunos.yaml: warning: models: none configured: every API request would be answered 404\n")
