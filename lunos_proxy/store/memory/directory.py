"""Keys, accounts, admin tokens and the audit log in memory (`Directory`).

Mixed into `MemoryStore`, which holds the tables declared here and keeps
them in its data file: `_save` writes before the call returns (keys,
accounts, tokens), `_save_soon` writes behind (the audit log).
"""

from __future__ import annotations

import abc
from collections import deque
from typing import TypeVar

import msgspec

from ..directory import AccountRecord, AdminTokenRecord, AuditRecord, Directory, KeyRecord

__all__ = ["MemoryDirectory", "clone"]

_S = TypeVar("_S", bound=msgspec.Struct)


def clone(record: _S) -> _S:
    # Callers may mutate what they get; the store's copy must not change with it.
    return msgspec.json.decode(msgspec.json.encode(record), type=type(record))


class MemoryDirectory(Directory):
    _keys: dict[str, KeyRecord]
    _key_ids_by_hash: dict[str, str]
    _accounts: dict[str, AccountRecord]
    _account_ids_by_index: dict[str, str]
    _admin_tokens: dict[str, AdminTokenRecord]
    _audit: deque[AuditRecord]  # oldest first

    @abc.abstractmethod
    async def _save(self) -> None: ...

    @abc.abstractmethod
    def _save_soon(self) -> None: ...

    # -- keys -----------------------------------------------------------------
    async def key_by_hash(self, key_hash: str) -> KeyRecord | None:
        key_id = self._key_ids_by_hash.get(key_hash)
        return None if key_id is None else clone(self._keys[key_id])

    async def key_by_id(self, key_id: str) -> KeyRecord | None:
        key = self._keys.get(key_id)
        return None if key is None else clone(key)

    async def put_key(self, key: KeyRecord) -> None:
        self._drop_key(key.id)
        self._keys[key.id] = clone(key)
        self._key_ids_by_hash[key.hash] = key.id
        await self._save()

    async def delete_key(self, key_id: str) -> None:
        if self._drop_key(key_id):
            await self._save()

    def _drop_key(self, key_id: str) -> bool:
        old = self._keys.pop(key_id, None)
        if old is None:
            return False
        if self._key_ids_by_hash.get(old.hash) == key_id:
            del self._key_ids_by_hash[old.hash]
        return True

    async def keys_of(self, account_id: str) -> list[KeyRecord]:
        keys = [clone(k) for k in self._keys.values() if k.account_id == account_id]
        return sorted(keys, key=lambda k: k.id)

    # -- accounts -------------------------------------------------------------
    async def account(self, account_id: str) -> AccountRecord | None:
        account = self._accounts.get(account_id)
        return None if account is None else clone(account)

    async def account_by_index(self, email_index: str) -> AccountRecord | None:
        account_id = self._account_ids_by_index.get(email_index)
        return None if account_id is None else await self.account(account_id)

    async def put_account(self, account: AccountRecord) -> None:
        self._drop_account(account.id)
        self._accounts[account.id] = clone(account)
        if account.email_index:
            self._account_ids_by_index[account.email_index] = account.id
        await self._save()

    async def update_account(self, account: AccountRecord) -> bool:
        if account.id not in self._accounts:
            return False
        await self.put_account(account)
        return True

    async def delete_account(self, account_id: str) -> None:
        if self._drop_account(account_id):
            await self._save()

    def _drop_account(self, account_id: str) -> bool:
        old = self._accounts.pop(account_id, None)
        if old is None:
            return False
        if self._account_ids_by_index.get(old.email_index) == account_id:
            del self._account_ids_by_index[old.email_index]
        return True

    async def accounts(self) -> list[AccountRecord]:
        return [clone(self._accounts[i]) for i in sorted(self._accounts)]

    # -- admin tokens and audit ----------------------------------------------
    async def put_admin_token(self, token: AdminTokenRecord) -> None:
        self._admin_tokens[token.id] = clone(token)
        await self._save()

    async def admin_token_by_hash(self, token_hash: str) -> AdminTokenRecord | None:
        for token in self._admin_tokens.values():
            if token.hash == token_hash:
                return clone(token)
        return None

    async def admin_tokens(self) -> list[AdminTokenRecord]:
        return [clone(self._admin_tokens[i]) for i in sorted(self._admin_tokens)]

    async def delete_admin_token(self, token_id: str) -> bool:
        if self._admin_tokens.pop(token_id, None) is None:
            return False
        await self._save()
        return True

    async def add_audit(self, record: AuditRecord) -> None:
        self._audit.append(clone(record))
        self._save_soon()

    async def audit(self, account_id: str | None = None, limit: int = 1000) -> list[AuditRecord]:
        out: list[AuditRecord] = []
        for record in reversed(self._audit):
            if len(out) >= limit:
                break
            if account_id is None or record.account_id == account_id:
                out.append(clone(record))
        return out

    async def rekey_audit(self, account_id: str, pseudonym: str) -> int:
        n = 0
        for record in self._audit:
            if record.account_id == account_id:
                record.account_id = pseudonym
                if record.target == account_id:
                    record.target = pseudonym
                n += 1
        if n:
            self._save_soon()
        return n
