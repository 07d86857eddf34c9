"""The privacy pages: what is kept (from the running config), export, correct, delete.

Export and deletion are the admin API's functions (`admin.data_rights`), so
the account holder gets exactly what an operator would: the same document,
the same erasure with billing records kept under a pseudonym.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
from aiohttp import web
from aiohttp_session import get_session

from ..admin.accounts import correct, profile
from ..admin.data_rights import RETAINED_WHY, erase_account, export_document
from ..config import Config
from ..plugin import Views
from ..records import Records
from ..views import METER, REQUEST_LOG
from .email_change import send_confirmation
from .pages import (
    ACCOUNT,
    account_gone,
    account_id,
    audit,
    config_of,
    current_account,
    flash,
    form,
    gateway_of,
    public,
    render,
    secrets_of,
    store_of,
)
from .session import COOKIE, end

__all__ = ["CONFIRMATION", "data_kept", "routes"]

CONFIRMATION = "delete my account"
_DELETED = "deleted"  # session, after the erasure: what the deleted page shows


def records_of(request: web.Request) -> Records:
    return gateway_of(request).records
_ADDRESS_MODES = {
    "full": "written in full",
    "truncated": "truncated to its network (/24 for IPv4, /48 for IPv6)",
    "hashed": "replaced by a keyed hash (linkable, not readable)",
    "dropped": "not written at all",
}


def data_kept(config: Config, views: Views) -> list[tuple[str, str]]:
    """What the service keeps, as (what, how) lines derived from `config` and
    from what the logger and the meter publish (nothing of theirs when they
    are not in the pipeline)."""
    store = config.store.url.split("://")[0].split("+")[0]
    records = "PostgreSQL" if config.records.url.startswith("postgres") else "SQLite"
    billing = config.records.billing_retention_days
    lines = [
        ("Your name and email", "encrypted at rest (AES-256-GCM); kept until you delete your "
         "account"),
        ("API keys", "never stored: only a keyed hash and a display prefix such as lk-AbC12x"),
        ("Prompts and completions", "never stored, never logged: requests are forwarded to the "
         "provider and the answer passed back"),
        ("Usage counters", "requests, tokens and cost per key, model and day, and spend "
         "against budgets; erased when you delete your account"),
        ("Billing records", "kept for accounting and legal obligations"
         + (f" ({billing} days)" if billing else "")
         + ", re-keyed to a pseudonym when you delete your account"),
        ("Where state lives", f"the {store} store" + (" (shared by every proxy instance)"
                                                      if store.startswith("redis") else "")
         + f"; usage events and billing records in a {records} database"),
    ]
    logger = views.get(REQUEST_LOG)
    if logger is not None:
        mode = logger.address_mode
        lines.append(("Request log", "one metadata line per request (time, model, status, "
                      f"tokens; no content); your IP address is {_ADDRESS_MODES.get(mode, mode)}"))
    meter = views.get(METER)
    days = meter.events_retention_days if meter is not None else None
    if days:
        lines.append(("Per-request usage events", "metadata only (time, key, model, which API "
                      "endpoint, status, tokens, cost, how long it took; no content, no "
                      f"addresses); kept {days} days"))
    regions = sorted({d.region or config.providers[d.provider].region
                      for m in config.models.values() for d in m.deployments
                      if d.provider in config.providers} - {""})
    providers = sorted({p for p in config.providers})
    lines.append(("Where requests go", "to the AI providers " + ", ".join(providers)
                  + (f", in the regions {', '.join(regions)}" if regions else "")
                  + "; your account may be limited to some of them"))
    c = config.console
    lines.append(("Cookies", f"one strictly necessary session cookie ({COOKIE}), encrypted, "
                  f"ending {c.idle_timeout_seconds / 60:g} minutes after your last visit or "
                  f"{c.absolute_timeout_seconds / 3600:g} hours after signing in; no analytics "
                  "or advertising cookies"))
    return lines


async def privacy_page(request: web.Request, *, status: int = 200,
                       errors: dict[str, str] | None = None,
                       typed: dict[str, str] | None = None) -> web.Response:
    account = await current_account(request)
    me = profile(account, secrets_of(request))
    return await render(
        request, "privacy.html", status=status, me={**me, **(typed or {})},
        kept=data_kept(config_of(request), gateway_of(request).views), errors=errors or {},
        regions=account.allowed_regions, current_email=me["email"] or "",
    )


@public
async def what_we_keep(request: web.Request) -> web.Response:
    """The "what we keep" list for someone not signed in (the footer's link)."""
    kept = data_kept(config_of(request), gateway_of(request).views)
    return await render(request, "what_we_keep.html", kept=kept)


async def show(request: web.Request) -> web.Response:
    return await privacy_page(request)


async def update_profile(request: web.Request) -> web.Response:
    """The name is saved at once; a new email only once the new address
    confirms it (`email_change`). An empty email field changes nothing."""
    data = await form(request)
    name, email = data.get("name", "").strip(), data.get("email", "").strip()
    errors: dict[str, str] = {}
    if len(name) > 200:
        errors["name"] = "A name has at most 200 characters."
    if email and (len(email) > 320 or "@" not in email.strip("@") or " " in email):
        errors["email"] = "Enter an email address such as ada@example.com."
    account = await current_account(request)
    secrets, store = secrets_of(request), store_of(request)
    current = profile(account, secrets)
    change = bool(email) and email != current["email"]
    if change and not errors:
        other = await store.account_by_index(secrets.blind_index(email))
        if other is not None and other.id != account.id:
            errors["email"] = "Another account already has this email."
    if errors:
        return await privacy_page(request, status=400, errors=errors,
                                  typed={"name": name[:200], "email": email[:320]})
    if name != current["name"]:
        if not await correct(store, secrets, account, name, current["email"]):
            raise account_gone()
        await audit(request, "accounts.correct", account.id)
    if change:
        await send_confirmation(request, account.id, email)
        await audit(request, "accounts.email_change_requested", account.id)
        await flash(request, f"We sent a confirmation link to {email}. Your email changes when "
                    f"you open it; until then it stays {current['email'] or 'unset'}.")
    else:
        await flash(request, "Saved.")
    raise web.HTTPSeeOther("/console/privacy")


_TIMES = {"exported_at", "time", "created", "updated", "expires"}


def _readable(value: Any) -> Any:
    """The export with its epoch times (fields named in `_TIMES`) as ISO 8601
    UTC strings, for a person reading the file; everything else unchanged."""
    if isinstance(value, dict):
        return {k: (dt.datetime.fromtimestamp(v, dt.UTC).isoformat(timespec="seconds")
                    if k in _TIMES and isinstance(v, int | float) and not isinstance(v, bool)
                    else _readable(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_readable(v) for v in value]
    return value


async def export(request: web.Request) -> web.Response:
    account = await current_account(request)
    document = await export_document(store_of(request), records_of(request), secrets_of(request),
                                     account)
    await audit(request, "accounts.export", account.id)
    day = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    readable = msgspec.json.encode(_readable(msgspec.to_builtins(document)))
    return web.Response(
        body=msgspec.json.format(readable, indent=2) + b"\n",
        content_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="lunos-export-{day}.json"'},
    )


async def _deletion_page(request: web.Request, *, status: int = 200,
                         error: str = "") -> web.Response:
    store, me = store_of(request), account_id(request)
    keys = await store.keys_of(me)
    usage = await store.usage(me, "0000-00-00", "9999-99-99")
    billing = await records_of(request).billing(me)
    return await render(request, "delete.html", status=status, error=error, keys=len(keys),
                        usage_rows=len(usage), billing=len(billing), why=RETAINED_WHY,
                        confirmation=CONFIRMATION)


async def confirm_delete(request: web.Request) -> web.Response:
    return await _deletion_page(request)


async def delete(request: web.Request) -> web.Response:
    typed = (await form(request)).get("confirm", "").strip().lower()
    if typed != CONFIRMATION:
        return await _deletion_page(request, status=400,
                                    error=f"Type “{CONFIRMATION}” to confirm.")
    result = await erase_account(store_of(request), records_of(request), account_id(request))
    # After the erasure, so that this record keeps the id: proof that it was erased.
    await audit(request, "accounts.delete", account_id(request))
    await end(request)
    del request[ACCOUNT]
    # What was erased and kept (counts, no ids) outlives the session for the
    # page the redirect shows, so that a reload repeats nothing.
    (await get_session(request))[_DELETED] = {
        "deleted": result["deleted"],
        "retained": [{"data": r["data"], "count": r["count"], "why": r["why"]}
                     for r in result["retained"]],
    }
    raise web.HTTPSeeOther("/console/deleted")


@public
async def deleted(request: web.Request) -> web.Response:
    result = (await get_session(request)).get(_DELETED)
    if not isinstance(result, dict):
        raise web.HTTPSeeOther("/console/sign-in")
    return await render(request, "deleted.html", result=result, why=RETAINED_WHY)


def routes(app: web.Application) -> None:
    app.router.add_get("/privacy", show)
    app.router.add_get("/what-we-keep", what_we_keep)
    app.router.add_post("/privacy/profile", update_profile)
    app.router.add_get("/privacy/export", export)
    app.router.add_get("/privacy/delete", confirm_delete)
    app.router.add_post("/privacy/delete", delete)
    app.router.add_get("/deleted", deleted)
