"""Changing the account's email: it takes effect only once the new address
confirms it, so a typo cannot lock the holder out of email sign-in.

Saving a different email on the privacy page sends a link to the *new*
address (through the same `delivery` as sign-in messages) and changes
nothing yet; the page says so. The link carries a token signed with the
server's hash secret: the account, the new email sealed with the
encryption key (never readable in the URL), a nonce and an expiry of
`code_ttl_seconds`. Opening it shows a button (mail scanners that fetch
links change nothing); pressing it spends the nonce (once, on every
instance) and saves the email with the admin API's `correct`, which
refuses an email another account took meanwhile. It works whether or not
the browser is signed in: holding the link proves the address. The press
redirects to a page that says which email the account now has (the
session remembers the account's id, not the email), so a reload repeats
nothing.
"""

from __future__ import annotations

import base64
import hmac
import secrets as random
import time

import msgspec
from aiohttp import web
from aiohttp_session import get_session

from ..admin.accounts import correct, profile
from ..crypto import DecryptError
from ..store.base import Limit
from .delivery import SignInMessage, delivery_for
from .pages import ConsoleError, audit, config_of, form, public, render, secrets_of, store_of
from .signin import _base_url, _deliver

__all__ = ["routes", "send_confirmation"]

_SEALED = "console-new-email"
_CHANGED = "email_changed"  # session: the account whose email this browser just confirmed
_MAC = "console-email-change:"


class _Change(msgspec.Struct, array_like=True):
    account_id: str
    sealed_email: str
    nonce: str
    expires: float


def _token(request: web.Request, change: _Change) -> str:
    body = base64.urlsafe_b64encode(msgspec.json.encode(change)).decode().rstrip("=")
    return f"{body}.{secrets_of(request).key_hash(_MAC + body)}"


def _change(request: web.Request, token: str) -> tuple[_Change, str] | None:
    """The change a token asks for and its new email; None if forged or expired."""
    body, _, mac = token.partition(".")
    if not hmac.compare_digest(secrets_of(request).key_hash(_MAC + body).encode(), mac.encode()):
        return None
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        change = msgspec.json.decode(raw, type=_Change)
        email = secrets_of(request).decrypt(change.sealed_email, _SEALED + change.account_id)
    except (ValueError, msgspec.DecodeError, DecryptError):
        return None
    return (change, email) if change.expires > time.time() else None


async def send_confirmation(request: web.Request, account_id: str, email: str) -> None:
    """Send the link that makes `email` the account's email."""
    ttl = config_of(request).console.code_ttl_seconds
    sealed = secrets_of(request).encrypt(email, _SEALED + account_id)
    change = _Change(account_id, sealed, random.token_urlsafe(16), time.time() + ttl)
    link = f"{_base_url(request)}/console/privacy/email?t={_token(request, change)}"
    message = SignInMessage(
        to=email, subject="Confirm your new Lunos email", link=link, code="",
        account_id=account_id,
        text=f"Open this link to make {email} the email of your Lunos account: {link}\n"
        f"It works once, for {max(1, int(ttl // 60))} minutes. Until then nothing changes. "
        "If you did not ask for this, ignore it.")
    await _deliver(delivery_for(config_of(request).console), message)


@public
async def confirm_page(request: web.Request) -> web.Response:
    token = request.query.get("t", "")
    found = _change(request, token)
    if found is None:
        raise ConsoleError(400, "This confirmation link is invalid or has expired; save the "
                                "new email again to get a new one.")
    return await render(request, "email_confirm.html", token=token, email=found[1])


@public
async def apply(request: web.Request) -> web.Response:
    found = _change(request, (await form(request)).get("t", ""))
    store = store_of(request)
    if found is not None:
        ttl = config_of(request).console.code_ttl_seconds
        verdict = await store.hit("console", [Limit(f"once:{found[0].nonce}", 1, ttl)])
        if not verdict.allowed:
            found = None
    if found is None:
        raise ConsoleError(400, "This confirmation link is invalid, used or expired.")
    change, email = found
    account = await store.account(change.account_id)
    if account is None:
        raise ConsoleError(404, "This account no longer exists.")
    secrets = secrets_of(request)
    if not await correct(store, secrets, account, profile(account, secrets)["name"], email):
        raise ConsoleError(404, "This account no longer exists.")
    await audit(request, "accounts.email_confirmed", account.id)
    (await get_session(request))[_CHANGED] = account.id
    raise web.HTTPSeeOther("/console/privacy/email/changed")


@public
async def changed(request: web.Request) -> web.Response:
    account_id = (await get_session(request)).get(_CHANGED)
    account = await store_of(request).account(account_id) if isinstance(account_id, str) else None
    if account is None:  # nothing confirmed in this browser, or the account is gone
        raise web.HTTPSeeOther("/console/sign-in")
    email = profile(account, secrets_of(request))["email"]
    return await render(request, "email_confirmed.html", email=email)


def routes(app: web.Application) -> None:
    app.router.add_get("/privacy/email", confirm_page)
    app.router.add_post("/privacy/email", apply)
    app.router.add_get("/privacy/email/changed", changed)
