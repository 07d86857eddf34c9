"""The auth plugin: keys in every header form, refusals in every wire format."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
from aiohttp import web

from lunos_proxy.errors import RateLimited
from tests.auth_support import STATIC_KEY, auth_config, put_key, static_entry
from tests.conftest import GatewayFactory, Running
from tests.fakes import CHUNKS, FakeProvider

TEXT = "".join(CHUNKS)
MSG = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def agw(provider: FakeProvider, make_gateway: GatewayFactory) -> Running:
    return await make_gateway(auth_config(provider.base_url))


async def post(url: str, headers: dict[str, str], body: dict[str, Any]) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.post(url, json=body, headers=headers) as r:
        return r.status, json.loads(await r.read())


async def test_store_key_works_with_openai_anthropic_and_azure_headers(agw: Running, provider: FakeProvider) -> None:
    key, _ = await put_key(agw.gateway.store)
    async with openai.AsyncOpenAI(base_url=agw.v1, api_key=key, max_retries=0) as client:
        chat = await client.chat.completions.create(model="gpt-test", messages=MSG)  # type: ignore[arg-type]
    async with anthropic.AsyncAnthropic(base_url=agw.url, api_key=key, max_retries=0) as aclient:
        msg = await aclient.messages.create(model="claude-test", max_tokens=8, messages=MSG)  # type: ignore[arg-type]
    status, body = await post(agw.v1 + "/chat/completions", {"api-key": key}, {"model": "gpt-test", "messages": MSG})
    assert chat.choices[0].message.content == TEXT
    assert msg.content[0].text == TEXT  # type: ignore[union-attr]
    assert (status, body["choices"][0]["message"]["content"]) == (200, TEXT)
    # The Lunos key never travels upstream: each provider got its own credential.
    assert [r.headers.get("Authorization") or r.headers.get("x-api-key") for r in provider.received] == [
        "Bearer sk-provider-secret", "sk-ant-provider-secret", "Bearer sk-provider-secret"]
    assert all(key not in json.dumps(r.headers) for r in provider.received)


async def test_static_key_from_yaml_is_accepted(agw: Running) -> None:
    async with openai.AsyncOpenAI(base_url=agw.v1, api_key=STATIC_KEY, max_retries=0) as client:
        chat = await client.chat.completions.create(model="gpt-test", messages=MSG)  # type: ignore[arg-type]
    assert chat.choices[0].message.content == TEXT


async def test_missing_key_is_401_in_openai_shape(agw: Running, provider: FakeProvider) -> None:
    status, body = await post(agw.v1 + "/chat/completions", {}, {"model": "gpt-test", "messages": MSG})
    assert status == 401
    assert body["error"]["code"] == "invalid_api_key"
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"].startswith("You didn't provide an API key.")
    assert provider.received == []


async def test_wrong_key_is_401_in_anthropic_shape_without_echoing_it(agw: Running, provider: FakeProvider) -> None:
    wrong = "lk-wrong-key-canary-5b1e"
    async with anthropic.AsyncAnthropic(base_url=agw.url, api_key=wrong, max_retries=0) as client:
        with pytest.raises(anthropic.AuthenticationError) as e:
            await client.messages.create(model="claude-test", max_tokens=8, messages=MSG)  # type: ignore[arg-type]
    assert e.value.status_code == 401
    assert e.value.body == {"type": "error", "error": {"type": "authentication_error",
                                                       "message": "Incorrect API key provided."}}
    assert wrong not in json.dumps(e.value.body)
    assert provider.received == []


async def test_revoked_and_expired_keys_are_refused(agw: Running) -> None:
    revoked, _ = await put_key(agw.gateway.store, revoked=True)
    expired, _ = await put_key(agw.gateway.store, expires=time.time() - 1)
    for key, message in ((revoked, "The API key has been revoked."), (expired, "The API key has expired.")):
        async with openai.AsyncOpenAI(base_url=agw.v1, api_key=key, max_retries=0) as client:
            with pytest.raises(openai.AuthenticationError) as e:
                await client.chat.completions.create(model="gpt-test", messages=MSG)  # type: ignore[arg-type]
        assert e.value.status_code == 401
        assert e.value.body["message"] == message  # type: ignore[index]


async def test_key_expiring_while_cached_is_refused_at_its_expiry(agw: Running) -> None:
    key, _ = await put_key(agw.gateway.store, expires=time.time() + 0.5)
    headers = {"Authorization": f"Bearer {key}"}
    assert (await post(agw.v1 + "/chat/completions", headers, {"model": "gpt-test", "messages": MSG}))[0] == 200
    await asyncio.sleep(0.6)
    status, body = await post(agw.v1 + "/chat/completions", headers, {"model": "gpt-test", "messages": MSG})
    assert (status, body["error"]["message"]) == (401, "The API key has expired.")


async def test_key_limited_to_models_gets_403_for_others_and_sees_only_its_models(
    provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(auth_config(provider.base_url, static=[static_entry(allowed_models=["gpt-t*"])]))
    async with openai.AsyncOpenAI(base_url=gw.v1, api_key=STATIC_KEY, max_retries=0) as client:
        ok = await client.chat.completions.create(model="gpt-alias", messages=MSG)  # type: ignore[arg-type]
        with pytest.raises(openai.PermissionDeniedError) as e:
            await client.chat.completions.create(model="gpt-same", messages=MSG)  # type: ignore[arg-type]
        models = await client.models.list()
    assert ok.choices[0].message.content == TEXT
    assert e.value.body["message"] == "This API key is not allowed to use the requested model."  # type: ignore[index]
    assert [m.id for m in models.data] == ["gpt-test"]


async def test_expired_static_key_is_refused(provider: FakeProvider, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(auth_config(provider.base_url, static=[static_entry(expires=time.time() - 10)]))
    status, body = await post(gw.v1 + "/chat/completions", {"x-api-key": STATIC_KEY}, {"model": "gpt-test"})
    assert (status, body["error"]["message"]) == (401, "The API key has expired.")


class Guard:
    """An AddressGuard like the abuse plugin's: bans an address after two failures."""

    def __init__(self) -> None:
        self.checked = 0
        self.failures = 0

    async def check_address(self, request: web.Request) -> None:
        self.checked += 1
        if self.failures >= 2:
            raise RateLimited("Too many failed attempts.", headers={"Retry-After": "60"})

    async def auth_failed(self, request: web.Request) -> None:
        self.failures += 1


