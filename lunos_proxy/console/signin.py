"""Signing in and out: by a one-time link or code sent by email, or by an API key.

No password exists. Asking for a link stores, in the session, the account
(if the email has one), a random nonce, the code's keyed hash and an expiry,
and sends a message with both the code (typed into this browser) and a link
(opened anywhere: the link is self-contained and signed with the server's
hash secret). Either works once: using one spends the nonce in the store
(`Limits.hit` with a limit of one per `code_ttl_seconds`, shared by every
instance). Opening a link shows a button that signs in with a POST, so
mail scanners that fetch links spend nothing.

The answer to "send me a link" is the same whether or not the email has an
account. Attempts are limited per address and per account in the store;
wrong codes and keys count as authentication failures for the abuse
plugin, which bans an address past its threshold.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import secrets as random
import time
from typing import Any
from urllib.parse import urlencode

import msgspec
import structlog
from aiohttp import web
from aiohttp_session import get_session

from ..admin.accounts import profile
from ..exchange import exchange_of
from ..store.base import Limit
from ..views import ADDRESS_GUARD, AddressGuard
from .delivery import Delivery, DeliveryError, SignInMessage, delivery_for
from .pages import (
    ACCOUNT,
    ConsoleError,
    audit,
    config_of,
    form,
    gateway_of,
    public,
    render,
    secrets_of,
    store_of,
)
from .session import end, start

__all__ = ["routes"]

log = structlog.get_logger("lunos.console")

_TAG = "console"  # one hash tag for the console's counters (sign-ins are rare)
_PENDING = "pending"
_CODE_DIGITS = 6


class _Link(msgspec.Struct, array_like=True):
    account_id: str
    nonce: str
    expires: float


def _guard(request: web.Request) -> AddressGuard | None:
    return gateway_of(request).views.get(ADDRESS_GUARD)


async def _admit(request: web.Request, account: str = "") -> None:
    """Count one sign-in attempt from this address (and for `account`); 429 past the limits."""
    guard = _guard(request)
    if guard is not None:
        await guard.check_address(request)  # raises for a banned or denied address
    rules = config_of(request).console.sign_in
    limits = [Limit(f"signin:addr:{exchange_of(request).client_addr}", rules.per_address,
                    rules.window_seconds)]
    if account:
        limits.append(Limit(f"signin:account:{account}", rules.per_account, rules.window_seconds))
    verdict = await store_of(request).hit(_TAG, limits)
    if not verdict.allowed:
        wait = max(1, int(verdict.retry_after + 0.999))
        raise ConsoleError(429, "Too many sign-in attempts; try again later.",
                           {"Retry-After": str(wait)})


async def _failed(request: web.Request, message: str) -> web.Response:
    guard = _guard(request)
    if guard is not None:
        await guard.auth_failed(request)  # raises instead once the address is banned
    return await render(request, "sign_in.html", status=401, error=message)


async def _spend(request: web.Request, nonce: str) -> bool:
    """Use up a link's nonce; False if it was used before."""
    ttl = config_of(request).console.code_ttl_seconds
    verdict = await store_of(request).hit(_TAG, [Limit(f"once:{nonce}", 1, ttl)])
    return verdict.allowed


def _sign_link(request: web.Request, link: _Link) -> str:
    payload = base64.urlsafe_b64encode(msgspec.json.encode(link)).decode().rstrip("=")
    return payload + "." + secrets_of(request).key_hash("console-link:" + payload)


def _read_link(request: web.Request, token: str) -> _Link | None:
    payload, _, mac = token.partition(".")
    expected = secrets_of(request).key_hash("console-link:" + payload)
    if not hmac.compare_digest(expected.encode(), mac.encode()):
        return None
    try:
        link = msgspec.json.decode(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)),
                                   type=_Link)
    except (ValueError, msgspec.DecodeError):
        return None
    return link if link.expires > time.time() else None


def _code_hash(request: web.Request, nonce: str, code: str) -> str:
    return secrets_of(request).key_hash(f"console-code:{nonce}:{code}")


# A wildcard listener address names no host a browser can open.
_WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


def _base_url(request: web.Request) -> str:
    """Where sign-in links point: `console.public_url`, else the public
    listener's configured address (`server.host`/`port`, as `serve` binds
    it). Never the request's Host or X-Forwarded-Host: a client chooses those,
    and would have a victim's link aim at its own server."""
    config = config_of(request)
    configured = config.console.public_url.rstrip("/")
    if configured:
        return configured
    server = config.server
    host = _WILDCARDS.get(server.host, server.host)
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if server.tls is not None else 'http'}://{host}:{server.port}"


async def _signed_in(
    request: web.Request, account_id: str, how: str, key_id: str = ""
) -> web.Response:
    await start(request, account_id, key_id)
    request[ACCOUNT] = account_id
    await audit(request, f"sign_in.{how}", account_id)
    raise web.HTTPSeeOther("/console/usage")


@public
async def sign_in_page(request: web.Request) -> web.Response:
    return await render(request, "sign_in.html", error="")


