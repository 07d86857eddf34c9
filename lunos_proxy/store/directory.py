"""The directory: API keys, accounts, admin tokens and the audit log.

Small records looked up by id, hash or index; written by the admin API and
the console, read by auth (a key by its hash is the hot path: one GET).
"""

from __future__ import annotations

import abc

import msgspec

__all__ = [
    "AUDIT_MAX_ENTRIES",
    "AccountRecord",
    "AdminTokenRecord",
    "AuditRecord",
    "Directory",
    "KeyRecord",
]


class KeyRecord(msgspec.Struct, kw_only=True):
    """An API key's metadata. The key itself is never stored: only `hash`,
    a keyed hash (HMAC-SHA-256) of it, and a short display `prefix`."""

    id: str
    hash: str
    prefix: str
    account_id: str
    name: str = ""
    created: float = 0.0
    expires: float | None = None
    revoked: bool = False
    allowed_models: list[str] | None = None
    plan: str | None = None
    budget_micros: int | None = None


class AccountRecord(msgspec.Struct, kw_only=True):
    """An account. `name` and `email` hold ciphertext (encrypted at rest);
    `email_index` is a keyed blind index for lookup by email."""

    id: str
    name: str = ""
    email: str = ""
    email_index: str = ""
    plan: str | None = None
    allowed_regions: list[str] | None = None
    allowed_providers: list[str] | None = None
    # Fractions of a budget at which the account holder wants a notice (set
    # in the console); None: the operator's thresholds from the meter's config.
    alert_thresholds: list[float] | None = None
    created: float = 0.0
    updated: float = 0.0


class AdminTokenRecord(msgspec.Struct, kw_only=True):
    """An admin API token: like a key, only its keyed `hash` and a `prefix` are kept.
    `scope` is "read", "operator" or "full"."""

    id: str
    hash: str
    prefix: str
    name: str
    scope: str
    created: float


class AuditRecord(msgspec.Struct, kw_only=True):
    """One admin API call: who, what, on which target, when, with what result.
    Content-free: ids and names of actions only, never a body or a secret."""

    id: str
    time: float
    actor: str  # admin token id, "config" for a configured token, "anonymous"
    action: str  # e.g. "accounts.create"
    target: str = ""  # the id acted on (account, key, token), if any
    account_id: str = ""  # the account concerned, if any
    status: int = 0  # the HTTP status answered
    result: str = ""  # "ok" | "denied" | "error"


# The audit log keeps this many newest records; older ones are dropped.
AUDIT_MAX_ENTRIES = 100_000


class Directory(abc.ABC):
    """Keys, accounts, admin tokens and audit records."""

    # -- keys -----------------------------------------------------------------
    @abc.abstractmethod
    async def key_by_hash(self, key_hash: str) -> KeyRecord | None: ...

    @abc.abstractmethod
    async def key_by_id(self, key_id: str) -> KeyRecord | None: ...

    @abc.abstractmethod
    async def put_key(self, key: KeyRecord) -> None:
        """Create or replace (by `id`); the hash index follows."""

    @abc.abstractmethod
    async def delete_key(self, key_id: str) -> None: ...

    @abc.abstractmethod
    async def keys_of(self, account_id: str) -> list[KeyRecord]: ...

    # -- accounts -------------------------------------------------------------
    @abc.abstractmethod
    async def account(self, account_id: str) -> AccountRecord | None: ...

    @abc.abstractmethod
    async def account_by_index(self, email_index: str) -> AccountRecord | None: ...

    @abc.abstractmethod
    async def put_account(self, account: AccountRecord) -> None: ...

    @abc.abstractmethod
    async def update_account(self, account: AccountRecord) -> bool:
        """`put_account` for an account that exists: False, and nothing
        written, if it is gone (erased while the caller held its record)."""

    @abc.abstractmethod
    async def delete_account(self, account_id: str) -> None: ...

    @abc.abstractmethod
    async def accounts(self) -> list[AccountRecord]: ...

    # -- admin tokens and audit ----------------------------------------------
    @abc.abstractmethod
    async def put_admin_token(self, token: AdminTokenRecord) -> None:
        """Create or replace (by `id`)."""

    @abc.abstractmethod
    async def admin_token_by_hash(self, token_hash: str) -> AdminTokenRecord | None: ...

    @abc.abstractmethod
    async def admin_tokens(self) -> list[AdminTokenRecord]:
        """Every token, sorted by id."""

    @abc.abstractmethod
    async def delete_admin_token(self, token_id: str) -> bool:
        """Remove a token; False if there was none."""

    @abc.abstractmethod
    async def add_audit(self, record: AuditRecord) -> None:
        """Append a record; past `AUDIT_MAX_ENTRIES` the oldest are dropped."""

    @abc.abstractmethod
    async def audit(self, account_id: str | None = None, limit: int = 1000) -> list[AuditRecord]:
        """The newest `limit` records (of `account_id` only, if given), newest first."""

    @abc.abstractmethod
    async def rekey_audit(self, account_id: str, pseudonym: str) -> int:
        """Rewrite records of `account_id` (its `account_id`, and `target` where it
        is the account) to `pseudonym`; returns how many."""
