"""Admin tokens, scopes and the audit trail: the guard in front of every /admin/ route.

A route states the scope it needs with `requires`; a route that states
none is refused (403) to everyone, so a forgotten declaration fails
closed. Scopes are ordered: ``read`` < ``operator`` < ``full``.

    @requires("operator", "keys.revoke")
    async def revoke(request: web.Request) -> web.Response:
        ...
        audit_about(request, target=key.id, account_id=key.account_id)

Tokens come as ``Authorization: Bearer lat-...``. Valid ones are the
configured `admin.token`, the one in `admin.token_file` (both full scope,
held in memory as hashes) and those made through ``/admin/tokens`` (kept in
the store as hashes). Every authenticated call, refused or not, appends
one content-free `AuditRecord`: actor (token id), action, target, account,
status, result. Calls without a valid token are answered 401 and logged,
not audited, so that nobody can flood the audit log from outside.

Ids in paths are checked before anything uses them, audit records
included: every path parameter of an /admin/ route is named in `PATH_IDS`
with the id format it must have (`keys.valid_id`). A value of another form
is answered 400 with a message naming the parameter, never quoting it, and
its audit record has no target; a route with a parameter not in `PATH_IDS`
is refused (500) to everyone. (400, not 404: a malformed id is the caller's
mistake, told apart from an id that is well formed but unknown.)
"""

from __future__ import annotations

import asyncio
import hmac
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from ..crypto import Secrets, load_secrets
from ..http_errors import log_internal_error
from ..keys import ADMIN_TOKEN_PREFIX, IdKind, new_id, new_key, valid_id
from ..records import RecordsError
from ..store.base import AuditRecord, StoreError

if TYPE_CHECKING:
    from ..app import Gateway

__all__ = [
    "GATEWAY",
    "PATH_IDS",
    "SCOPES",
    "AdminError",
    "Caller",
    "admin_error",
    "audit_about",
    "caller_of",
    "checked_id",
    "read_body",
    "requires",
    "secrets_of",
    "send",
]

log = structlog.get_logger("lunos.admin")

SCOPES = ("read", "operator", "full")
_RANK = {scope: i for i, scope in enumerate(SCOPES)}
_H = TypeVar("_H", bound=Callable[..., Awaitable[web.StreamResponse]])
_T = TypeVar("_T")

# The path parameters /admin/ routes may have, and the id each must be.
PATH_IDS: dict[str, IdKind] = {
    "account_id": "account", "key_id": "key", "token_id": "token", "address": "address",
}
_FORMS: dict[IdKind, str] = {
    "account": "an account id: 1 to 64 letters, digits, '_', '.' or '-'",
    "key": "a key id: key_ and 16 hex digits",
    "token": "an admin token id: tok_ and 16 hex digits",
    "address": "an IPv4 or IPv6 address, or an IPv6 /64 network",
}


@dataclass(frozen=True)
class Caller:
    token_id: str  # "config" for the configured tokens
    scope: str


GATEWAY: web.AppKey[Gateway] = web.AppKey("lunos_gateway")
_CALLER: web.RequestKey[Caller] = web.RequestKey("lunos_admin_caller", Caller)
_ABOUT: web.RequestKey[dict[str, str]] = web.RequestKey("lunos_admin_about", dict)
_FILE_TOKEN: web.AppKey[str] = web.AppKey("lunos_admin_file_token", str)


def requires(scope: str, action: str = "") -> Callable[[_H], _H]:
    """Declare the scope a route needs and the action name its audit records carry
    (default: the method and path pattern)."""
    if scope not in _RANK:
        raise ValueError(f"unknown admin scope {scope!r}; one of {', '.join(SCOPES)}")

    def mark(handler: _H) -> _H:
        handler.lunos_scope = scope  # type: ignore[attr-defined]
        handler.lunos_action = action  # type: ignore[attr-defined]
        return handler

    return mark


def audit_about(request: web.Request, *, target: str = "", account_id: str = "") -> None:
    """Name what this call acted on, for its audit record (ids only)."""
    about = request.setdefault(_ABOUT, {})
    if target:
        about["target"] = target
    if account_id:
        about["account_id"] = account_id


def checked_id(kind: IdKind, value: str, where: str) -> str:
    """`value` if it is a `kind` id; else a 400 naming `where` (never the value)."""
    if not valid_id(kind, value):
        raise admin_error(400, f"{where} is not {_FORMS[kind]}")
    return value


def _path_ids(request: web.Request) -> AdminError | None:
    """Record the path's ids for the audit once checked; the refusal for a bad one."""
    refusal = None
    for name, value in request.match_info.items():
        kind = PATH_IDS.get(name)
        if kind is None:
            return admin_error(500, "this admin route has a path parameter of no known format")
        try:
            checked_id(kind, value, f"the {name} in the path")
        except AdminError as e:
            refusal = refusal or e
            continue
        audit_about(request, target=value)
        if kind == "account":
            audit_about(request, account_id=value)
    return refusal


def caller_of(request: web.Request) -> Caller:
    return request[_CALLER]


def secrets_of(request: web.Request) -> Secrets:
    return load_secrets(request.app[GATEWAY].config.secrets)


