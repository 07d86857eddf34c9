"""The privacy policy's data rights: export everything about an account, or erase it.

    GET    /admin/accounts/{account_id}/export   operator   one JSON document
    DELETE /admin/accounts/{account_id}          full       idempotent

Export holds the decrypted profile, the keys' metadata (never a hash), every
usage row and usage event (per-request metadata, no content; events and
billing records come from the records database, lunos_proxy/records/), the
spend counters of the account and its keys (budgets, prepaid credit), the
billing records and the audit entries about the account.

Delete first tells every instance's meter to drop what it has not written
for the account (and to ignore its requests still in flight), then erases
the profile (name, email, blind index), revokes and removes
every key (announced to every instance), and erases the usage counters,
usage events and spend counters (a prepaid balance goes with them: settle
it first; the billing records are the accounting record).
Billing records must be kept for accounting, so they stay, moved to a
random pseudonym that is stored nowhere else: nothing leads from it back to
the account or the person. Audit entries about the account move to the
same pseudonym (they hold ids and action names only); the audit record of
the deletion itself (and of any later call naming the id) keeps the account
id, as proof that it was erased. Deleting again finds nothing and says so.
"""

from __future__ import annotations

import secrets as random
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..crypto import Secrets
from ..keys import ERASED_CHANNEL, INVALIDATE_CHANNEL
from ..records import EventQuery, Records
from ..store.base import AccountRecord, KeyRecord, Store
from .accounts import account_or_404, profile
from .auth import GATEWAY, requires, secrets_of, send
from .keys import key_view

if TYPE_CHECKING:
    from ..host import Host

__all__ = ["RETAINED_WHY", "erase_account", "export_document"]

_ALL_DAYS = ("0000-00-00", "9999-99-99")
RETAINED_WHY = {
    "billing_records": "kept for accounting and legal obligations (privacy policy, section 7), "
    "re-keyed to a pseudonym with no path back to the account",
    "audit_entries": "kept as the record of administrative actions; they hold ids and action "
    "names only and are re-keyed to the same pseudonym",
}


async def export_document(
    store: Store, records: Records, secrets: Secrets, account: AccountRecord
) -> dict[str, Any]:
    """Everything kept about `account`, as one JSON-ready document."""
    keys = await store.keys_of(account.id)
    events = [e async for e in records.all_events(EventQuery(account_id=account.id))]
    return {
        "exported_at": time.time(),
        "account": profile(account, secrets),
        "keys": [key_view(k) for k in keys],
        "usage": await store.usage(account.id, *_ALL_DAYS),
        "billing": await records.billing(account.id),
        "usage_events": events,
        # Budget and prepaid-credit counters (micro-units), by subject and period.
        "spend": {
            subject: await store.spend_counters(subject)
            for subject in _spend_subjects(account.id, keys)
        },
        "audit": await store.audit(account.id, limit=100_000),
    }


def _spend_subjects(account_id: str, keys: list[KeyRecord]) -> list[str]:
    """The meter's spend counters of an account and its keys (see plugins/meter/budgets.py)."""
    return [f"account:{account_id}", *(f"key:{k.id}" for k in keys)]


async def erase_account(store: Store, records: Records, account_id: str) -> dict[str, Any]:
    """Erase `account_id` as described above; returns what went and what stayed, and why."""
    had_profile = await store.account(account_id) is not None
    # First, so that no instance writes behind what it still holds for the
    # account once its data is gone (plugins/meter/ledger.py).
    await store.publish(ERASED_CHANNEL, account_id)
    keys = await store.keys_of(account_id)
    for key in keys:
        await store.delete_key(key.id)
        await store.publish(INVALIDATE_CHANNEL, f"key:{key.hash}")
    usage_rows = await store.delete_usage(account_id)
    spend_counters = 0
    for subject in _spend_subjects(account_id, keys):
        spend_counters += await store.delete_spend(subject)
    pseudonym = "anon_" + random.token_hex(12)
    # Events go and ledger lines move to the pseudonym in one transaction.
    usage_events, billing = await records.erase(account_id, pseudonym)
    # The profile goes last, so a profile still there means this is the first
    # (or an interrupted) deletion; afterwards only the records of the
    # deletion and of calls since remain, and they keep the id on purpose.
    audit = await store.rekey_audit(account_id, pseudonym) if had_profile else 0
    await store.delete_account(account_id)
    await store.publish(INVALIDATE_CHANNEL, f"account:{account_id}")
    retained = [
        {"data": name, "count": count, "why": RETAINED_WHY[name]}
        for name, count in (("billing_records", billing), ("audit_entries", audit))
        if count
    ]
    return {
        "account_id": account_id,
        "deleted": {
            "profile": had_profile,
            "keys": len(keys),
            "usage_rows": usage_rows,
            "usage_events": usage_events,
            "spend_counters": spend_counters,
        },
        "retained": retained,
    }


@requires("operator", "accounts.export")
async def export_account(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    account = await account_or_404(gateway.store, request.match_info["account_id"])
    return send(await export_document(gateway.store, gateway.records, secrets_of(request), account))


@requires("full", "accounts.delete")
async def delete_account(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    account_id = request.match_info["account_id"]
    return send(await erase_account(gateway.store, gateway.records, account_id))


def setup(app: web.Application, gateway: Host) -> None:
    app.router.add_get("/admin/accounts/{account_id}/export", export_account)
    app.router.add_delete("/admin/accounts/{account_id}", delete_account)
