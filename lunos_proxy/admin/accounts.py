"""Accounts: create, read, correct, list, and re-encrypt under a rotated key.

    POST  /admin/accounts                  operator  {"name", "email", "plan", ...}
    GET   /admin/accounts[?email=...]      read      (by blind index, never a scan)
    GET   /admin/accounts/{account_id}     read
    PATCH /admin/accounts/{account_id}     operator  the fields sent are replaced
    POST  /admin/accounts/reencrypt        full      rewrite old ciphertexts under the current key

Name and email are stored encrypted (`crypto.Secrets.encrypt`, bound to the
account and field); the email's blind index finds an account by email and
keeps two accounts from sharing one. Answers show the decrypted profile.
A change is announced to the auth plugin of every instance, which drops
its cached principals (plan, allowed regions and providers come from here).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from aiohttp import web

from ..crypto import DecryptError, Secrets
from ..keys import INVALIDATE_CHANNEL, new_id
from ..store.base import AccountRecord, Store
from ..store.directory import Directory
from .auth import GATEWAY, admin_error, audit_about, read_body, requires, secrets_of, send

if TYPE_CHECKING:
    from ..host import Host

__all__ = ["account_or_404", "correct", "profile"]

Email = Annotated[str, msgspec.Meta(max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")]
Name = Annotated[str, msgspec.Meta(max_length=200)]
Names = Annotated[list[str], msgspec.Meta(max_length=100)]


class NewAccount(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: Name = ""
    email: Email | None = None
    plan: str | None = None
    allowed_regions: Names | None = None
    allowed_providers: Names | None = None


class Correction(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Only the fields present are changed; null clears an optional field."""

    name: Name | msgspec.UnsetType = msgspec.UNSET
    email: Email | msgspec.UnsetType | None = msgspec.UNSET
    plan: str | msgspec.UnsetType | None = msgspec.UNSET
    allowed_regions: Names | msgspec.UnsetType | None = msgspec.UNSET
    allowed_providers: Names | msgspec.UnsetType | None = msgspec.UNSET


def profile(account: AccountRecord, secrets: Secrets) -> dict[str, Any]:
    """The account as its owner sees it: decrypted, without the blind index."""
    try:
        name = secrets.decrypt(account.name, f"{account.id}:name")
        email = secrets.decrypt(account.email, f"{account.id}:email")
    except DecryptError as e:
        raise admin_error(500, f"account {account.id} cannot be decrypted: {e}") from None
    return {
        "id": account.id,
        "name": name,
        "email": email or None,
        "plan": account.plan,
        "allowed_regions": account.allowed_regions,
        "allowed_providers": account.allowed_providers,
        "created": account.created,
        "updated": account.updated,
    }


async def account_or_404(store: Directory, account_id: str) -> AccountRecord:
    account = await store.account(account_id)
    if account is None:
        raise admin_error(404, "no such account")
    return account


def _seal(account: AccountRecord, name: str, email: str | None, secrets: Secrets) -> None:
    account.name = secrets.encrypt(name, f"{account.id}:name")
    account.email = secrets.encrypt(email or "", f"{account.id}:email")
    account.email_index = secrets.blind_index(email) if email else ""


async def _check_email_free(
    store: Directory, secrets: Secrets, email: str, account_id: str
) -> None:
    other = await store.account_by_index(secrets.blind_index(email))
    if other is not None and other.id != account_id:
        raise admin_error(409, "another account already has this email")


async def correct(
    store: Store, secrets: Secrets, account: AccountRecord, name: str, email: str | None
) -> bool:
    """Save `account` with this name and email (409 if another account has the
    email), and tell every instance's auth plugin that it changed. False if
    the account was erased meanwhile: it is not brought back."""
    if email and email != profile(account, secrets)["email"]:
        await _check_email_free(store, secrets, email, account.id)
    _seal(account, name, email, secrets)
    account.updated = time.time()
    if not await store.update_account(account):
        return False
    await store.publish(INVALIDATE_CHANNEL, f"account:{account.id}")
    return True


@requires("operator", "accounts.create")
async def create_account(request: web.Request) -> web.Response:
    body = await read_body(request, NewAccount)
    store, secrets = request.app[GATEWAY].store, secrets_of(request)
    if body.email:
        await _check_email_free(store, secrets, body.email, "")
    now = time.time()
    account = AccountRecord(
        id=new_id("acc"),
        plan=body.plan,
        allowed_regions=body.allowed_regions,
        allowed_providers=body.allowed_providers,
        created=now,
        updated=now,
    )
    _seal(account, body.name, body.email, secrets)
    await store.put_account(account)
    audit_about(request, target=account.id, account_id=account.id)
    return send(profile(account, secrets), 201)


@requires("read", "accounts.list")
async def list_accounts(request: web.Request) -> web.Response:
    store, secrets = request.app[GATEWAY].store, secrets_of(request)
    email = request.query.get("email")
    if email is not None:
        found = await store.account_by_index(secrets.blind_index(email))
        accounts = [] if found is None else [found]
    else:
        accounts = await store.accounts()
    return send({"accounts": [profile(a, secrets) for a in accounts]})


@requires("read", "accounts.show")
async def show_account(request: web.Request) -> web.Response:
    store = request.app[GATEWAY].store
    account = await account_or_404(store, request.match_info["account_id"])
    return send(profile(account, secrets_of(request)))


@requires("operator", "accounts.update")
async def update_account(request: web.Request) -> web.Response:
    body = await read_body(request, Correction)
    gateway, secrets = request.app[GATEWAY], secrets_of(request)
    account = await account_or_404(gateway.store, request.match_info["account_id"])
    current = profile(account, secrets)
    name = current["name"] if body.name is msgspec.UNSET else body.name
    email = current["email"] if body.email is msgspec.UNSET else body.email
    if body.plan is not msgspec.UNSET:
        account.plan = body.plan
    if body.allowed_regions is not msgspec.UNSET:
        account.allowed_regions = body.allowed_regions
    if body.allowed_providers is not msgspec.UNSET:
        account.allowed_providers = body.allowed_providers
    if not await correct(gateway.store, secrets, account, name, email):
        raise admin_error(404, f"no account {account.id}")
    return send(profile(account, secrets))


@requires("full", "accounts.reencrypt")
async def reencrypt(request: web.Request) -> web.Response:
    store, secrets = request.app[GATEWAY].store, secrets_of(request)
    accounts = await store.accounts()
    done = 0
    for account in accounts:
        if secrets.is_current(account.name) and secrets.is_current(account.email):
            continue
        p = profile(account, secrets)
        _seal(account, p["name"], p["email"], secrets)
        if await store.update_account(account):  # not one erased meanwhile
            done += 1
    return send({"key_id": secrets.current_key_id, "accounts": len(accounts), "reencrypted": done})


def setup(app: web.Application, gateway: Host) -> None:
    app.router.add_post("/admin/accounts", create_account)
    app.router.add_get("/admin/accounts", list_accounts)
    app.router.add_post("/admin/accounts/reencrypt", reencrypt)
    app.router.add_get("/admin/accounts/{account_id}", show_account)
    app.router.add_patch("/admin/accounts/{account_id}", update_account)
