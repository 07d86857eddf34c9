"""Header hygiene: keys stay on their side of the proxy, hop-by-hop headers stop here."""

from __future__ import annotations

import aiohttp
import pytest

from lunos_proxy.config import ConfigError
from lunos_proxy.loading import parse_config
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


# Everything a client might send, each header with a value no provider may see.
CLIENT_HEADERS = {
    "Authorization": f"Bearer {CLIENT_KEY}",
    "x-api-key": CLIENT_KEY,
    "api-key": CLIENT_KEY,
    "Cookie": "session=abc",
    "OpenAI-Organization": "org-client-chosen",
    "OpenAI-Project": "proj_client_chosen",
    "X-Stainless-OS": "Linux",
    "X-Stainless-Retry-Count": "0",
    "Idempotency-Key": "client-idem-1",
    "X-Custom-Anything": "custom",
    "Forwarded": "for=10.0.0.1",
    "X-Forwarded-For": "10.0.0.1",
    "Origin": "https://client.example",
    "Content-Encoding": "identity",
    # allowed
    "User-Agent": "client-agent/1.0",
    "Accept": "application/json",
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "tracestate": "vendor=1",
}
# What the proxy's own HTTP client adds for the hop to the provider.
TRANSPORT = {"host", "content-length", "accept-encoding"}


async def test_only_allow_listed_client_headers_and_the_configured_organization_reach_openai(
    provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    cfg = basic_config(provider.base_url)
    cfg["providers"]["fake"].update(organization="org-configured", project="proj_configured")
    gw = await make_gateway(cfg)
    async with aiohttp.ClientSession(skip_auto_headers=("User-Agent",)) as s:
        async with s.post(gw.v1 + "/chat/completions", json={"model": "gpt-test", "messages": []},
                          headers={**CLIENT_HEADERS, "OpenAI-Beta": "assistants=v2",
                                   "anthropic-beta": "tools-2024"}) as r:
            assert r.status == 200
    sent = {k.lower(): v for k, v in provider.received[0].headers.items()}
    assert set(sent) == TRANSPORT | {
        "content-type", "accept", "user-agent", "traceparent", "tracestate", "openai-beta",
        "authorization", "openai-organization", "openai-project",
    }
    assert sent["authorization"] == "Bearer sk-provider-secret"
    assert (sent["openai-organization"], sent["openai-project"]) == ("org-configured", "proj_configured")
    assert (sent["user-agent"], sent["accept"]) == ("client-agent/1.0", "application/json")
    assert sent["traceparent"] == CLIENT_HEADERS["traceparent"]
    assert sent["openai-beta"] == "assistants=v2"


async def test_without_a_configured_organization_none_is_sent(gw: Running, provider: FakeProvider) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.v1 + "/chat/completions", json={"model": "gpt-test", "messages": []},
                          headers=CLIENT_HEADERS) as r:
            assert r.status == 200
    sent = {k.lower() for k in provider.received[0].headers}
    assert not sent & {"openai-organization", "openai-project", "idempotency-key", "x-stainless-os"}


async def test_anthropic_format_keeps_its_version_and_beta_and_nothing_else(
    gw: Running, provider: FakeProvider
) -> None:
    body = {"model": "claude-test", "max_tokens": 5, "messages": []}
    async with aiohttp.ClientSession(skip_auto_headers=("User-Agent",)) as s:
        async with s.post(gw.url + "/v1/messages", json=body,
                          headers={**CLIENT_HEADERS, "anthropic-version": "2023-06-01",
                                   "anthropic-beta": "prompt-caching-2024-07-31",
                                   "OpenAI-Beta": "assistants=v2"}) as r:
            assert r.status == 200
    sent = {k.lower(): v for k, v in provider.received[0].headers.items()}
    assert set(sent) == TRANSPORT | {
        "content-type", "accept", "user-agent", "traceparent", "tracestate",
        "anthropic-version", "anthropic-beta", "x-api-key",
    }
    assert sent["x-api-key"] == "sk-ant-provider-secret"
    assert (sent["anthropic-version"], sent["anthropic-beta"]) == ("2023-06-01", "prompt-caching-2024-07-31")


async def test_provider_request_id_reaches_the_client_and_cookies_do_not(
    gw: Running, provider: FakeProvider
) -> None:
    provider.behaviour.headers = {"request-id": "req_provider_1", "set-cookie": "a=b",
                                  "x-envoy-upstream-service-time": "3"}
    body = {"model": "claude-test", "max_tokens": 5, "messages": []}
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.url + "/v1/messages", json=body) as r:
            assert r.status == 200
            assert r.headers["request-id"] == "req_provider_1"
            names = {k.lower() for k in r.headers}
    assert not names & {"set-cookie", "x-envoy-upstream-service-time"}


def test_organization_and_project_are_checked_in_the_config() -> None:
    text = """
providers:
  o: {format: openai, base_url: "http://x", organization: "org-a b", project: proj_ok}
  a: {format: anthropic, base_url: "http://x", organization: org-a}
  z: {format: azure, base_url: "http://x", project: proj_1}
"""
    with pytest.raises(ConfigError) as e:
        parse_config(text, "lunos.yaml")
    assert e.value.problems == [
        "lunos.yaml: providers.o.organization: expected an id such as org-... or proj_...",
        "lunos.yaml: providers.a.organization: only a provider of format openai has one",
        "lunos.yaml: providers.z.project: only a provider of format openai has one",
    ]
