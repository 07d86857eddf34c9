"""The console's middleware: security headers, CSRF, sign-in, error pages.

Every response (error pages and redirects included) carries a strict
content-security-policy — no inline script or style, nothing from another
origin, no framing — and ``Cache-Control: no-store``. Every POST must come
from a page of the console: an ``Origin`` header, when the browser sends
one, must be this host, and the form's ``csrf`` field must equal the
session's token (compared in constant time). Every route not marked
`pages.public` needs a signed-in session.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp_session import get_session

from ..admin.auth import AdminError
from ..errors import GatewayError
from ..exchange import EXCHANGE, Exchange
from ..records import RecordsError
from ..store.base import StoreError
from .pages import ACCOUNT, ConsoleError, config_of, render, store_of
from .session import CSRF, signed_in

__all__ = ["HEADERS", "guard"]

log = structlog.get_logger("lunos.console")

HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Sign-in links carry their token in the URL: never pass it to another
    # site. (Not no-referrer: browsers then send "Origin: null" with forms.)
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
    "Cache-Control": "no-store",
}
_HSTS = "max-age=31536000"


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    # The abuse plugin's address guard reads and records the client address here.
    request[EXCHANGE] = Exchange(
        client_addr=request.remote or "", user_agent=request.headers.get("User-Agent", "")[:200]
    )
    try:
        response = await _checked(request, handler)
    except ConsoleError as e:
        response = await _error_page(request, e.status, e.message, e.headers)
    except AdminError as e:  # the admin functions the console reuses refuse this way
        response = await _error_page(request, e.status, e.message, {})
    except GatewayError as e:  # the abuse plugin: banned or denied address
        response = await _error_page(request, e.status, e.message, e.headers)
    except (StoreError, RecordsError):
        resource = request.match_info.route.resource  # the pattern, not the client's path
        log.error("console_store_unreachable", route=resource.canonical if resource else "")
        response = await _error_page(request, 503, "The service is busy; try again shortly.", {})
    except web.HTTPException as e:
        for name, value in _headers(request).items():
            e.headers.setdefault(name, value)
        raise
    response.headers.update(_headers(request))
    return response


def _headers(request: web.Request) -> dict[str, str]:
    if request.secure:
        return {**HEADERS, "Strict-Transport-Security": _HSTS}
    return HEADERS


async def _checked(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = request.match_info.route
    if request.match_info.http_exception is None:
        account = await signed_in(request, config_of(request), store_of(request))
        if account is not None:
            request[ACCOUNT] = account
        elif not getattr(route.handler, "console_public", False):
            if request.method == "GET":
                raise web.HTTPSeeOther("/console/sign-in")
            raise ConsoleError(401, "Your session has ended; sign in again.")
    if request.method == "POST":
        await _check_csrf(request)
    return await handler(request)


async def _check_csrf(request: web.Request) -> None:
    origin = request.headers.get("Origin")
    if origin is not None:  # "null" (sandboxed frames, data: URLs) is foreign too
        allowed = {request.host}
        public_url = config_of(request).console.public_url
        if public_url:
            allowed.add(urlsplit(public_url).netloc)
        if urlsplit(origin).netloc not in allowed:
            raise ConsoleError(403, "This form was sent from another site.")
    expected = (await get_session(request)).get(CSRF)
    sent = (await request.post()).get("csrf")
    if not (
        isinstance(expected, str)
        and isinstance(sent, str)
        and hmac.compare_digest(expected.encode(), sent.encode())
    ):
        raise ConsoleError(403, "This form has expired; reload the page and try again.")


async def _error_page(
    request: web.Request, status: int, message: str, headers: dict[str, str]
) -> web.Response:
    response = await render(request, "error.html", status=status, message=message)
    response.headers.update(headers)
    return response
