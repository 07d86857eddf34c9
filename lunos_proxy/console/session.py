"""The console's one cookie: a strictly necessary, encrypted session.

Which storage holds the session follows the store:

- **memory store** — aiohttp-session's `EncryptedCookieStorage`: the session
  lives in the cookie itself, encrypted and authenticated (Fernet) under a
  key derived from the server's hash secret. Signing out clears the cookie;
  a copy of it taken earlier stays valid until its timeouts.
- **Redis store** — `RedisSessions`: the cookie holds only a random id and
  the session lives in Redis under the id's hash (a Redis dump holds no
  usable cookie). Signing out deletes it, so every copy of the cookie dies.

Either way the cookie is ``HttpOnly``, ``Secure`` over TLS, ``SameSite=Lax``
(or ``Strict``), scoped to ``/console``, and the session ends after
`idle_timeout_seconds` without a request or `absolute_timeout_seconds` after
signing in, whichever comes first (`signed_in` enforces both). Signing in
always starts a new session (`start`), so an id planted before sign-in is
worth nothing after it.
"""

from __future__ import annotations

import hashlib
import json
import secrets as random
import time
from typing import Any

import msgspec
from aiohttp import web
from aiohttp_session import AbstractStorage, Session, get_session, new_session
from aiohttp_session.cookie_storage import EncryptedCookieStorage
from redis.exceptions import RedisError

from ..config import Config
from ..crypto import Secrets
from ..store.directory import Directory
from ..store.errors import StoreError
from ..store.redis.connect import Connected, RedisOptions, connect

__all__ = ["COOKIE", "RedisSessions", "end", "session_storage", "signed_in", "start"]

COOKIE = "lunos_console"
ACCOUNT, CSRF, SINCE, SEEN = "account", "csrf", "since", "seen"
KEY = "key"  # the id of the API key a session was signed in with, if one was


class RedisSessions(AbstractStorage):
    """Sessions in Redis (standalone, Sentinel or Cluster: one key each)."""

    def __init__(self, connected: Connected, prefix: str, **cookie: Any) -> None:
        super().__init__(**cookie)
        self._connected = connected
        self._client = connected.client
        self._prefix = f"{prefix}console:session:"

    def _key(self, identity: str) -> str:
        return self._prefix + hashlib.sha256(identity.encode()).hexdigest()

    async def load_session(self, request: web.Request) -> Session:
        identity = self.load_cookie(request)
        if identity:
            try:
                raw = await self._client.get(self._key(identity))
            except RedisError as e:
                raise StoreError(f"console session: {type(e).__name__}") from None
            if raw is not None:
                return Session(identity, data=json.loads(raw), new=False, max_age=self.max_age)
        return Session(None, data=None, new=True, max_age=self.max_age)

    async def save_session(
        self, request: web.Request, response: web.StreamResponse, session: Session
    ) -> None:
        identity = session.identity
        try:
            if session.empty:
                if identity is not None:
                    await self._client.delete(self._key(str(identity)))
                self.save_cookie(response, "", max_age=session.max_age)
                return
            if identity is None:
                identity = random.token_urlsafe(32)
            data = json.dumps(self._get_session_data(session))
            await self._client.set(self._key(str(identity)), data, ex=session.max_age)
        except RedisError as e:
            raise StoreError(f"console session: {type(e).__name__}") from None
        self.save_cookie(response, str(identity), max_age=session.max_age)

    async def forget(self, identity: str) -> None:
        try:
            await self._client.delete(self._key(identity))
        except RedisError as e:
            raise StoreError(f"console session: {type(e).__name__}") from None

    async def close(self) -> None:
        try:
            await self._connected.aclose()
        except RedisError:
            pass  # closing: a dead server has nothing left to release


def session_storage(config: Config, secrets: Secrets) -> AbstractStorage:
    c = config.console
    secure = c.secure_cookie if c.secure_cookie is not None else config.server.tls is not None
    cookie: dict[str, Any] = {
        "cookie_name": COOKIE,
        "path": "/console",
        "max_age": int(c.absolute_timeout_seconds),
        "secure": secure,
        "httponly": True,
        "samesite": c.same_site,
    }
    url = config.store.url
    if url.startswith(("redis", "rediss")):
        options = msgspec.convert(config.store.options, RedisOptions)
        return RedisSessions(connect(url, options), options.prefix, **cookie)
    # Derived, so the console needs no secret of its own; a new hash secret
    # (which invalidates every key anyway) signs everyone out.
    key = bytes.fromhex(secrets.key_hash("lunos console session v1"))
    return EncryptedCookieStorage(key, **cookie)


async def signed_in(request: web.Request, config: Config, store: Directory) -> str | None:
    """The session's account, or None (also when a timeout ended the session,
    or the API key it was signed in with was revoked, removed or expired)."""
    session = await get_session(request)
    account = session.get(ACCOUNT)
    if not isinstance(account, str):
        return None
    now = time.time()
    c = config.console
    since, seen = float(session.get(SINCE, 0)), float(session.get(SEEN, 0))
    if now - seen > c.idle_timeout_seconds or now - since > c.absolute_timeout_seconds:
        session.invalidate()
        return None
    key_id = session.get(KEY)
    if isinstance(key_id, str):
        key = await store.key_by_id(key_id)
        if key is None or key.revoked or (key.expires is not None and key.expires <= now):
            session.invalidate()
            return None
    session[SEEN] = now
    return account


async def csrf_token(request: web.Request) -> str:
    """The session's CSRF token, made on first use (a signed-out form has one too)."""
    session = await get_session(request)
    token = session.get(CSRF)
    if not isinstance(token, str):
        token = random.token_urlsafe(32)
        session[CSRF] = token
    return token


async def start(request: web.Request, account_id: str, key_id: str = "") -> None:
    """Sign in: a new session (new id, new CSRF token) for `account_id`; one
    signed in with an API key (`key_id`) lasts only as long as the key."""
    old = await get_session(request)
    storage = request.get("aiohttp_session_storage")
    if isinstance(storage, RedisSessions) and old.identity is not None:
        await storage.forget(str(old.identity))
    session = await new_session(request)
    now = time.time()
    session[ACCOUNT] = account_id
    session[SINCE] = now
    session[SEEN] = now
    session[CSRF] = random.token_urlsafe(32)
    if key_id:
        session[KEY] = key_id


async def end(request: web.Request) -> None:
    """Sign out: the session is emptied, and deleted server-side with Redis storage."""
    (await get_session(request)).invalidate()
