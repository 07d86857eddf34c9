"""Shared fixtures: a fake provider on loopback and a real gateway in-process.

The gateway runs on real sockets (public and admin listeners on free
loopback ports) so the official SDKs talk to it exactly as to a deployed
proxy. Redis fixtures start their own redis-server processes
(tests/redis_servers.py); the machine's shared Redis is never touched.
"""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from lunos_proxy.app import Gateway
from lunos_proxy.connections import admin_runner, public_runner
from lunos_proxy.loading import parse_config
from tests.fakes import FakeProvider
from tests.fakes import start_site as start_site  # tests import it from here
from tests.logcapture import captured_logs, fresh_logging  # noqa: F401  (fixtures)
from tests.pg_servers import *  # noqa: F403  (fixtures)
from tests.redis_servers import *  # noqa: F403  (fixtures)
from tests.redis_servers import free_port as free_port  # tests import it from here


@dataclass
class Running:
    gateway: Gateway
    url: str  # http://127.0.0.1:PORT
    admin_url: str

    @property
    def v1(self) -> str:
        return self.url + "/v1"


# The full-scope admin token every test config accepts (admin API calls send it).
ADMIN_TOKEN = "lat-test-bootstrap-admin-token-0123456789abcdef"
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def basic_config(provider_url: str, *, fmt: str = "openai", **extra: Any) -> dict[str, Any]:
    """A config with one fake provider serving `gpt-test` and `claude-test`."""
    config: dict[str, Any] = {
        "store": {"url": "memory://"},
        "records": {"url": "sqlite://"},  # in memory: nothing left behind
        "providers": {
            "fake": {"format": fmt, "base_url": provider_url, "api_key": "sk-provider-secret"},
            "fake-anthropic": {
                "format": "anthropic",
                "base_url": provider_url,
                "api_key": "sk-ant-provider-secret",
            },
        },
        "models": {
            "gpt-test": {"aliases": ["gpt-alias"], "deployments": [{"provider": "fake", "model": "gpt-upstream"}]},
            "gpt-same": {"deployments": [{"provider": "fake", "model": "gpt-same"}]},
            "claude-test": {"deployments": [{"provider": "fake-anthropic", "model": "claude-upstream"}]},
        },
        "pipeline": [{"name": "request_id"}],
        "admin": {"token": ADMIN_TOKEN},
    }
    config.update(extra)
    return config


GatewayFactory = Callable[..., Awaitable[Running]]


@pytest.fixture
async def provider() -> AsyncIterator[FakeProvider]:
    fake = FakeProvider()
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
async def make_gateway() -> AsyncIterator[GatewayFactory]:
    """Start gateways from a config dict or YAML text; all stopped at teardown."""
    started: list[tuple[Gateway, web.AppRunner, web.AppRunner]] = []

    async def start(config: dict[str, Any] | str, *, grace: float = 5.0) -> Running:
        text = config if isinstance(config, str) else yaml.safe_dump(config)
        cfg = parse_config(textwrap.dedent(text), "test.yaml")
        gateway = Gateway(cfg)
        await gateway.start()
        # The listeners `lunos-proxy serve` runs (connection rules, no auto-decompression).
        public = public_runner(gateway.public_app(), cfg.server, shutdown_timeout=grace)
        admin = admin_runner(gateway.admin_app(), cfg.server)
        await public.setup()
        await admin.setup()
        port, admin_port = await start_site(public), await start_site(admin)
        # The config names the listeners, as `lunos-proxy serve` makes it do.
        server = gateway.config.server
        server.host = server.admin_host = "127.0.0.1"
        server.port, server.admin_port = port, admin_port
        started.append((gateway, public, admin))
        return Running(gateway, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}")

    yield start
    for gateway, public, admin in reversed(started):
        await public.cleanup()
        await admin.cleanup()
        await gateway.close()


@pytest.fixture
async def gw(provider: FakeProvider, make_gateway: GatewayFactory) -> Running:
    """The common case: a gateway in front of the fake provider."""
    return await make_gateway(basic_config(provider.base_url))


def shipped_config() -> dict[str, Any]:
    """config/lunos.yaml as a dict for `make_gateway`: on a store of its own,
    the test admin token, no files in data/, and its pricing table found
    where the file's folder puts it."""
    folder = Path(__file__).resolve().parent.parent / "config"
    config: dict[str, Any] = yaml.safe_load((folder / "lunos.yaml").read_text())
    config["store"]["url"] = "memory://"
    config["records"]["url"] = "sqlite://"
    config["admin"] = {"token": ADMIN_TOKEN}
    config["secrets"]["key_file"] = ""  # encryption key random for the test, not in data/
    for entry in config["pipeline"]:
        if entry["name"] == "meter":
            entry["settings"]["pricing"] = str(folder / entry["settings"]["pricing"])
    return config
