"""GET /admin/audit: the audit log, newest first (scope: read).

    GET /admin/audit?account_id=acc_...&limit=100
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from .auth import GATEWAY, admin_error, checked_id, requires, send

if TYPE_CHECKING:
    from ..app import Gateway

_MAX = 10_000


@requires("read", "audit.read")
async def read_audit(request: web.Request) -> web.Response:
    try:
        limit = int(request.query.get("limit", "1000"))
    except ValueError:
        raise admin_error(400, "limit must be an integer") from None
    if not 1 <= limit <= _MAX:
        raise admin_error(400, f"limit must be between 1 and {_MAX}")
    account_id = request.query.get("account_id") or None
    if account_id is not None:
        checked_id("account", account_id, "the account_id parameter")
    records = await request.app[GATEWAY].store.audit(account_id, limit)
    return send({"entries": records})


def setup(app: web.Application, gateway: Gateway) -> None:
    app.router.add_get("/admin/audit", read_audit)
