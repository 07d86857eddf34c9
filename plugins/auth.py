"""Check the caller's API key and set `exchange.principal`.

The key is taken from ``Authorization: Bearer`` (OpenAI SDK), ``x-api-key``
(Anthropic SDK) or ``api-key`` (Azure SDK) and looked up by its keyed hash:
first among the static keys of the settings, then in an in-process cache,
then in the store (the key and its account, each cached). A missing,
unknown, revoked or expired key is refused with 401 in the client's wire
format; the message never contains the key.

Revocation reaches every instance within a second: the admin API publishes
the key's hash on `lunos_proxy.keys.INVALIDATE_CHANNEL` and every instance drops it from its
cache; `cache_ttl` bounds staleness if a message is lost.

When the abuse plugin runs (after auth), it offers an `AddressGuard` in
`services.shared`: auth asks it whether the address may be served before
looking at the key, and reports every failed attempt to it.

    pipeline:
      - name: auth
        settings:
          static_keys:            # `lunos-proxy keys hash` prints such an entry
            - {hash: 3f0c…, prefix: lk-AbC12x, account: demo, name: demo key}
"""

from __future__ import annotations

import hmac
import time
from collections import OrderedDict
from fnmatch import fnmatchcase
from typing import Annotated

import msgspec
import structlog
from aiohttp import web

from lunos_proxy.abuse_hooks import ADDRESS_GUARD, AddressGuard
from lunos_proxy.bounds import Count, SecondsOrZero
from lunos_proxy.crypto import Secrets, load_secrets
from lunos_proxy.errors import Forbidden, ServiceUnavailable, Unauthorized
from lunos_proxy.exchange import Principal, exchange_of
from lunos_proxy.keys import ACCOUNT_NAME, INVALIDATE_CHANNEL, key_from_headers
from lunos_proxy.parse import read_request
from lunos_proxy.plugin import Handler, Plugin, Services
from lunos_proxy.store.base import KeyRecord, StoreError
from lunos_proxy.store.fanout import Fanout

__all__ = ["Auth", "StaticKey"]

log = structlog.get_logger("lunos.auth")

_MISSING = (
    "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY' "
    "or in the 'x-api-key' header."
)
_INVALID = "Incorrect API key provided."
_EXPIRED = "The API key has expired."
_REVOKED = "The API key has been revoked."

HexHash = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]
# The admin API and the console reach an account only by an id of this form.
AccountName = Annotated[str, msgspec.Meta(pattern=ACCOUNT_NAME)]


