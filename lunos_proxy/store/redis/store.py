"""The shared store on Redis: standalone, Sentinel or Cluster (URLs in connect.py).

    store = RedisStore("redis+sentinel://10.0.0.5,10.0.0.6/lunos", timeout=0.5)
    await store.start()

`RedisStore` is each protocol's Redis implementation, composed, and the
connections they share:

    limits.py      `RedisLimits`: hit, settle (batched per turn), leases, bans
    directory.py   `RedisDirectory`: keys, accounts, admin tokens, audit
    accounting.py  `RedisAccounting`: usage and spend counters, claims
    bus.py         `RedisBus`: publish and subscribe, cooldowns

Every call is one round trip; the limit calls (`hit`, the settlements) of
one tag made in one turn of the event loop share theirs (one script call).
They go over pipelined lanes (lane.py: one per server, followed here to
where a Cluster's slot now is); every other call through redis-py, at
most `max_connections` at once. Operations on several keys are Lua
scripts in `lua/` (scripts.py), run with EVALSHA; a server that answers
NOSCRIPT (restarted, failed over) gets the source once with EVAL.

Every key starts with the store's `prefix` ("lunos:" below); each module's
docstring lists the keys it owns. The keys one script touches share a
`{hash tag}`, so each runs on one Cluster node.

Everything is bounded: it grows with accounts, keys, limits and days,
never with requests. Per-request usage events and the billing ledger live
in the records database (lunos_proxy/records/), not here. The keys that
put every account on one Cluster slot, each bounded (why: in its module):
{keys}, {accounts}, {admin}:tokens and {audit}:log (directory.py),
{routing}:cooldown (bus.py), {claims} and, on one server or Sentinel
only, {once} (accounting.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import msgspec
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import RedisSSLContext
from redis.exceptions import RedisClusterException

from ..base import AccountRecord, AdminTokenRecord, AuditRecord, KeyRecord, Store, StoreError
from .accounting import RedisAccounting
from .bus import RedisBus
from .connect import Client, RedisOptions, connect
from .directory import RedisDirectory
from .lane import Lane, ReplyError, fixed
from .limits import RedisLimits
from .pubsub import Subscriber
from .resp import ScriptCall
from .scripts import ERRORS, Script, all_scripts, evaluate, redirected, store_error

__all__ = ["RedisStore"]

_T = TypeVar("_T")


class RedisStore(RedisLimits, RedisDirectory, RedisAccounting, RedisBus, Store):
    """`url` as in `connect.py`; `options` are the fields of `RedisOptions`."""

    def __init__(self, url: str, **options: Any) -> None:
        self.options = msgspec.convert(options, RedisOptions)
        self._connected = connect(url, self.options)
        self._client: Client = self._connected.client
        self._cluster = isinstance(self._client, RedisCluster)
        self._scripts = all_scripts()
        self._slots = asyncio.Semaphore(self.options.max_connections)
        # redis-py's RedisCluster breaks connections when its first commands
        # arrive concurrently and each triggers the topology discovery, so
        # the store discovers it once, alone, before anything else.
        self._discovered = not self._cluster
        self._stale = False  # a lane to a Cluster node failed: read the slot map again
        self._discovery = asyncio.Lock()
        self._subscriber = Subscriber(self._client.pubsub, self.options.timeout)
        # The limit calls go over pipelined lanes (lane.py): one per server.
        # Their TLS context is the one redis-py builds for its own connections.
        o = self.options
        self._tls = (
            RedisSSLContext(keyfile=o.ssl_keyfile, certfile=o.ssl_certfile,
                            cert_reqs=o.ssl_cert_reqs, ca_certs=o.ssl_ca_certs,
                            check_hostname=o.ssl_check_hostname).get()
            if self._connected.tls
            else None
        )
        self._lanes: dict[tuple[str, int] | None, Lane] = {}
        p = self.options.prefix
        self._keys, self._accounts = f"{p}{{keys}}:", f"{p}{{accounts}}:"
        self._admin_tokens, self._audit_log = f"{p}{{admin}}:tokens", f"{p}{{audit}}:log"
        self._token_decoder = msgspec.json.Decoder(AdminTokenRecord)
        self._audit_decoder = msgspec.json.Decoder(AuditRecord)
        self._key_decoder = msgspec.json.Decoder(KeyRecord)
        self._account_decoder = msgspec.json.Decoder(AccountRecord)
        RedisLimits.__init__(self)  # the turn's waiting hits and settlements

    # -- connections ----------------------------------------------------------
    async def _do(self, call: Callable[[], Awaitable[_T]]) -> _T:
        async with self._slots:
            try:
                if not self._discovered:
                    await self._discover()
                return await call()
            except ERRORS as e:
                raise store_error(e) from e

    async def _discover(self) -> None:
        async with self._discovery:
            if isinstance(self._client, RedisCluster):
                if not self._discovered:
                    await self._client.initialize()
                elif self._stale:
                    await self._client.nodes_manager.initialize()
            self._discovered, self._stale = True, False

    async def _run(self, script: str, keys: Sequence[str], args: Sequence[Any] = ()) -> Any:
        run = self._scripts[script]
        return await self._do(lambda: run(self._client, keys, args))

    async def _fast(self, script: str, call: ScriptCall) -> Any:
        """`_run` for the limit calls: over a lane, without a connection slot."""
        run = self._scripts[script]
        try:
            if not self._discovered or self._stale:
                await self._discover()
            lane = self._lane(call.key)
            reply = await evaluate(lane.call, run, call)
            if self._cluster and redirected(reply):
                lane, reply = await self._follow(run, call, reply)
        except ERRORS as e:
            # A node that fails may have failed over: read the slot map again
            # before the next call (redis-py does the same for its own calls).
            self._stale = self._cluster
            raise store_error(e) from e
        if not isinstance(reply, ReplyError):
            return reply
        raise self._failed(reply, lane)

    async def _follow(self, run: Script, call: ScriptCall, reply: ReplyError) -> tuple[Lane, Any]:
        """Send again a call a Cluster did not run, where its slot is now.

        Followed here, on the lanes, not by redis-py: while a slot migrates
        redis-py reads the slot map again and closes the connections of
        calls in flight, which then fail or, retried on a broken connection,
        run twice (a `hit` charged twice). MOVED: the slot's new owner (and
        the slot map is read again before the next call); ASK: the node
        importing the slot, this once, after ASKING; TRYAGAIN (the call's
        keys are split between the two nodes mid-migration) and CLUSTERDOWN:
        the owner again, shortly. Up to the store's `timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.timeout
        while True:
            kind, _, rest = str(reply).partition(" ")
            if kind in ("MOVED", "ASK"):
                host, _, port = rest.rpartition(" ")[2].rpartition(":")
                lane = self._lane_at((host, int(port)))
                self._stale = self._stale or kind == "MOVED"
            else:
                await asyncio.sleep(0.01)
                lane = self._lane(call.key)
            send = lane.call_asking if kind == "ASK" else lane.call
            reply = await evaluate(send, run, call)
            if not redirected(reply):
                return lane, reply
            if loop.time() >= deadline:
                waited = self.options.timeout
                raise StoreError(f"redis: the slot was still moving after {waited:g} s")

    def _failed(self, reply: ReplyError, lane: Lane) -> StoreError:
        error = str(reply)
        if error.startswith(("READONLY", "MASTERDOWN", "LOADING")):
            lane.reset()  # a failed-over master: ask again where the master is
        return StoreError(f"redis: {error}")

    def _ready_lane(self, key: str) -> Lane | None:
        """The key's lane if it is connected now, else None."""
        if not self._discovered or self._stale:
            return None
        try:
            lane = self._lane(key)
        except ERRORS:
            return None
        return lane if lane.connected else None

    def _lane(self, key: str) -> Lane:
        where: tuple[str, int] | None = None
        if self._connected.master is None:  # Cluster: the node that serves the key's slot now
            assert isinstance(self._client, RedisCluster)
            node = self._client.get_node_from_key(key)
            if node is None:
                raise RedisClusterException(f"no node serves the slot of {key!r}")
            where = (str(node.host), int(node.port))
        return self._lane_at(where)

    def _lane_at(self, where: tuple[str, int] | None) -> Lane:
        lane = self._lanes.get(where)
        if lane is None:
            master = self._connected.master
            address = master if where is None else fixed(*where)
            assert address is not None
            lane = self._lanes[where] = Lane(
                address,
                self._connected.auth,
                tls=self._tls,
                connect_timeout=self.options.connect_timeout,
                timeout=self.options.timeout,
            )
        return lane

    # -- lifecycle ------------------------------------------------------------
    async def ping(self) -> None:
        await self._do(lambda: self._client.ping())

    async def start(self) -> None:
        """Load the scripts (on every Cluster master); StoreError if Redis is down.

        Optional: without it the first call of each script sends its source."""
        for script in self._scripts.values():
            source = script.source
            await self._do(lambda source=source: self._client.script_load(source))  # type: ignore[misc]

    async def close(self) -> None:
        await self._drain()
        for lane in self._lanes.values():
            await lane.close()
        self._lanes.clear()
        await self._subscriber.close()
        try:
            await self._connected.aclose()
        except ERRORS:
            pass  # closing: a dead server has nothing left to release
