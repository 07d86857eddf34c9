"""Configs and helpers shared by the auth, admin and data-rights tests."""

from __future__ import annotations

import time
from typing import Any

from lunos_proxy.config import SecretsConfig
from lunos_proxy.crypto import load_secrets
from lunos_proxy.keys import display_prefix, new_id, new_key
from lunos_proxy.store.base import AccountRecord, KeyRecord, Store
from tests.conftest import ADMIN_TOKEN, basic_config

HASH_SECRET = "test-hash-secret-0123456789abcdef-0123456789"
ENCRYPTION_KEY = "k1:" + "A" * 43  # 32 zero bytes, base64url
SECRETS = {"hash_secret": HASH_SECRET, "encryption_keys": ENCRYPTION_KEY}
STATIC_KEY = "lk-static-test-key-0123456789abcdefghijklmnopqrstuv"


def secrets() -> Any:
    return load_secrets(SecretsConfig(**SECRETS))


def static_entry(key: str = STATIC_KEY, **extra: Any) -> dict[str, Any]:
    return {"hash": secrets().key_hash(key), "prefix": display_prefix(key), "account": "static-acc", **extra}


def auth_config(provider_url: str, *, store_url: str = "memory://", static: list[dict[str, Any]] | None = None,
                auth: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """basic_config with the auth plugin, fixed secrets and a bootstrap admin token."""
    settings: dict[str, Any] = {"static_keys": static if static is not None else [static_entry()]}
    settings.update(auth or {})
    values: dict[str, Any] = {
        "store": {"url": store_url},
        "secrets": dict(SECRETS),
        "admin": {"token": ADMIN_TOKEN},
        "pipeline": [{"name": "request_id"}, {"name": "auth", "settings": settings}],
    }
    if "store_options" in extra:
        values["store"]["options"] = extra.pop("store_options")
    values.update(extra)
    return basic_config(provider_url, **values)


async def put_key(store: Store, account_id: str = "acc_test", **fields: Any) -> tuple[str, KeyRecord]:
    """Write an account (if missing) and a fresh key for it straight into the store."""
    if await store.account(account_id) is None:
        await store.put_account(AccountRecord(id=account_id, plan="free", created=time.time()))
    key = new_key()
    record = KeyRecord(id=new_id("key"), hash=secrets().key_hash(key), prefix=display_prefix(key),
                       account_id=account_id, created=time.time(), **fields)
    await store.put_key(record)
    return key, record


async def admin(gw: Any, method: str, path: str, body: Any = None, *, token: str = ADMIN_TOKEN) -> tuple[int, Any]:
    """One admin API call: (status, decoded JSON body)."""
    import aiohttp

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as s, s.request(method, gw.admin_url + path, json=body, headers=headers) as r:
        raw = await r.read()
        import json

        return r.status, json.loads(raw) if raw else None


async def chat(gw: Any, key: str, model: str = "gpt-test") -> tuple[int, Any]:
    """One chat completion with `key` as a Bearer token: (status, decoded body)."""
    import json

    import aiohttp

    async with aiohttp.ClientSession() as s, s.post(
        gw.v1 + "/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {key}"},
    ) as r:
        return r.status, json.loads(await r.read())