class StaticKey(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A key configured in YAML, by its hash (never the key itself)."""

    hash: HexHash
    account: AccountName
    prefix: str = ""
    name: str = ""
    plan: str | None = None
    allowed_models: list[str] | None = None
    allowed_regions: list[str] | None = None
    allowed_providers: list[str] | None = None
    expires: Annotated[float, msgspec.Meta(ge=0, le=1e11)] | None = None  # Unix time


class _Entry:
    """A cached verdict on one key hash: whom it is, or why it is refused."""

    __slots__ = ("deadline", "expires", "principal", "refusal")

    def __init__(
        self, deadline: float, principal: Principal | None, refusal: str, expires: float | None
    ) -> None:
        self.deadline = deadline
        self.principal = principal
        self.refusal = refusal
        self.expires = expires


class Auth(Plugin):
    name = "auth"
    authenticates = True

    class Settings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
        static_keys: list[StaticKey] = []
        # Seconds a looked-up key stays cached; revocations are pushed, so
        # this only bounds staleness when a pub/sub message is lost.
        cache_ttl: SecondsOrZero = 10.0
        # Unknown hashes are remembered this long, so guessing costs no store
        # round trip; a key created meanwhile is announced and dropped.
        negative_ttl: SecondsOrZero = 2.0
        cache_size: Count = 50_000

    settings: Settings

    def __init__(self, settings: Settings, services: Services) -> None:
        super().__init__(settings, services)
        self.secrets: Secrets = load_secrets(services.config.secrets)
        self._static = {k.hash: k for k in settings.static_keys}
        # Shared by every request of the key, as a looked-up key's is.
        self._static_principals = {k.hash: _static_principal(k) for k in settings.static_keys}
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        # Counts invalidations: a lookup that one overtook (it read the
        # store before a revocation and answers after it) is not cached.
        self._invalidations = 0

    async def start(self) -> None:
        if not await _INVALIDATIONS.join(self.services.store, self):
            # Until the store confirms, the cache's TTL bounds how long a
            # revoked key may still pass.
            log.warning("auth_invalidation_not_subscribed", channel=INVALIDATE_CHANNEL)

    async def stop(self) -> None:
        _INVALIDATIONS.leave(self.services.store, self)

    def invalidate(self, message: str) -> None:
        self._invalidations += 1
        kind, _, value = message.partition(":")
        if kind == "key":
            self._cache.pop(value, None)
        else:  # an account changed or everything did: rare, so drop it all
            self._cache.clear()

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        exchange = exchange_of(request)
        guard: AddressGuard | None = self.services.shared.get(ADDRESS_GUARD)
        if guard is not None:
            await guard.check_address(request)
        key = key_from_headers(request.headers)
        if key is None:
            await self._refuse(request, guard, _MISSING)
        assert key is not None
        principal, refusal = await self._principal(self.secrets.key_hash(key))
        if principal is None:
            await self._refuse(request, guard, refusal)
        assert principal is not None
        exchange.principal = principal
        if principal.allowed_models is not None and exchange.endpoint != "models":
            await read_request(request)
            self._check_model(exchange.model, principal.allowed_models)
        return await handler(request)

    async def _refuse(self, request: web.Request, guard: AddressGuard | None, why: str) -> None:
        if guard is not None:
            await guard.auth_failed(request)  # raises instead when the address is now banned
        raise Unauthorized(why)

    def _check_model(self, model: str, patterns: list[str]) -> None:
        names = [model]
        found = self.services.config.resolve_model(model)
        if found is not None:
            names.append(found[0])
        if not any(fnmatchcase(n, p) for n in names for p in patterns):
            # The name is the client's string: the message does not repeat it.
            raise Forbidden(
                "This API key is not allowed to use the requested model.", param="model"
            )

    async def _principal(self, key_hash: str) -> tuple[Principal | None, str]:
        static = self._static.get(key_hash)
        if static is not None and hmac.compare_digest(static.hash, key_hash):
            if static.expires is not None and static.expires <= time.time():
                return None, _EXPIRED
            return self._static_principals[key_hash], ""
        now = time.monotonic()
        entry = self._cache.get(key_hash)
        if entry is None or entry.deadline <= now:
            entry = await self._look_up(key_hash, now, entry)
        if entry.principal is not None and entry.expires is not None:
            if entry.expires <= time.time():
                return None, _EXPIRED
        return entry.principal, entry.refusal

    async def _look_up(self, key_hash: str, now: float, stale: _Entry | None) -> _Entry:
        store = self.services.store
        seen = self._invalidations
        try:
            record = await store.key_by_hash(key_hash)
            account = None if record is None else await store.account(record.account_id)
        except StoreError:
            # A 401 would tell a valid client its key is bad: this is ours.
            # Failing open, a key known a moment ago is still served.
            if stale is not None and self.services.config.store.on_failure == "fail_open":
                return stale
            raise ServiceUnavailable("API keys cannot be checked right now; retry.") from None
        ttl = self.settings.cache_ttl
        if record is None or not hmac.compare_digest(record.hash, key_hash):
            entry = _Entry(now + self.settings.negative_ttl, None, _INVALID, None)
        elif record.revoked:
            entry = _Entry(now + ttl, None, _REVOKED, None)
        elif account is None:
            entry = _Entry(now + self.settings.negative_ttl, None, _INVALID, None)
        else:
            principal = _principal_of(record)
            principal.plan = record.plan or account.plan
            principal.allowed_regions = account.allowed_regions
            principal.allowed_providers = account.allowed_providers
            principal.alert_thresholds = account.alert_thresholds
            entry = _Entry(now + ttl, principal, "", record.expires)
        if self._invalidations == seen:
            self._remember(key_hash, entry)
        # else: an invalidation came while the store answered; this answer
        # serves this request only, and the next one asks again.
        return entry

    def _remember(self, key_hash: str, entry: _Entry) -> None:
        cache = self._cache
        cache[key_hash] = entry
        cache.move_to_end(key_hash)
        while len(cache) > self.settings.cache_size:
            cache.popitem(last=False)


# One subscription per store, shared by the generations a reload makes.
_INVALIDATIONS = Fanout(INVALIDATE_CHANNEL, Auth.invalidate)


def _principal_of(record: KeyRecord) -> Principal:
    return Principal(
        account_id=record.account_id,
        key_id=record.id,
        key_prefix=record.prefix,
        plan=record.plan,
        allowed_models=record.allowed_models,
    )


def _static_principal(key: StaticKey) -> Principal:
    return Principal(
        account_id=key.account,
        key_id="static:" + (key.prefix or key.hash[:12]),
        key_prefix=key.prefix,
        plan=key.plan,
        allowed_models=key.allowed_models,
        allowed_regions=key.allowed_regions,
        allowed_providers=key.allowed_providers,
    )
