"""Access rules from the principal: allowed models, data residency, providers; /v1/models per key."""

from __future__ import annotations

import json

import aiohttp

from tests.conftest import GatewayFactory, Running
from tests.fakes import FakeProvider
from tests.plugins.router.conftest import ProviderFactory, chat, deployment, error_of, router_config

EU_ONLY = {"x-test-account": "acct-eu", "x-test-regions": "eu"}


async def residency_gateway(fakes: ProviderFactory, make_gateway: GatewayFactory) -> tuple[Running, FakeProvider, FakeProvider]:
    us, eu = await fakes(2)
    gw = await make_gateway(router_config(
        {"openai-us": us, "openai-eu": eu},
        {
            "gpt": {"deployments": [deployment("openai-us", weight=50), deployment("openai-eu", weight=1)]},
            "gpt-us-only": {"deployments": [deployment("openai-us")]},
            "claude-ish": {"fallbacks": [], "deployments": [deployment("openai-eu", "c")]},
        },
        regions={"openai-us": "us", "openai-eu": "eu"},
    ))
    return gw, us, eu


async def test_eu_only_account_never_reaches_a_us_deployment(fakes: ProviderFactory, make_gateway: GatewayFactory) -> None:
    gw, us, eu = await residency_gateway(fakes, make_gateway)
    for _ in range(30):
        assert (await chat(gw.url, "gpt", headers=EU_ONLY))[0] == 200
    assert (len(us.received), len(eu.received)) == (0, 30)
    eu.behaviour.status = 503  # even when the EU deployment fails, no cross-border retry
    status, _, _ = await chat(gw.url, "gpt", headers=EU_ONLY)
    assert status == 503
    assert len(us.received) == 0


async def test_eu_only_account_on_a_us_only_model_is_403_and_nothing_is_sent(
    fakes: ProviderFactory, make_gateway: GatewayFactory
) -> None:
    gw, us, eu = await residency_gateway(fakes, make_gateway)
    status, _, body = await chat(gw.url, "gpt-us-only", headers=EU_ONLY)
    assert status == 403
    assert error_of(body) == {
        "message": "No deployment of this model is in a region or with a provider your account may use.",
        "type": "invalid_request_error", "param": None, "code": "permission_denied"}
    assert us.received == eu.received == []


async def test_unrestricted_account_uses_every_region(fakes: ProviderFactory, make_gateway: GatewayFactory) -> None:
    gw, us, _ = await residency_gateway(fakes, make_gateway)
    assert (await chat(gw.url, "gpt-us-only", headers={"x-test-account": "acct-any"}))[0] == 200
    assert len(us.received) == 1


async def test_allowed_providers_narrow_the_deployments(fakes: ProviderFactory, make_gateway: GatewayFactory) -> None:
    gw, us, eu = await residency_gateway(fakes, make_gateway)
    headers = {"x-test-account": "a", "x-test-providers": "openai-eu"}
    for _ in range(10):
        assert (await chat(gw.url, "gpt", headers=headers))[0] == 200
    assert (len(us.received), len(eu.received)) == (0, 10)


async def test_key_limited_to_model_patterns_is_refused_other_models(
    fakes: ProviderFactory, make_gateway: GatewayFactory
) -> None:
    gw, _, _ = await residency_gateway(fakes, make_gateway)
    headers = {"x-test-account": "a", "x-test-models": "gpt-*"}
    status, _, body = await chat(gw.url, "gpt", headers=headers)
    assert status == 403
    assert error_of(body)["message"] == "Your API key may not use this model."
    assert (await chat(gw.url, "gpt-us-only", headers=headers))[0] == 200


async def test_models_list_shows_what_the_key_may_use(fakes: ProviderFactory, make_gateway: GatewayFactory) -> None:
    gw, _, _ = await residency_gateway(fakes, make_gateway)

    async def listed(headers: dict[str, str]) -> list[str]:
        async with aiohttp.ClientSession() as s, s.get(gw.url + "/v1/models", headers=headers) as r:
            assert r.status == 200
            body = json.loads(await r.read())
            assert body["object"] == "list"
            return [m["id"] for m in body["data"]]

    # in config order (the test's YAML lists models alphabetically)
    assert await listed({}) == ["claude-ish", "gpt", "gpt-us-only"]
    assert await listed(EU_ONLY) == ["claude-ish", "gpt"]
    assert await listed({**EU_ONLY, "x-test-models": "gpt*"}) == ["gpt"]


async def test_fallback_the_key_may_not_use_is_not_tried(fakes: ProviderFactory, make_gateway: GatewayFactory) -> None:
    a, b = await fakes(2)
    a.behaviour.status = 500
    gw = await make_gateway(router_config({"a": a, "b": b}, {
        "m": {"fallbacks": ["premium"], "deployments": [deployment("a")]},
        "premium": {"deployments": [deployment("b")]},
    }))
    status, _, _ = await chat(gw.url, headers={"x-test-account": "a", "x-test-models": "m"})
    assert status == 500
    assert len(b.received) == 0
    assert (await chat(gw.url, headers={"x-test-account": "a"}))[0] == 200
    assert len(b.received) == 1


async def test_a_key_allowed_an_alias_uses_it_and_no_refusal_names_what_an_alias_stands_for(
    fakes: ProviderFactory, make_gateway: GatewayFactory
) -> None:
    (a,) = await fakes(1)
    gw = await make_gateway(router_config({"a": a}, {
        "internal-7b": {"aliases": ["cheap-chat"], "deployments": [deployment("a")]},
    }))
    allowed_alias = {"x-test-account": "a", "x-test-models": "cheap-*"}
    assert (await chat(gw.url, "cheap-chat", headers=allowed_alias))[0] == 200
    status, _, body = await chat(gw.url, "cheap-chat", headers={"x-test-account": "a", "x-test-models": "gpt-*"})
    assert (status, error_of(body)["message"]) == (403, "Your API key may not use this model.")
    assert b"internal-7b" not in body
    async with aiohttp.ClientSession() as s:
        async with s.get(gw.url + "/v1/models/cheap-chat", headers=allowed_alias) as r:
            assert (r.status, json.loads(await r.read())["id"]) == (200, "cheap-chat")
        async with s.get(gw.url + "/v1/models/internal-7b", headers=allowed_alias) as r:
            assert r.status == 404  # allowed by its alias only: the public name stays hidden
        async with s.get(gw.url + "/v1/models/cheap-chat",
                         headers={"x-test-account": "a", "x-test-models": "gpt-*"}) as r:
            assert r.status == 404
    assert len(a.received) == 1