async def test_failures_are_reported_to_the_address_guard_and_its_ban_is_honoured(agw: Running) -> None:
    guard = Guard()
    assert agw.gateway.generation is not None
    agw.gateway.generation.services.shared["abuse"] = guard
    url, body = agw.v1 + "/chat/completions", {"model": "gpt-test", "messages": MSG}
    assert (await post(url, {"Authorization": f"Bearer {STATIC_KEY}"}, body))[0] == 200
    assert (await post(url, {}, body))[0] == 401
    assert (await post(url, {"x-api-key": "lk-bad"}, body))[0] == 401
    # Banned now: even the good key is turned away before it is looked at.
    status, refused = await post(url, {"Authorization": f"Bearer {STATIC_KEY}"}, body)
    assert (status, refused["error"]["message"]) == (429, "Too many failed attempts.")
    assert (guard.checked, guard.failures) == (4, 2)


async def test_with_the_abuse_plugin_repeated_bad_keys_ban_the_address(
    provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    config = auth_config(provider.base_url)
    config["pipeline"].append({"name": "abuse", "settings": {
        "auth_failures": {"limit": 2, "window": 60, "ban_seconds": 60}}})
    gw = await make_gateway(config)
    url, body = gw.v1 + "/chat/completions", {"model": "gpt-test", "messages": MSG}
    good = {"Authorization": f"Bearer {STATIC_KEY}"}
    assert (await post(url, good, body))[0] == 200
    statuses = [(await post(url, {"x-api-key": f"lk-guess-{i}"}, body))[0] for i in range(3)]
    assert statuses[:2] == [401, 401] and statuses[2] == 429
    # The address is banned now: the good key is refused too, before it is looked at.
    assert (await post(url, good, body))[0] == 429
    assert len(provider.received) == 1


async def test_a_lookup_a_revocation_overtook_is_not_cached(
    agw: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.auth_support import admin

    store = agw.gateway.store
    key, record = await put_key(store)
    headers = {"Authorization": f"Bearer {key}"}
    url, body = agw.v1 + "/chat/completions", {"model": "gpt-test", "messages": MSG}
    # The store answers the lookup only after the key is revoked: a reply
    # that was on its way when the revocation was announced.
    gate, account = asyncio.Event(), store.account

    async def slow_account(account_id: str) -> Any:
        found = await account(account_id)
        await gate.wait()
        return found

    monkeypatch.setattr(store, "account", slow_account)
    first = asyncio.ensure_future(post(url, headers, body))
    await asyncio.sleep(0.1)  # the lookup has read the key, not yet revoked
    assert (await admin(agw, "POST", f"/admin/keys/{record.id}/revoke"))[0] == 200
    gate.set()
    assert (await first)[0] == 200  # read before the revocation: served once
    status, answer = await post(url, headers, body)
    assert (status, answer["error"]["message"]) == (401, "The API key has been revoked.")
