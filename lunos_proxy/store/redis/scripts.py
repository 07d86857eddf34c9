"""The Lua scripts (store/lua/) and how the store's calls fail.

A script runs by SHA (EVALSHA); a server that lacks it (restarted, failed
over) answers NOSCRIPT and gets the source once with EVAL, which runs it
and caches it for next time. `SCRIPTS` names every script with the shared
parts prepended to it (gcra.lua for the limit scripts); the writes that
take a `once` id also run as "<name>_once", once.lua first.

Every failure of Redis or of the connection to it (`ERRORS`) reaches the
callers as a `StoreError` (`store_error`), nothing else.
"""

from __future__ import annotations

import hashlib
import importlib.resources
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from ..errors import StoreError
from .connect import Client
from .lane import ReplyError
from .resp import ScriptCall, data

__all__ = [
    "ERRORS",
    "ONCE_ABLE",
    "REDIRECTS",
    "SCRIPTS",
    "Script",
    "all_scripts",
    "evaluate",
    "redirected",
    "store_error",
]

ERRORS = (RedisError, RedisClusterException, OSError, TimeoutError)
SCRIPTS = {
    # name: scripts prepended to it
    "hit": ("gcra",),
    "adjust": ("gcra",),
    "settle": ("gcra",),
    "renew": ("gcra",),
    "offend": (),
    "ban": (),
    "lift_ban": (),
    "put_key": (),
    "delete_key": (),
    "keys_of": (),
    "put_account": (),
    "delete_account": (),
    "account_by_index": (),
    "accounts": (),
    "usage_add": (),
    "usage_get": (),
    "usage_delete": (),
    "cool_down": (),
    "cooldowns": (),
    "audit_add": (),
    "audit_get": (),
    "audit_rekey": (),
    "spend_add": (),
    "spend_get": (),
    "spend_all": (),
    "spend_delete": (),
}
# Error replies of a command that did not run, on a Cluster whose slots moved.
REDIRECTS = ("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN")
# Writes that take a `once` id run as "<name>_once": once.lua, then the script.
ONCE_ABLE = ("usage_add", "spend_add")


class Script:
    """A Lua script run by SHA; a server that lacks it (restarted, failed over)
    gets the source with EVAL, which runs it and caches it for next time."""

    __slots__ = ("sha", "sha_arg", "source", "source_arg")

    def __init__(self, name: str, parts: Sequence[str] = ()) -> None:
        lua = importlib.resources.files("lunos_proxy.store") / "lua"
        parts = parts or (*SCRIPTS[name], name)
        self.source = "\n".join((lua / f"{part}.lua").read_text() for part in parts)
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()
        # As arguments of a lane's EVALSHA and EVAL (resp.ScriptCall).
        self.sha_arg, self.source_arg = data(self.sha.encode()), data(self.source.encode())

    async def __call__(self, client: Client, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await client.eval(self.source, len(keys), *keys, *args)


def all_scripts() -> dict[str, Script]:
    """Every script by the name the store calls it with."""
    scripts = {name: Script(name) for name in SCRIPTS}
    scripts.update({f"{n}_once": Script(n, ("once", n)) for n in ONCE_ABLE})
    return scripts


async def evaluate(
    call: Callable[[bytes], Awaitable[Any]], run: Script, script_call: ScriptCall
) -> Any:
    """A script by SHA over a lane; by its source where the server lacks it."""
    reply = await call(script_call.evalsha(run.sha_arg))
    if isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT"):
        reply = await call(script_call.eval(run.source_arg))
    return reply


def redirected(reply: Any) -> bool:
    """Whether `reply` says a Cluster did not run the call where it was sent."""
    return isinstance(reply, ReplyError) and str(reply).startswith(REDIRECTS)


def store_error(e: BaseException) -> StoreError:
    return StoreError(f"redis: {type(e).__name__}: {e}")