@public
async def request_link(request: web.Request) -> web.Response:
    email = (await form(request)).get("email", "").strip()
    if not email or "@" not in email or len(email) > 320:
        return await render(request, "sign_in.html", status=400, error="Enter your email address.")
    secrets, store = secrets_of(request), store_of(request)
    index = secrets.blind_index(email)
    await _admit(request, index)
    account = await store.account_by_index(index)
    ttl = config_of(request).console.code_ttl_seconds
    nonce, code = random.token_urlsafe(16), f"{random.randbelow(10**_CODE_DIGITS):06d}"
    pending: dict[str, Any] = {"nonce": nonce, "expires": time.time() + ttl, "account": ""}
    if account is not None:
        pending.update(account=account.id, code=_code_hash(request, nonce, code))
        token = _sign_link(request, _Link(account.id, nonce, pending["expires"]))
        link = f"{_base_url(request)}/console/sign-in/link?{urlencode({'t': token})}"
        minutes = max(1, int(ttl // 60))
        message = SignInMessage(
            to=email,
            subject="Your Lunos sign-in link",
            text=f"Sign in to the Lunos console: {link}\nOr enter this code: {code}\n"
            f"Both work once, for {minutes} minutes. If you did not ask for this, ignore it.",
            link=link,
            code=code,
            account_id=account.id,
        )
        # Sent behind: the answer must not wait for the mail service, or its
        # timing would tell which emails have an account.
        task = asyncio.get_running_loop().create_task(
            _deliver(delivery_for(config_of(request).console), message))
        _DELIVERING.add(task)
        task.add_done_callback(_DELIVERING.discard)
    (await get_session(request))[_PENDING] = pending
    raise web.HTTPSeeOther("/console/sign-in/code")


_DELIVERING: set[asyncio.Task[None]] = set()  # sign-in messages on their way


async def _deliver(delivery: Delivery, message: SignInMessage) -> None:
    try:
        await delivery.send(message)
    except DeliveryError as e:
        log.error("console_delivery_failed", account_id=message.account_id, reason=str(e))


@public
async def code_page(request: web.Request) -> web.Response:
    return await render(request, "sign_in_code.html", error="")


@public
async def enter_code(request: web.Request) -> web.Response:
    code = (await form(request)).get("code", "").strip()
    session = await get_session(request)
    pending = session.get(_PENDING)
    if not isinstance(pending, dict):
        raise web.HTTPSeeOther("/console/sign-in")
    await _admit(request, pending.get("account") or pending.get("nonce", ""))
    expected = str(pending.get("code", "")).encode()
    good = (
        pending.get("account")
        and float(pending.get("expires", 0)) > time.time()
        and hmac.compare_digest(expected, _code_hash(request, pending["nonce"], code).encode())
    )
    if not good or not await _spend(request, pending["nonce"]):
        guard = _guard(request)
        if guard is not None:
            await guard.auth_failed(request)
        return await render(request, "sign_in_code.html", status=401,
                            error="That code is wrong or has expired.")
    return await _signed_in(request, pending["account"], "code")


@public
async def link_page(request: web.Request) -> web.Response:
    token = request.query.get("t", "")
    link = _read_link(request, token)
    if link is None:
        return await _failed(request, "This sign-in link is invalid or has expired.")
    account = await store_of(request).account(link.account_id)
    email = profile(account, secrets_of(request))["email"] if account is not None else None
    return await render(request, "sign_in_link.html", token=token, email=email or "")


@public
async def follow_link(request: web.Request) -> web.Response:
    await _admit(request)
    link = _read_link(request, (await form(request)).get("t", ""))
    if link is None or not await _spend(request, link.nonce):
        return await _failed(request, "This sign-in link is invalid, used or expired.")
    return await _signed_in(request, link.account_id, "link")


@public
async def sign_in_with_key(request: web.Request) -> web.Response:
    await _admit(request)
    key = (await form(request)).get("key", "").strip()
    store = store_of(request)
    record = await store.key_by_hash(secrets_of(request).key_hash(key)) if key else None
    # Only a key that may do everything its account may: a session can make
    # keys, change the email and delete the account, so a key limited to some
    # models, or one that expires (a rotated key in its grace period
    # included), must not be a way to more than it grants.
    usable = (
        record is not None
        and not record.revoked
        and record.expires is None
        and record.allowed_models is None
        and await store.account(record.account_id) is not None
    )
    if record is None or not usable:
        return await _failed(request, "That API key is not a valid key of an account, or is "
                             "limited (to some models, or in time): sign in by email instead.")
    return await _signed_in(request, record.account_id, "key", record.id)


async def sign_out(request: web.Request) -> web.Response:
    await audit(request, "sign_out")
    await end(request)
    raise web.HTTPSeeOther("/console/sign-in")


def routes(app: web.Application) -> None:
    app.router.add_get("/sign-in", sign_in_page)
    app.router.add_post("/sign-in/email", request_link)
    app.router.add_get("/sign-in/code", code_page)
    app.router.add_post("/sign-in/code", enter_code)
    app.router.add_get("/sign-in/link", link_page)
    app.router.add_post("/sign-in/link", follow_link)
    app.router.add_post("/sign-in/key", sign_in_with_key)
    app.router.add_post("/sign-out", sign_out)
