"""The shared store on Redis: standalone, Sentinel or Cluster (URLs in connect.py).

    store = RedisStore("redis+sentinel://10.0.0.5,10.0.0.6/lunos", timeout=0.5)
    await store.start()

Every call is one round trip; the limit calls (`hit`, the settlements) of
one tag made in one turn of the event loop share theirs (one script call).
Operations on several keys are Lua scripts in
`lua/`, run with EVALSHA; a server that answers NOSCRIPT (restarted, failed
over) gets the source once with EVAL. The keys one script touches share a
`{hash tag}`, so each runs on one Cluster node:

    lunos:{<tag>}:limits               hash <key> -> counter (level, stamp)   hit, settle, adjust
    lunos:{<tag>}:ban:<subject>        "1", expiring with the ban   ban, hit, offend, lift_ban
    lunos:{<tag>}:offences:<subject>   offence count                 offend, lift_ban
    lunos:{<tag>}:slots:<key>          sorted set lease -> expiry    hit, settle, renew
    lunos:{keys}:hash:<hash>           KeyRecord JSON (the hot path: one GET)
    lunos:{keys}:id:<id>               KeyRecord JSON
    lunos:{keys}:account:<account>     set of key ids
    lunos:{accounts}:id:<id>           AccountRecord JSON
    lunos:{accounts}:index:<index>     account id, by email blind index
    lunos:{accounts}:all               set of account ids
    lunos:{usage:<account>}:days       sorted set of days with usage
    lunos:{usage:<account>}:day:<day>  hash "<key id>|<model>|<metric>" -> count
    lunos:{routing}:cooldown           hash deployment -> until (ms, server clock)
    lunos:{spend:<subject>}:<period>   spend counter (micros), expiring   add_spend, spend
    lunos:{spend:<subject>}:periods    set of the subject's periods       delete_spend
    lunos:{claims}:<name>              "1" while a once-only claim holds
    lunos:{usage:<account>}:once:<id>  a batch's marker (Cluster: per tag), a week
    lunos:{spend:<subject>}:once:<id>    (add_usage, add_spend with `once`)
    lunos:{once}:<script>:once:<id>    a batch's marker on one server or Sentinel, a week

The counters of a tag share one hash, so that a call with many limits
reads them with one HMGET and writes them with one HSET; an empty counter
is removed, and the hash expires when its fullest counter would be empty
(a counter no call touches again stays until then).

Everything here is bounded: it grows with accounts, keys, limits and days,
never with requests. Per-request usage events and the billing ledger live
in the records database (lunos_proxy/records/), not here.

The keys that put every account on one Cluster slot, and why each is bounded:
the key and account directories ({keys}, {accounts}: one record per key or
account, so an index always follows its record atomically; reads are cached
in-process), {routing}:cooldown (one field per deployment in the config),
{admin}:tokens (tens of tokens), {audit}:log (capped at AUDIT_MAX_ENTRIES)
and {claims} (webhook notices, expiring). {once} holds a batch's marker
only on one server or Sentinel, where there are no slots: one marker per
flush interval and instance, expiring after a week. On a Cluster a batch's
markers live under each account's or subject's own tag.

On a Cluster, `add_usage` is all or nothing per account (one script per
account's slot); on one server or Sentinel the whole batch is one script.

One module past 400 lines: the limit calls' batching over the pipelined
lanes (most of it) and the accounting share the connection handling; the
directory is in directory.py, and the accounting part leaves with usage
events and billing for the records database.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import importlib.resources
import re
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

import msgspec
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import RedisSSLContext
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from .. import gcra
from ..base import (
    SLOT_RETRY,
    AccountRecord,
    AdminTokenRecord,
    AuditRecord,
    BanEntry,
    KeyRecord,
    Limit,
    Slot,
    SpendDelta,
    Store,
    StoreError,
    UsageDelta,
    UsageRow,
    Verdict,
)
from .bus import RedisBus
from .connect import Client, RedisOptions, connect
from .directory import RedisDirectory
from .lane import Lane, ReplyError, fixed
from .pubsub import Subscriber

__all__ = ["RedisStore"]

_T = TypeVar("_T")
_ERRORS = (RedisError, RedisClusterException, OSError, TimeoutError)
_METRICS = ("requests", "input_tokens", "output_tokens", "cached_input_tokens", "cost_micros")
_SCRIPTS = {
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
_REDIRECTS = ("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN")
# Writes that take a `once` id run as "<name>_once": once.lua, then the script.
_ONCE_ABLE = ("usage_add", "spend_add")


def _redirected(reply: Any) -> bool:
    return isinstance(reply, ReplyError) and str(reply).startswith(_REDIRECTS)


async def _eval(
    call: Callable[..., Awaitable[Any]], run: _Script, keys: Sequence[str], args: Sequence[Any]
) -> Any:
    """A script by SHA over a lane; by its source where the server lacks it."""
    reply = await call("EVALSHA", run.sha, len(keys), *keys, *args)
    if isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT"):
        reply = await call("EVAL", run.source, len(keys), *keys, *args)
    return reply


def _glob(text: str) -> str:
    """`text` matched literally by a SCAN pattern."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


