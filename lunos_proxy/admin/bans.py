"""Auth-failure bans: list them, lift one.

    GET    /admin/bans            read      {"bans": [{"address", "reason", "expires",
                                                          "seconds_left"}]}
    DELETE /admin/bans/{address}  operator  {"address", "lifted": true}
                                            404 if none was in force (counts cleared all the same)

A ban covers an address (IPv4), or an IPv6 client's /64, which is listed as
the network (``2001:db8:1:2::/64``); lifting takes that form or any IPv6
address inside it. A lift removes the ban, its offence count (the next ban
is a first one again) and the address's auth-failure count, and is
published to every instance, whose local ban table drops it at once
(`lunos_proxy.limits.guard`). Nothing else about the address is kept or
shown: no key, no request.
"""

from __future__ import annotations

import ipaddress
import re
import time
from typing import TYPE_CHECKING

from aiohttp import web

from ..limits.addresses import subject
from ..limits.guard import current_bans, lift_ban
from .auth import GATEWAY, admin_error, audit_about, requires, send

if TYPE_CHECKING:
    from ..app import Gateway

__all__ = ["parse_address"]

_REASON = "auth_failures"
_ADDRESS_CHARS = re.compile(r"[0-9A-Fa-f:./]+")


def parse_address(text: str) -> str:
    """The ban subject `text` names: an IPv4 or IPv6 address, or an IPv6 /64
    network; anything else is a 400 (which never repeats the text)."""
    if len(text) <= 64 and _ADDRESS_CHARS.fullmatch(text):  # no zone ids, no spaces
        try:
            if "/" in text:
                network = ipaddress.IPv6Network(text, strict=True)
                if network.prefixlen == 64:
                    return str(network)
            else:
                return subject(str(ipaddress.ip_address(text)))
        except ValueError:
            pass
    raise admin_error(
        400, "the address in the path is not an IPv4 or IPv6 address, or an IPv6 /64 network"
    )


@requires("read", "bans.list")
async def list_bans(request: web.Request) -> web.Response:
    store = request.app[GATEWAY].store
    now = time.time()
    return send({
        "bans": [
            {"address": address, "reason": _REASON, "expires": round(now + left, 3),
             "seconds_left": round(left, 3)}
            for address, left in await current_bans(store)
        ]
    })


@requires("operator", "bans.lift")
async def lift(request: web.Request) -> web.Response:
    address = parse_address(request.match_info["address"])
    audit_about(request, target=address)
    if not await lift_ban(request.app[GATEWAY].store, address):
        raise admin_error(404, "no ban is in force for this address")
    return send({"address": address, "lifted": True})


def setup(app: web.Application, gateway: Gateway) -> None:
    app.router.add_get("/admin/bans", list_bans)
    # An IPv6 /64 carries a slash: the pattern admits it, parse_address checks it.
    app.router.add_delete("/admin/bans/{address:[^{}]+}", lift)
