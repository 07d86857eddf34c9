"""Header hygiene: keys stay on their side of the proxy, hop-by-hop headers stop here."""

from __future__ import annotations

import aiohttp

from tests.conftest import GatewayFactory, Running, basic_config
from tests.fakes import FakeProvider

CLIENT_KEY = "lk-client-only-key-123"


async def test_client_key_is_replaced_by_provider_key(gw: Running, provider: FakeProvider) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.post(
            gw.v1 + "/chat/completions",
            json={"model": "gpt-test", "messages": []},
            headers={
                "Authorization": f"Bearer {CLIENT_KEY}",
                "x-api-key": CLIENT_KEY,
                "api-key": CLIENT_KEY,
                "Cookie": "session=abc",
                "Connection": "keep-alive, x-custom-hop",
                "Keep-Alive": "timeout=5",
                "TE": "trailers",
                "X-Forwarded-For": "10.0.0.1",
                "OpenAI-Beta": "assistants=v2",
            },
        ) as r:
            assert r.status == 200
            response_headers = {k.lower(): v for k, v in r.headers.items()}
    sent = {k.lower(): v for k, v in provider.received[0].headers.items()}
    assert sent["authorization"] == "Bearer sk-provider-secret"
    assert CLIENT_KEY not in " ".join(sent.values())
    for name in ("x-api-key", "api-key", "cookie", "keep-alive", "te", "x-forwarded-for"):
        assert name not in sent
    assert sent["openai-beta"] == "assistants=v2"  # ordinary headers pass
    assert "sk-provider-secret" not in " ".join(response_headers.values())


async def test_anthropic_version_defaulted_only_when_client_sends_none(
    gw: Running, provider: FakeProvider
) -> None:
    body = {"model": "claude-test", "max_tokens": 5, "messages": []}
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.url + "/v1/messages", json=body) as r:
            assert r.status == 200
        async with s.post(gw.url + "/v1/messages", json=body,
                          headers={"anthropic-version": "2099-01-01"}) as r:
            assert r.status == 200
    assert provider.received[0].headers["anthropic-version"] == "2023-06-01"
    assert provider.received[1].headers["anthropic-version"] == "2099-01-01"
    assert provider.received[0].headers["x-api-key"] == "sk-ant-provider-secret"


async def test_azure_deployment_path_version_and_api_key(
    provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    cfg = basic_config(provider.base_url)
    cfg["providers"]["fake"] = {"format": "azure", "base_url": provider.root_url,
                                "api_key": "az-secret", "api_version": "2024-10-21"}
    gw = await make_gateway(cfg)
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.v1 + "/chat/completions", json={"model": "gpt-test", "messages": []},
                          headers={"Authorization": f"Bearer {CLIENT_KEY}"}) as r:
            assert r.status == 200
    [sent] = provider.received
    assert sent.path == "/openai/deployments/gpt-upstream/chat/completions"
    assert sent.query == "api-version=2024-10-21"
    assert sent.headers["api-key"] == "az-secret"
    assert "Authorization" not in sent.headers


async def test_provider_response_headers_are_filtered(gw: Running, provider: FakeProvider) -> None:
    provider.behaviour.headers = {
        "openai-organization": "org-provider", "x-ratelimit-limit-requests": "5000",
        "set-cookie": "a=b", "openai-processing-ms": "12",
    }
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.v1 + "/chat/completions", json={"model": "gpt-test", "messages": []}) as r:
            headers = {k.lower() for k in r.headers}
            assert r.headers["openai-processing-ms"] == "12"
    assert not headers & {"openai-organization", "x-ratelimit-limit-requests", "set-cookie"}
