"""Keys, accounts, admin tokens and the audit log on Redis (`Directory`).

Mixed into `RedisStore`, which sets the attributes declared here (key
prefixes, decoders) and runs the calls (`_do`: one command; `_run`: one Lua
script from store/lua/). The keys:

    lunos:{keys}:hash:<hash>           KeyRecord JSON (the hot path: one GET)
    lunos:{keys}:id:<id>               KeyRecord JSON
    lunos:{keys}:account:<account>     set of key ids
    lunos:{accounts}:id:<id>           AccountRecord JSON
    lunos:{accounts}:index:<index>     account id, by email blind index
    lunos:{accounts}:all               set of account ids
    lunos:{admin}:tokens               hash token id -> AdminTokenRecord JSON
    lunos:{audit}:log                  list of AuditRecord JSON, newest first

Keys and accounts each share one `{hash tag}`, so an index always follows
its record atomically (every script on them runs on one Cluster node):
one record per key or account, and reads are cached in-process. The
tokens are tens, the audit log capped at AUDIT_MAX_ENTRIES.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import msgspec

from ..directory import (
    AUDIT_MAX_ENTRIES,
    AccountRecord,
    AdminTokenRecord,
    AuditRecord,
    Directory,
    KeyRecord,
)
from .connect import Client

__all__ = ["RedisDirectory"]

_T = TypeVar("_T")


class RedisDirectory(Directory):
    _client: Client
    _keys: str  # "<prefix>{keys}:"
    _accounts: str  # "<prefix>{accounts}:"
    _admin_tokens: str
    _audit_log: str
    _key_decoder: msgspec.json.Decoder[KeyRecord]
    _account_decoder: msgspec.json.Decoder[AccountRecord]
    _token_decoder: msgspec.json.Decoder[AdminTokenRecord]
    _audit_decoder: msgspec.json.Decoder[AuditRecord]

    @abc.abstractmethod
    async def _do(self, call: Callable[[], Awaitable[_T]]) -> _T: ...

    @abc.abstractmethod
    async def _run(self, script: str, keys: Sequence[str], args: Sequence[Any] = ()) -> Any: ...

    # -- keys -----------------------------------------------------------------
    async def key_by_hash(self, key_hash: str) -> KeyRecord | None:
        return self._decode_key(
            await self._do(lambda: self._client.get(f"{self._keys}hash:{key_hash}"))
        )

    async def key_by_id(self, key_id: str) -> KeyRecord | None:
        return self._decode_key(
            await self._do(lambda: self._client.get(f"{self._keys}id:{key_id}"))
        )

    def _decode_key(self, raw: bytes | str | None) -> KeyRecord | None:
        return None if raw is None else self._key_decoder.decode(raw)

    async def put_key(self, key: KeyRecord) -> None:
        d = self._keys
        keys = [f"{d}id:{key.id}", f"{d}hash:{key.hash}", f"{d}account:{key.account_id}"]
        await self._run("put_key", keys, [msgspec.json.encode(key), key.id, d])

    async def delete_key(self, key_id: str) -> None:
        await self._run("delete_key", [f"{self._keys}id:{key_id}"], [key_id, self._keys])

    async def keys_of(self, account_id: str) -> list[KeyRecord]:
        raw = await self._run("keys_of", [f"{self._keys}account:{account_id}"], [self._keys])
        return sorted((self._key_decoder.decode(r) for r in raw), key=lambda k: k.id)

    # -- accounts -------------------------------------------------------------
    async def account(self, account_id: str) -> AccountRecord | None:
        raw = await self._do(lambda: self._client.get(f"{self._accounts}id:{account_id}"))
        return None if raw is None else self._account_decoder.decode(raw)

    async def account_by_index(self, email_index: str) -> AccountRecord | None:
        entry = f"{self._accounts}index:{email_index}"
        raw = await self._run("account_by_index", [entry], [self._accounts])
        return None if raw is None else self._account_decoder.decode(raw)

    async def put_account(self, account: AccountRecord) -> None:
        await self._put_account(account, existing=False)

    async def update_account(self, account: AccountRecord) -> bool:
        return await self._put_account(account, existing=True)

    async def _put_account(self, account: AccountRecord, *, existing: bool) -> bool:
        d = self._accounts
        written = await self._run(
            "put_account",
            [f"{d}id:{account.id}", f"{d}all"],
            [msgspec.json.encode(account), account.id, d, account.email_index, int(existing)],
        )
        return bool(written)

    async def delete_account(self, account_id: str) -> None:
        d = self._accounts
        await self._run("delete_account", [f"{d}id:{account_id}", f"{d}all"], [account_id, d])

    async def accounts(self) -> list[AccountRecord]:
        raw = await self._run("accounts", [f"{self._accounts}all"], [self._accounts])
        return sorted((self._account_decoder.decode(r) for r in raw), key=lambda a: a.id)

    # -- admin tokens and audit ----------------------------------------------
    # Tokens are few (tens): one hash, searched whole; the admin API caches.
    async def put_admin_token(self, token: AdminTokenRecord) -> None:
        data = msgspec.json.encode(token)
        await self._do(lambda: self._client.hset(self._admin_tokens, token.id, data))

    async def admin_token_by_hash(self, token_hash: str) -> AdminTokenRecord | None:
        for token in await self.admin_tokens():
            if token.hash == token_hash:
                return token
        return None

    async def admin_tokens(self) -> list[AdminTokenRecord]:
        raw = await self._do(lambda: self._client.hvals(self._admin_tokens))
        return sorted((self._token_decoder.decode(r) for r in raw), key=lambda t: t.id)

    async def delete_admin_token(self, token_id: str) -> bool:
        gone = await self._do(lambda: self._client.hdel(self._admin_tokens, token_id))
        return bool(gone)

    async def add_audit(self, record: AuditRecord) -> None:
        data = msgspec.json.encode(record)
        await self._run("audit_add", [self._audit_log], [data, AUDIT_MAX_ENTRIES])

    async def audit(self, account_id: str | None = None, limit: int = 1000) -> list[AuditRecord]:
        needle = "" if account_id is None else _account_needle(account_id)
        raw = await self._run("audit_get", [self._audit_log], [needle, limit])
        records = [self._audit_decoder.decode(r) for r in raw]
        return [r for r in records if account_id is None or r.account_id == account_id]

    async def rekey_audit(self, account_id: str, pseudonym: str) -> int:
        needle = _account_needle(account_id)
        n: int = await self._run("audit_rekey", [self._audit_log], [needle, account_id, pseudonym])
        return n


def _account_needle(account_id: str) -> bytes:
    # How msgspec writes the field, so Lua can skip other records by plain search.
    return b'"account_id":' + msgspec.json.encode(account_id)
