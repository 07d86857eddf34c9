"""What every page module uses: the gateway, the signed-in account, rendering, errors.

A page module is a file with handlers and a ``routes(app)`` function; a
handler reachable without signing in is marked `public`, every other one
gets the signed-in account's id from `account_id(request)` and must check
that whatever it touches belongs to it (`owned_key`)::

    async def show(request: web.Request) -> web.Response:
        account = await current_account(request)
        return await render(request, "thing.html", account=account)

    def routes(app: web.Application) -> None:
        app.router.add_get("/thing", show)
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from importlib.resources import files
from typing import TYPE_CHECKING, Any, TypeVar

import jinja2
from aiohttp import web
from aiohttp_session import get_session

from ..admin.usage import _meter_settings
from ..config import Config
from ..crypto import Secrets, load_secrets
from ..keys import new_id, valid_id
from ..store.base import AccountRecord, AuditRecord, KeyRecord, Store
from .numbers import Money, count, plural
from .session import csrf_token

if TYPE_CHECKING:
    from ..app import Gateway

__all__ = [
    "ACCOUNT",
    "GATEWAY",
    "ConsoleError",
    "account_id",
    "audit",
    "current_account",
    "flash",
    "form",
    "money_of",
    "owned_key",
    "public",
    "render",
]

GATEWAY: web.AppKey[Gateway] = web.AppKey("lunos_console_gateway")
ACCOUNT: web.RequestKey[str] = web.RequestKey("lunos_console_account", str)
_H = TypeVar("_H", bound=Callable[..., Awaitable[web.StreamResponse]])

_templates = jinja2.Environment(
    loader=jinja2.FunctionLoader(
        lambda name: files("lunos_proxy.console").joinpath("templates", name).read_text("utf-8")
    ),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
_templates.filters.update(count=count, plural=plural)
_FLASH = "flash"


class ConsoleError(Exception):
    """Refuses a console request with a page saying `message` (never a secret)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def public(handler: _H) -> _H:
    """Mark a handler as reachable without signing in."""
    handler.console_public = True  # type: ignore[attr-defined]
    return handler


def gateway_of(request: web.Request) -> Gateway:
    return request.app[GATEWAY]


def config_of(request: web.Request) -> Config:
    return request.app[GATEWAY].config


def store_of(request: web.Request) -> Store:
    return request.app[GATEWAY].store


def secrets_of(request: web.Request) -> Secrets:
    return load_secrets(request.app[GATEWAY].config.secrets)


def money_of(request: web.Request) -> Money:
    """The meter's currency and billing time zone (USD and UTC without a meter)."""
    currency, timezone = _meter_settings(request.app[GATEWAY])
    return Money(currency, timezone)


async def flash(request: web.Request, message: str) -> None:
    """A result message for the next page rendered (after a POST's redirect):
    shown once, in the page's status region."""
    (await get_session(request))[_FLASH] = message


def account_id(request: web.Request) -> str:
    return request[ACCOUNT]


async def current_account(request: web.Request) -> AccountRecord:
    account = await store_of(request).account(account_id(request))
    if account is None:  # deleted meanwhile (the admin API, another tab)
        raise account_gone()
    return account


def account_gone() -> ConsoleError:
    """The answer when the signed-in account was deleted meanwhile."""
    return ConsoleError(404, "This account no longer exists.")


async def owned_key(request: web.Request, key_id: str | None = None) -> KeyRecord:
    """The key named in the path (or `key_id`), if the signed-in account owns
    it; another account's key and no key at all get the same 404 (so does a
    malformed id, which never reaches the store)."""
    wanted = request.match_info["key_id"] if key_id is None else key_id
    key = await store_of(request).key_by_id(wanted) if valid_id("key", wanted) else None
    if key is None or key.account_id != account_id(request):
        raise ConsoleError(404, "No such key.")
    return key


async def form(request: web.Request) -> dict[str, str]:
    data = await request.post()
    return {k: v for k, v in data.items() if isinstance(v, str)}


async def audit(request: web.Request, action: str, target: str = "", status: int = 200) -> None:
    """An audit record of an account holder's change (actor "console"), ids only."""
    await store_of(request).add_audit(
        AuditRecord(
            id=new_id("aud"),
            time=time.time(),
            actor="console",
            action=f"console.{action}",
            target=target,
            account_id=request.get(ACCOUNT, ""),
            status=status,
            result="ok" if status < 400 else "error",
        )
    )


async def render(
    request: web.Request, template: str, *, status: int = 200, **context: Any
) -> web.Response:
    session = await get_session(request)
    message = session.pop(_FLASH, "") if status < 300 else ""
    text = _templates.get_template(template).render(
        csrf=await csrf_token(request),
        signed_in=ACCOUNT in request,
        page=template.removesuffix(".html"),
        flash=message if isinstance(message, str) else "",
        docs_url=config_of(request).console.docs_url,
        **context,
    )
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")