class AdminError(Exception):
    """Refuses an admin call; answered as JSON ``{"error": {"message", "status"}}``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers

    def response(self) -> web.Response:
        response = send({"error": {"message": self.message, "status": self.status}}, self.status)
        if self.headers:
            response.headers.update(self.headers)
        return response


def _no_route(missing: web.HTTPException) -> AdminError:
    """No such route (404), or not with this method (405 with `Allow`); the
    message never repeats the path or method the caller sent."""
    if isinstance(missing, web.HTTPMethodNotAllowed):
        allow = ", ".join(sorted(missing.allowed_methods))
        return AdminError(405, "method not allowed; see the Allow header", {"Allow": allow})
    return AdminError(missing.status, missing.reason.lower())


def admin_error(status: int, message: str) -> AdminError:
    """An error to raise from a handler."""
    return AdminError(status, message)


def send(value: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(value), status=status, content_type="application/json"
    )


# msgspec messages that quote what was sent (a field name, a value), and
# what is said instead; the others name only our fields and types.
_QUOTING = {
    "Object contains unknown field": "Object contains an unknown field",
    "Invalid enum value": "Invalid enum value",
    "Invalid value": "Invalid value",
}


def _problem(e: msgspec.ValidationError) -> str:
    """msgspec's message without anything the caller sent: what is wrong and
    where (`$.field`: our names; a dict's keys show as ``[...]``)."""
    message, at, where = str(e).partition(" - at ")
    for quoting, instead in _QUOTING.items():
        if message.startswith(quoting):
            message = instead
    return (message + at + where).replace("`", "")


async def read_body(request: web.Request, typ: type[_T]) -> _T:
    """The JSON body as `typ`; 400 naming the field (never its value) otherwise."""
    raw = await request.read()
    try:
        return msgspec.json.decode(raw or b"{}", type=typ)
    except msgspec.ValidationError as e:
        raise admin_error(400, f"invalid body: {_problem(e)}") from None
    except msgspec.DecodeError:
        raise admin_error(400, "the body is not valid JSON") from None


async def _authenticate(request: web.Request) -> Caller | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    gateway = request.app[GATEWAY]
    secrets = load_secrets(gateway.config.secrets)
    token_hash = secrets.key_hash(token)
    configured = [gateway.config.admin.token, request.app.get(_FILE_TOKEN, "")]
    if any(c and hmac.compare_digest(secrets.key_hash(c), token_hash) for c in configured):
        return Caller("config", "full")
    record = await gateway.store.admin_token_by_hash(token_hash)
    return None if record is None else Caller(record.id, record.scope)


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/admin/"):
        missing = request.match_info.http_exception
        if missing is not None:  # /metrics with another method, an unknown path
            return _no_route(missing).response()
        return await handler(request)
    try:
        caller = await _authenticate(request)
    except StoreError:
        return AdminError(503, "the store is unreachable; tokens cannot be checked").response()
    if caller is None:
        log.warning("admin_unauthenticated", route=_pattern(request))
        return AdminError(401, "a valid admin token is required (Bearer ...)").response()
    request[_CALLER] = caller
    route = request.match_info.route
    scope: str | None = getattr(route.handler, "lunos_scope", None)
    action = getattr(route.handler, "lunos_action", "") or _pattern(request)
    bad_id = _path_ids(request)
    status = 500
    try:
        missing = request.match_info.http_exception
        if missing is not None:  # no such route, or not with this method
            raise _no_route(missing)
        if scope is None:
            raise admin_error(403, "this admin route declares no scope, so it is closed")
        if _RANK[caller.scope] < _RANK[scope]:
            raise admin_error(
                403, f"this call needs the {scope!r} scope; the token has {caller.scope!r}"
            )
        if bad_id is not None:
            raise bad_id
        response = await handler(request)
        status = response.status
        return response
    except AdminError as e:
        status = e.status
        return e.response()
    except web.HTTPException as e:
        status = e.status
        raise
    except StoreError:
        status = 503
        return AdminError(503, "the store is unreachable; retry").response()
    except RecordsError:
        status = 503
        return AdminError(503, "the records database is unreachable; retry").response()
    except Exception as exc:  # the admin listener's error boundary
        log_internal_error(exc, route=_pattern(request))
        return AdminError(500, "internal error; see the log").response()
    finally:
        await _record(request, caller, action, status)


def _pattern(request: web.Request) -> str:
    """The route's pattern, never the path the client sent (free text, up to
    the request line's limit, that logs and audit records must not hold)."""
    resource = request.match_info.route.resource
    return f"{request.method} {resource.canonical if resource else '(no route)'}"


async def _record(request: web.Request, caller: Caller, action: str, status: int) -> None:
    about = request.get(_ABOUT, {})
    record = AuditRecord(
        id=new_id("aud"),
        time=time.time(),
        actor=caller.token_id,
        action=action,
        target=about.get("target", ""),
        account_id=about.get("account_id", ""),
        status=status,
        result="ok" if status < 400 else ("denied" if status in (401, 403) else "error"),
    )
    try:
        await request.app[GATEWAY].store.add_audit(record)
    except StoreError:
        # The action is done; its record must not vanish silently.
        log.error("audit_write_failed", action=action, actor=caller.token_id, status=status)


def _token_file(path: str) -> tuple[str, bool]:
    """The token in `path`, creating the file (mode 0600) with a new one if missing."""
    while True:
        try:
            with open(path, encoding="utf-8") as f:
                return f.read().strip(), False
        except FileNotFoundError:
            pass
        token = new_key(ADMIN_TOKEN_PREFIX)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another instance won the race: read its token
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(token + "\n")
        return token, True


async def _bootstrap(app: web.Application) -> None:
    path = app[GATEWAY].config.admin.token_file
    if path:
        app[_FILE_TOKEN], created = await asyncio.to_thread(_token_file, path)
        if created:
            log.warning("admin_token_created", file=path, scope="full")


def setup(app: web.Application, gateway: Gateway) -> None:
    app[GATEWAY] = gateway
    app.middlewares.append(guard)
    app.on_startup.append(_bootstrap)