class _Script:
    """A Lua script run by SHA; a server that lacks it (restarted, failed over)
    gets the source with EVAL, which runs it and caches it for next time."""

    __slots__ = ("sha", "source")

    def __init__(self, name: str, parts: Sequence[str] = ()) -> None:
        lua = importlib.resources.files("lunos_proxy.store") / "lua"
        parts = parts or (*_SCRIPTS[name], name)
        self.source = "\n".join((lua / f"{part}.lua").read_text() for part in parts)
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    async def __call__(self, client: Client, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await client.eval(self.source, len(keys), *keys, *args)


class RedisStore(RedisDirectory, RedisBus, Store):
    """`url` as in `connect.py`; `options` are the fields of `RedisOptions`."""

    def __init__(self, url: str, **options: Any) -> None:
        self.options = msgspec.convert(options, RedisOptions)
        self._connected = connect(url, self.options)
        self._client: Client = self._connected.client
        self._cluster = isinstance(self._client, RedisCluster)
        self._scripts = {name: _Script(name) for name in _SCRIPTS}
        self._scripts.update({f"{n}_once": _Script(n, ("once", n)) for n in _ONCE_ABLE})
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
        self._verdicts = msgspec.msgpack.Decoder(list[Verdict]).decode
        self._families: dict[object, _Known] = {}  # LimitSet.family -> what it shares
        # Limit calls and settlements waiting for the loop's turn to end.
        self._hits: dict[str, _Hits] = {}
        self._behind: dict[str, _Batch] = {}
        self._sending = False  # _send is scheduled
        self._settling: set[asyncio.Task[None]] = set()

    async def _do(self, call: Callable[[], Awaitable[_T]]) -> _T:
        async with self._slots:
            try:
                if not self._discovered:
                    await self._discover()
                return await call()
            except _ERRORS as e:
                raise _store_error(e) from e

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

    async def _fast(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """`_run` for the limit calls: over a lane, without a connection slot."""
        run = self._scripts[script]
        try:
            if not self._discovered or self._stale:
                await self._discover()
            lane = self._lane(keys[0])
            reply = await _eval(lane.call, run, keys, args)
            if self._cluster and _redirected(reply):
                lane, reply = await self._follow(run, keys, args, reply)
        except _ERRORS as e:
            # A node that fails may have failed over: read the slot map again
            # before the next call (redis-py does the same for its own calls).
            self._stale = self._cluster
            raise _store_error(e) from e
        if not isinstance(reply, ReplyError):
            return reply
        raise self._failed(reply, lane)

    async def _follow(
        self, run: _Script, keys: Sequence[str], args: Sequence[Any], reply: ReplyError
    ) -> tuple[Lane, Any]:
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
                lane = self._lane(keys[0])
            reply = await _eval(lane.call_asking if kind == "ASK" else lane.call, run, keys, args)
            if not _redirected(reply):
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
        except _ERRORS:
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

    async def _write(
        self, script: str, keys: Sequence[str], args: Sequence[Any], once: str, base: str
    ) -> None:
        """Run a write script; with `once`, at most once per id under the tag of `base`."""
        if once:
            await self._run(f"{script}_once", [*keys, f"{base}once:{once}"], args)
        else:
            await self._run(script, keys, args)

    def _one_node_base(self, script: str) -> str:
        """Where a write spanning tags keeps its `once` marker on one server:
        not under the tag of whatever comes first in the batch, which a
        retried batch may no longer hold (an erased account's rows go)."""
        return f"{self.options.prefix}{{once}}:{script}:"

    def _tagged(self, tag: str) -> str:
        # An empty tag "{}" would not be a hash tag, and spread one call's keys
        # over slots.
        return f"{self.options.prefix}{{{tag or '-'}}}:"

    # -- limits ---------------------------------------------------------------
    async def hit(
        self,
        tag: str,
        limits: Sequence[Limit],
        bans: Sequence[str] = (),
        slots: Sequence[Slot] = (),
        lease: str = "",
    ) -> Verdict:
        """The calls of one tag made in one turn of the event loop leave
        together in the next, as one script call (hit.lua applies them in
        order, each all or none, reading and writing the tag's counters
        once), carrying the settlements of the tag made before it."""
        if not limits and not bans and not slots:
            return Verdict(allowed=True, retry_after=0.0, states=[])
        # What a LimitSet's family shares (the encoded limits and slots, the
        # keys of a tag) is made once; a repeated LimitSet reuses its costs.
        family = getattr(limits, "family", None)
        known = None if family is None else self._families.get(family)
        if known is None or known.slots is not slots:
            known = _Known(limits, slots)
            if family is not None:
                if len(self._families) >= _FAMILIES:
                    self._families.clear()
                self._families[family] = known
        keys = known.keys.get(tag)
        if keys is None:
            base = self._tagged(tag)
            keys = [f"{base}limits", *(f"{base}slots:{slot.key}" for slot in slots)]
            if len(known.keys) < _FAMILIES:
                known.keys[tag] = keys
        call_keys = keys[1:]
        if bans:
            base = self._tagged(tag)
            call_keys = [*call_keys, *(f"{base}ban:{s}" for s in bans)]
        if known.last is not limits:
            known.last, known.costs = limits, _json([lim.cost for lim in limits])
        call = (lease, known.spec, known.costs, known.slot_spec, len(slots), len(bans))
        lane = self._ready_lane(keys[0])
        if lane is None:
            # Not connected (or the Cluster's map is stale): this call
            # connects, alone, on the awaited path.
            reply = await self._fast("hit", [keys[0], *call_keys], [SLOT_RETRY, 1, *call])
            outcome = self._decode_verdicts(reply, 1)
            if isinstance(outcome, StoreError):
                raise outcome
            return outcome[0]
        # The lane's loop is the running one; asking asyncio for it costs a
        # getpid() system call on Python 3.11.
        loop = lane.loop
        future: asyncio.Future[Verdict] = loop.create_future()
        calls = self._hits.get(tag)
        if calls is None:
            calls = self._hits[tag] = _Hits(keys[0])
            self._schedule(loop)
        calls.add(call, call_keys, future)
        return await future

    async def settle(
        self, tag: str, charges: Sequence[Limit], slots: Sequence[str] = (), lease: str = ""
    ) -> None:
        if not charges and not slots:
            return
        batch = _Batch()
        batch.add(charges, slots, lease, None)
        await self._fast("settle", *batch.call(self._tagged(tag)))

    def settle_behind(
        self,
        tag: str,
        charges: Sequence[Limit],
        slots: Sequence[str],
        lease: str,
        done: Callable[[BaseException | None], None],
    ) -> None:
        """Settlements made in one turn of the event loop leave together in the
        next: carried by the tag's `hit` call if there is one, else one
        script call per tag, whatever the number of requests. A client's
        next request cannot reach `hit` before that (reading it takes a
        turn, starting its handler another), so it finds the slot its
        previous request gave back."""
        if not charges and not slots:
            done(None)
            return
        batch = self._behind.get(tag)
        if batch is None:
            batch = self._behind[tag] = _Batch()
            self._schedule()
        batch.add(charges, slots, lease, done)

    def _schedule(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        if not self._sending:
            self._sending = True
            (loop or asyncio.get_running_loop()).call_soon(self._send)

    def _send(self) -> None:
        """Send this turn's hits (each tag's as one call, carrying the tag's
        settlements), then the settlements no hit carried."""
        hits, self._hits = self._hits, {}
        behind, self._behind = self._behind, {}
        self._sending = False
        for tag, calls in hits.items():
            live = calls.live()
            carried = behind.pop(tag, None)
            if not live:  # every caller gave up before this: nothing to ask
                if carried is not None:
                    behind[tag] = carried
                continue
            for start in range(0, len(live), _HITS_PER_CALL):
                self._send_hits(tag, calls.key, live[start : start + _HITS_PER_CALL],
                                carried if start == 0 else None)
        if behind:
            sha = self._scripts["settle"].sha
            for tag, batch in behind.items():
                keys, args = batch.call(self._tagged(tag))
                lane = self._ready_lane(keys[0])
                if lane is None:  # not connected yet: the awaited path connects
                    self._settle_later(keys, args, batch.done)
                    continue
                reply = lane.send("EVALSHA", sha, len(keys), *keys, *args)
                reply.add_done_callback(functools.partial(self._settled, keys, args, batch, lane))

    def _send_hits(self, tag: str, key: str, calls: list[_Call], carried: _Batch | None) -> None:
        lane = self._ready_lane(key)
        if lane is None:  # the connection went: the awaited path connects
            self._hit_later(tag, key, calls, carried)
            return
        keys, args = _hit_call(key, calls, carried, self._tagged(tag))
        reply = lane.send("EVALSHA", self._scripts["hit"].sha, len(keys), *keys, *args)
        reply.add_done_callback(
            functools.partial(self._hit_done, tag, key, calls, carried, lane)
        )

    def _hit_done(
        self,
        tag: str,
        key: str,
        calls: list[_Call],
        carried: _Batch | None,
        lane: Lane,
        reply: asyncio.Future[Any],
    ) -> None:
        answer = self._read(reply, lane)
        if answer is _NOT_RUN:
            self._hit_later(tag, key, calls, carried)
            return
        futures = [future for _, _, future in calls]
        if isinstance(answer, StoreError):
            _answer(futures, carried, answer)
        else:
            _answer(futures, carried, self._decode_verdicts(answer, len(futures)))

    def _read(self, reply: asyncio.Future[Any], lane: Lane) -> Any:
        """What a reply sent behind says: the answer, a StoreError, or
        `_NOT_RUN` (NOSCRIPT, a Cluster redirect: the awaited path loads the
        script or follows the redirect)."""
        if reply.cancelled():
            return StoreError("redis: the call was dropped")
        if (e := reply.exception()) is not None:
            self._stale = self._cluster  # a node that fails may have failed over
            error = _store_error(e)
            error.__cause__ = e
            return error
        answer = reply.result()
        if isinstance(answer, ReplyError):
            if str(answer).startswith(("NOSCRIPT", *_REDIRECTS)):
                return _NOT_RUN
            return self._failed(answer, lane)
        return answer

    def _decode_verdicts(self, answer: Any, count: int) -> list[Verdict] | StoreError:
        try:
            verdicts: list[Verdict] = self._verdicts(answer)
        except (msgspec.MsgspecError, TypeError) as e:
            return StoreError(f"redis: unreadable limit reply ({type(e).__name__})")
        if len(verdicts) != count:
            return StoreError(f"redis: {len(verdicts)} verdicts for {count} calls")
        return verdicts

    def _hit_later(
        self, tag: str, key: str, calls: list[_Call], carried: _Batch | None
    ) -> None:
        """Send `calls` on the awaited path (connecting, loading the script or
        following a redirect): only those whose caller still waits, since the
        first attempt did not run."""

        async def hit() -> None:
            live = [call for call in calls if not call[2].done()]
            futures = [future for _, _, future in live]
            outcome: list[Verdict] | StoreError
            try:
                if not live:
                    if carried is not None:
                        await self._fast("settle", *carried.call(self._tagged(tag)))
                    outcome = []
                else:
                    keys, args = _hit_call(key, live, carried, self._tagged(tag))
                    outcome = self._decode_verdicts(
                        await self._fast("hit", keys, args), len(futures)
                    )
            except StoreError as e:
                outcome = e
            except BaseException as e:
                # No caller may wait forever, whatever went wrong here.
                failed = StoreError(f"redis: limit call failed ({type(e).__name__})")
                _answer(futures, carried, failed)
                raise
            _answer(futures, carried, outcome)

        self._later(hit())

    def _later(self, call: Coroutine[Any, Any, None]) -> None:
        """Run a call sent behind on the awaited path; `close` waits for it."""
        task = asyncio.get_running_loop().create_task(call)
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    def _settled(
        self,
        keys: list[str],
        args: list[Any],
        batch: _Batch,
        lane: Lane,
        reply: asyncio.Future[Any],
    ) -> None:
        answer = self._read(reply, lane)
        if answer is _NOT_RUN:
            self._settle_later(keys, args, batch.done)
        else:
            batch.finish(answer if isinstance(answer, StoreError) else None)

    def _settle_later(
        self, keys: list[str], args: list[Any], dones: list[Callable[[BaseException | None], None]]
    ) -> None:
        async def settle() -> None:
            error: StoreError | None = None
            try:
                await self._fast("settle", keys, args)
            except StoreError as e:
                error = e
            for done in dones:
                done(error)

        self._later(settle())

    async def renew(self, tag: str, slots: Sequence[Slot], lease: str) -> None:
        if slots:
            base = self._tagged(tag)
            keys = [f"{base}slots:{slot.key}" for slot in slots]
            await self._fast("renew", keys, [lease, *(slot.ttl for slot in slots)])

    async def offend(
        self, tag: str, subject: str, first: float, longest: float, memory: float
    ) -> float:
        base = self._tagged(tag)
        keys = [f"{base}offences:{subject}", f"{base}ban:{subject}"]
        return float(await self._run("offend", keys, [first, longest, memory]))

    async def adjust(self, tag: str, limit: Limit) -> None:
        gcra.validate(limit)
        key = f"{self._tagged(tag)}limits"
        await self._run("adjust", [key], [limit.key, limit.limit, limit.window, limit.cost])

    async def ban(self, tag: str, subject: str, seconds: float) -> None:
        key = f"{self._tagged(tag)}ban:{subject}"
        await self._run("ban", [key], [round(seconds * 1000)])

    async def bans(self, tag_prefix: str) -> list[BanEntry]:
        prefix = self.options.prefix
        pattern = f"{_glob(prefix)}{{{_glob(tag_prefix)}*}}:ban:*"
        shape = re.compile(re.escape(prefix) + r"\{(?P<tag>[^}]*)\}:ban:(?P<subject>.*)", re.S)

        async def walk() -> list[BanEntry]:
            found: list[BanEntry] = []
            # SCAN on every master of a Cluster (redis-py walks them in turn).
            async for raw in self._client.scan_iter(match=pattern, count=1000):
                key = raw.decode() if isinstance(raw, bytes) else str(raw)
                m = shape.fullmatch(key)
                ms = await self._client.pttl(key)
                if m is not None and ms > 0:
                    found.append(BanEntry(m["tag"], m["subject"], ms / 1000))
            return sorted(found, key=lambda b: (b.tag, b.subject))

        return await self._do(walk)

    async def lift_ban(self, tag: str, subject: str, counters: Sequence[str] = ()) -> bool:
        base = self._tagged(tag)
        keys = [f"{base}ban:{subject}", f"{base}offences:{subject}", f"{base}limits"]
        lifted: int = await self._run("lift_ban", keys, list(counters))
        return lifted > 0

    # -- usage and billing ----------------------------------------------------
    def _usage_base(self, account_id: str) -> str:
        return f"{self.options.prefix}{{usage:{account_id}}}:"

    async def add_usage(self, deltas: Sequence[UsageDelta], *, once: str = "") -> None:
        # Summed first so that each counter is one HINCRBY.
        sums: defaultdict[str, defaultdict[str, defaultdict[str, int]]] = defaultdict(
            lambda: defaultdict(lambda: defaultdict(int))
        )
        for d in deltas:
            fields = sums[d.account_id][d.day]
            for metric in _METRICS:
                fields[f"{d.key_id}|{d.model}|{metric}"] += getattr(d, metric)
        calls: list[tuple[list[str], list[Any], str]] = []
        for account_id, days in sums.items():
            base = self._usage_base(account_id)
            keys: list[str] = []
            args: list[Any] = []
            for day, fields in days.items():
                keys += (f"{base}days", f"{base}day:{day}")
                args += (day, len(fields))
                for field, value in fields.items():
                    args += (field, value)
            calls.append((keys, args, base))
        if not calls:
            return
        if self._cluster:
            await asyncio.gather(*(self._write("usage_add", k, a, once, b) for k, a, b in calls))
        else:
            keys = [k for c in calls for k in c[0]]
            args = [a for c in calls for a in c[1]]
            await self._write("usage_add", keys, args, once, self._one_node_base("usage_add"))

    async def usage(self, account_id: str, first_day: str, last_day: str) -> list[UsageRow]:
        base = self._usage_base(account_id)
        out = await self._run("usage_get", [f"{base}days"], [first_day, last_day, f"{base}day:"])
        rows: dict[tuple[str, str, str], dict[str, int]] = {}
        for i in range(0, len(out), 2):
            day, flat = out[i].decode(), out[i + 1]
            for j in range(0, len(flat), 2):
                key_id, _, rest = flat[j].decode().partition("|")
                model, _, metric = rest.rpartition("|")
                rows.setdefault((day, key_id, model), {})[metric] = int(flat[j + 1])
        return [
            UsageRow(day=day, key_id=key_id, model=model, **counters)
            for (day, key_id, model), counters in sorted(rows.items())
        ]

    async def delete_usage(self, account_id: str) -> int:
        base = self._usage_base(account_id)
        rows: int = await self._run("usage_delete", [f"{base}days"], [f"{base}day:", len(_METRICS)])
        return rows

    # -- routing --------------------------------------------------------------
    def _cooldown_key(self) -> str:
        return f"{self.options.prefix}{{routing}}:cooldown"

    async def cool_down(self, subject: str, seconds: float) -> float:
        ms = round(seconds * 1000)
        left = await self._run("cool_down", [self._cooldown_key()], [subject, ms])
        return int(left) / 1000

    async def cooldowns(self) -> dict[str, float]:
        flat = await self._run("cooldowns", [self._cooldown_key()])
        return {flat[i].decode(): int(flat[i + 1]) / 1000 for i in range(0, len(flat), 2)}

    # -- metering -------------------------------------------------------------
    async def _per_tag(
        self,
        script: str,
        calls: dict[str, tuple[list[str], list[Any]]],
        base: Callable[[str], str],
        once: str,
        head: Sequence[Any] = (),
    ) -> None:
        # One script per hash tag on a Cluster; one for everything elsewhere.
        if not calls:
            return
        if self._cluster:
            await asyncio.gather(
                *(
                    self._write(script, k, [*head, *a], once, base(tag))
                    for tag, (k, a) in calls.items()
                )
            )
        else:
            keys = [k for c in calls.values() for k in c[0]]
            args = [a for c in calls.values() for a in c[1]]
            await self._write(script, keys, [*head, *args], once, self._one_node_base(script))

    def _spend_base(self, subject: str) -> str:
        return f"{self.options.prefix}{{spend:{subject}}}:"

    def _spend_key(self, subject: str, period: str) -> str:
        return f"{self._spend_base(subject)}{period}"

    async def add_spend(self, deltas: Sequence[SpendDelta], *, once: str = "") -> None:
        calls: dict[str, tuple[list[str], list[Any]]] = {}
        for d in deltas:
            keys, args = calls.setdefault(d.subject, ([], []))
            base = self._spend_base(d.subject)
            keys += (f"{base}{d.period}", f"{base}periods")
            args += (d.micros, d.ttl, d.period)
        await self._per_tag("spend_add", calls, self._spend_base, once)

    async def spend(self, subject: str, periods: Sequence[str]) -> list[int]:
        if not periods:
            return []
        keys = [self._spend_key(subject, p) for p in periods]
        out = await self._run("spend_get", keys)
        return [int(v) if v is not None else 0 for v in out]

    async def spend_counters(self, subject: str) -> dict[str, int]:
        base = self._spend_base(subject)
        pairs = await self._run("spend_all", [f"{base}periods"], [base])
        return {pairs[i].decode(): int(pairs[i + 1]) for i in range(0, len(pairs), 2)}

    async def delete_spend(self, subject: str) -> int:
        base = self._spend_base(subject)
        n: int = await self._run("spend_delete", [f"{base}periods"], [base])
        return n

    async def claim(self, name: str, ttl: int) -> bool:
        key = f"{self.options.prefix}{{claims}}:{name}"
        return bool(await self._do(lambda: self._client.set(key, b"1", nx=True, ex=max(1, ttl))))

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
        if self._hits or self._behind:
            self._send()
        if self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)
        for lane in self._lanes.values():
            await lane.close()
        self._lanes.clear()
        await self._subscriber.close()
        try:
            await self._connected.aclose()
        except _ERRORS:
            pass  # closing: a dead server has nothing left to release


def _store_error(e: BaseException) -> StoreError:
    return StoreError(f"redis: {type(e).__name__}: {e}")


class _Batch:
    """Settlements of one tag, sent as one call of settle.lua."""

    __slots__ = ("done", "fields", "leases", "spec")

    def __init__(self) -> None:
        self.spec: list[float] = []  # limit, window, cost per charge
        self.fields: list[str] = []
        self.leases: dict[str, list[str]] = {}  # slot key -> leases to give back
        self.done: list[Callable[[BaseException | None], None]] = []

    def add(
        self,
        charges: Sequence[Limit],
        slots: Sequence[str],
        lease: str,
        done: Callable[[BaseException | None], None] | None,
    ) -> None:
        for c in charges:
            gcra.validate(c)
            self.spec += (c.limit, c.window, c.cost)
            self.fields.append(c.key)
        for key in slots:
            leases = self.leases.get(key)
            if leases is None:
                self.leases[key] = [lease]
            else:
                leases.append(lease)
        if done is not None:
            self.done.append(done)

    def finish(self, error: BaseException | None) -> None:
        for done in self.done:
            done(error)

    def call(self, base: str) -> tuple[list[str], list[Any]]:
        keys = [f"{base}limits", *(f"{base}slots:{key}" for key in self.leases)]
        args: list[Any] = [_json(self.spec), *self.fields]
        for leases in self.leases.values():
            args.append(len(leases))
            args += leases
        return keys, args


_NOT_RUN = object()  # a reply saying its call did not run (RedisStore._read)

# One hit call waiting to be sent: hit.lua's six arguments for it, its keys
# past the counter hash, and its caller's future.
_Call = tuple[tuple[Any, ...], list[str], "asyncio.Future[Verdict]"]
_HITS_PER_CALL = 256  # calls of one tag per script call (Lua's unpack() has a bounded stack)


class _Hits:
    """The hit calls of one tag waiting for the loop's turn to end."""

    __slots__ = ("calls", "key")

    def __init__(self, key: str) -> None:
        self.key = key  # the tag's counter hash
        self.calls: list[_Call] = []

    def add(self, call: tuple[Any, ...], keys: list[str], future: asyncio.Future[Verdict]) -> None:
        self.calls.append((call, keys, future))

    def live(self) -> list[_Call]:
        """The calls whose caller still waits (one that gave up took nothing)."""
        return [c for c in self.calls if not c[2].done()]


def _hit_call(
    key: str, calls: list[_Call], carried: _Batch | None, base: str
) -> tuple[list[str], list[Any]]:
    """hit.lua's KEYS and ARGV for `calls` of one tag, carrying `carried`."""
    keys = [key]
    args: list[Any] = [SLOT_RETRY, len(calls)]
    for call, call_keys, _ in calls:
        args += call
        keys += call_keys
    if carried is not None:
        settle_keys, settle_args = carried.call(base)
        keys += settle_keys[1:]
        args += (len(settle_keys) - 1, *settle_args)
    return keys, args


def _answer(
    futures: list[asyncio.Future[Verdict]],
    carried: _Batch | None,
    outcome: list[Verdict] | StoreError,
) -> None:
    """Give each caller its verdict, or its own copy of the error; then
    report the carried settlements."""
    error = outcome if isinstance(outcome, StoreError) else None
    for i, future in enumerate(futures):
        if future.done():  # the caller gave up meanwhile
            continue
        if error is None:
            assert not isinstance(outcome, StoreError)
            future.set_result(outcome[i])
        else:
            own = StoreError(str(error))
            own.__cause__ = error.__cause__
            future.set_exception(own)
    if carried is not None:
        carried.finish(error)


class _Known:
    """What hit.lua needs of the limits and slots of one LimitSet family."""

    __slots__ = ("costs", "keys", "last", "slot_spec", "slots", "spec")

    def __init__(self, limits: Sequence[Limit], slots: Sequence[Slot]) -> None:
        spec: list[str | float] = []
        for lim in limits:
            gcra.validate(lim)
            spec += (lim.key, lim.limit, lim.window, int(lim.shadow))
        self.spec = _json(spec)  # field limit window shadow per limit
        self.slots = slots
        self.slot_spec = _json([x for s in slots for x in (s.limit, s.ttl, int(s.shadow))])
        self.keys: dict[str, list[str]] = {}  # tag -> counter hash and slot keys
        self.last: Sequence[Limit] | None = None  # the limits `costs` was made from
        self.costs = b""


# msgspec writes floats in their shortest exact form, which Lua's cjson reads back exactly.
_json = msgspec.json.encode
_FAMILIES = 4096  # LimitSet families whose encoded parts are kept
