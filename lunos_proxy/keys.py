"""API keys and admin tokens: their format, their keyed hash, where clients send them.

A key is ``lk-`` followed by 32 random bytes in URL-safe base64 (43
characters); an admin token is the same with ``lat-``. Neither is ever
stored: the store holds the HMAC-SHA-256 of the key under the server's
hash secret (see `crypto.Secrets`), plus a short display prefix (the first
six random characters) so that people can tell their keys apart. A leaked
store dump therefore does not let anyone call the API.

    key = new_key()                       # shown once, to whoever created it
    record_hash = secrets.key_hash(key)   # what the store keeps

Record ids (`new_id`) are a kind and 16 hex digits: ``acc_``, ``key_``,
``tok_``, ``aud_``. An account id is also what a static key of the auth
plugin names as its account (``demo``): 1 to 64 letters, digits, ``_``,
``.`` or ``-``, starting with a letter or digit (`ACCOUNT_NAME`). `valid_id`
checks a value against these formats before it is used or recorded.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Mapping
from typing import Literal

__all__ = [
    "ACCOUNT_NAME",
    "ADMIN_TOKEN_PREFIX",
    "INVALIDATE_CHANNEL",
    "KEY_PREFIX",
    "IdKind",
    "display_prefix",
    "hmac_hex",
    "key_from_headers",
    "new_id",
    "new_key",
    "valid_id",
]

KEY_PREFIX = "lk-"
# Store pub/sub channel on which the admin API tells every instance's auth
# plugin to drop cached lookups: "key:<hash>", "account:<id>" or "all".
INVALIDATE_CHANNEL = "auth:invalidate"
ADMIN_TOKEN_PREFIX = "lat-"
_RANDOM_BYTES = 32
_SHOWN = 6  # random characters kept in the display prefix (36 of 256 bits)


def new_key(prefix: str = KEY_PREFIX) -> str:
    return prefix + secrets.token_urlsafe(_RANDOM_BYTES)


def new_id(kind: str) -> str:
    """A random record id such as ``key_3f9a0c1d2e4b5a69`` (no meaning, no order)."""
    return f"{kind}_{secrets.token_hex(8)}"


IdKind = Literal["account", "key", "token", "address"]
# Every generated account id (acc_ + 16 hex digits) has this form too.
ACCOUNT_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}\Z"
_FORMATS: dict[IdKind, re.Pattern[str]] = {
    "account": re.compile(ACCOUNT_NAME),
    "key": re.compile(r"^key_[0-9a-f]{16}\Z"),
    "token": re.compile(r"^tok_[0-9a-f]{16}\Z"),
    # A banned client (admin/bans.py parses it strictly): IPv4, IPv6, or an IPv6 /64.
    "address": re.compile(r"^[0-9A-Fa-f:.]{2,45}(/64)?\Z"),
}


def valid_id(kind: IdKind, value: str) -> bool:
    """Whether `value` has the form of a `kind` id (see the module docstring)."""
    return _FORMATS[kind].match(value) is not None


def display_prefix(key: str) -> str:
    """What lists show: ``lk-AbC12x`` — enough to recognise, useless to guess."""
    head = ADMIN_TOKEN_PREFIX if key.startswith(ADMIN_TOKEN_PREFIX) else KEY_PREFIX
    return key[: len(head) + _SHOWN]


def hmac_hex(secret: bytes, value: str) -> str:
    # hmac.digest is the one-shot C path: several times faster than hmac.new.
    return hmac.digest(secret, value.encode("utf-8", "surrogateescape"), "sha256").hex()


def key_from_headers(headers: Mapping[str, str]) -> str | None:
    """The key a client sent: ``Authorization: Bearer`` (OpenAI SDK),
    ``x-api-key`` (Anthropic SDK) or ``api-key`` (Azure SDK); None if absent."""
    auth = headers.get("Authorization")
    if auth is not None:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    for name in ("x-api-key", "api-key"):
        found = headers.get(name)
        if found:
            return found.strip()
    return None
