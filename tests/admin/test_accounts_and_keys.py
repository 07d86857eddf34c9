"""Accounts and keys through the admin API, and keys used through the real SDKs."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import anthropic
import openai

from tests.auth_support import admin, auth_config, chat
from tests.conftest import GatewayFactory, Running
from tests.fakes import CHUNKS, FakeProvider

TEXT = "".join(CHUNKS)


async def new_account(gw: Running, **fields: Any) -> dict[str, Any]:
    status, account = await admin(gw, "POST", "/admin/accounts", {"name": "Ada Lovelace", "email": "ada@example.com", **fields})
    assert status == 201, account
    return account


async def new_key(gw: Running, account_id: str, **fields: Any) -> dict[str, Any]:
    status, made = await admin(gw, "POST", f"/admin/accounts/{account_id}/keys", {"name": "ci", **fields})
    assert status == 201, made
    return made


async def test_account_is_created_read_found_by_email_and_corrected(provider: FakeProvider, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(auth_config(provider.base_url))
    account = await new_account(gw, plan="pro", allowed_regions=["eu"])
    assert {k: account[k] for k in ("name", "email", "plan", "allowed_regions", "allowed_providers")} == {
        "name": "Ada Lovelace", "email": "ada@example.com", "plan": "pro", "allowed_regions": ["eu"],
        "allowed_providers": None}
    assert account["id"].startswith("acc_")
    assert (await admin(gw, "GET", f"/admin/accounts/{account['id']}"))[1] == account
    found = (await admin(gw, "GET", "/admin/accounts?email=ADA@example.com"))[1]["accounts"]
    assert [a["id"] for a in found] == [account["id"]]
    status, body = await admin(gw, "POST", "/admin/accounts", {"name": "Other", "email": "ada@example.com"})
    assert (status, body["error"]["message"]) == (409, "another account already has this email")

    status, fixed = await admin(gw, "PATCH", f"/admin/accounts/{account['id']}", {"name": "Ada King", "email": "ada@king.example"})
    assert status == 200
    assert (fixed["name"], fixed["email"], fixed["plan"]) == ("Ada King", "ada@king.example", "pro")
    assert fixed["updated"] >= account["updated"]
    assert (await admin(gw, "GET", "/admin/accounts?email=ada@example.com"))[1]["accounts"] == []
    assert (await admin(gw, "GET", "/admin/accounts"))[1]["accounts"] == [fixed]
    assert (await admin(gw, "GET", "/admin/accounts/acc_nope"))[0] == 404
    status, body = await admin(gw, "POST", "/admin/accounts", {"email": "not-an-email"})
    assert status == 400 and "not-an-email" not in body["error"]["message"]


async def test_created_key_works_with_both_sdks_and_is_listed_by_prefix_only(
    provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(auth_config(provider.base_url))
    account = await new_account(gw)
    made = await new_key(gw, account["id"])
    key = made["key"]
    assert key.startswith("lk-") and made["prefix"] == key[:9]
    async with openai.AsyncOpenAI(base_url=gw.v1, api_key=key, max_retries=0) as client:
        reply = await client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
    async with anthropic.AsyncAnthropic(base_url=gw.url, api_key=key, max_retries=0) as aclient:
        msg = await aclient.messages.create(model="claude-test", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == TEXT
    assert msg.content[0].text == TEXT  # type: ignore[union-attr]
    listed = (await admin(gw, "GET", f"/admin/accounts/{account['id']}/keys"))[1]["keys"]
    assert listed == [{k: v for k, v in made.items() if k != "key"}]
    assert key not in str(listed) and "hash" not in listed[0]


async def test_key_options_set_the_principal(provider: FakeProvider, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(auth_config(provider.base_url))
    account = await new_account(gw, plan="pro", allowed_regions=["eu"], allowed_providers=["fake"])
    made = await new_key(gw, account["id"], allowed_models=["gpt-test"], plan="team", budget_micros=5)
    assert (await chat(gw, made["key"]))[0] == 200
    assert (await chat(gw, made["key"], "gpt-same"))[0] == 403
    assert gw.gateway.generation is not None
    auth = gw.gateway.generation.plugins[1]
    principal, _ = await auth._principal(auth.secrets.key_hash(made["key"]))  # type: ignore[attr-defined]
    assert principal is not None
    assert (principal.account_id, principal.key_id, principal.key_prefix, principal.plan,
            principal.allowed_models, principal.allowed_regions, principal.allowed_providers) == (
        account["id"], made["id"], made["prefix"], "team", ["gpt-test"], ["eu"], ["fake"])


async def test_rotated_key_works_alongside_the_old_one_until_the_grace_ends(
    provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(auth_config(provider.base_url))
    account = await new_account(gw)
    old = await new_key(gw, account["id"], allowed_models=["gpt-*"])
    status, new = await admin(gw, "POST", f"/admin/keys/{old['id']}/rotate", {"grace_seconds": 3600})
    assert status == 201 and new["id"] != old["id"] and new["allowed_models"] == ["gpt-*"]
    assert (await chat(gw, old["key"]))[0] == 200
    assert (await chat(gw, new["key"]))[0] == 200
    status, again = await admin(gw, "POST", f"/admin/keys/{new['id']}/rotate", {"grace_seconds": 0})
    assert status == 201
    status, body = await chat(gw, new["key"])
    assert (status, body["error"]["message"]) == (401, "The API key has expired.")
    assert (await chat(gw, again["key"]))[0] == 200


async def test_revoked_key_is_refused_on_every_instance_within_a_second(
    provider: FakeProvider, make_gateway: GatewayFactory, redis_url: str
) -> None:
    options = {"prefix": f"t{uuid.uuid4().hex[:10]}:"}
    a = await make_gateway(auth_config(provider.base_url, store_url=redis_url, store_options=options))
    b = await make_gateway(auth_config(provider.base_url, store_url=redis_url, store_options=options,
                                       auth={"cache_ttl": 300}))
    account = await new_account(a)
    made = await new_key(a, account["id"])
    assert (await chat(b, made["key"]))[0] == 200  # now cached on b for 300 s
    assert (await admin(a, "POST", f"/admin/keys/{made['id']}/revoke"))[0] == 200
    loop = asyncio.get_running_loop()
    start = loop.time()
    while (await chat(b, made["key"]))[0] == 200:
        assert loop.time() - start < 1.0, "b still accepts the revoked key after 1 s"
        await asyncio.sleep(0.02)
    status, body = await chat(b, made["key"])
    assert (status, body["error"]["message"]) == (401, "The API key has been revoked.")

    # Rotation with no grace ends the old key on every instance as well.
    other = await new_key(a, account["id"])
    assert (await chat(b, other["key"]))[0] == 200
    status, rotated = await admin(b, "POST", f"/admin/keys/{other['id']}/rotate", {"grace_seconds": 0})
    assert status == 201
    start = loop.time()
    while (await chat(a, other["key"]))[0] == 200 or (await chat(b, other["key"]))[0] == 200:
        assert loop.time() - start < 1.0, "the rotated-out key still works after 1 s"
        await asyncio.sleep(0.02)
    assert (await chat(a, rotated["key"]))[0] == 200


async def test_key_created_on_one_instance_works_on_another_at_once(
    provider: FakeProvider, make_gateway: GatewayFactory, redis_url: str
) -> None:
    options = {"prefix": f"t{uuid.uuid4().hex[:10]}:"}
    a = await make_gateway(auth_config(provider.base_url, store_url=redis_url, store_options=options))
    b = await make_gateway(auth_config(provider.base_url, store_url=redis_url, store_options=options))
    account = await new_account(a)
    made = await new_key(a, account["id"])
    assert (await chat(b, made["key"]))[0] == 200


async def test_revocation_reaches_the_generation_a_reload_made_through_one_subscription(
    provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    import textwrap

    import yaml

    from lunos_proxy.loading import parse_config

    config = auth_config(provider.base_url, auth={"cache_ttl": 300})
    gw = await make_gateway(config)
    account = await new_account(gw)
    made = await new_key(gw, account["id"])
    for _ in range(3):
        await gw.gateway.swap(parse_config(textwrap.dedent(yaml.safe_dump(config)), "test.yaml"))
    assert (await chat(gw, made["key"]))[0] == 200  # cached by the newest generation
    assert (await admin(gw, "POST", f"/admin/keys/{made['id']}/revoke"))[0] == 200
    assert (await chat(gw, made["key"]))[0] == 401
    assert len(gw.gateway.store._channels["auth:invalidate"]) == 1  # type: ignore[attr-defined]
