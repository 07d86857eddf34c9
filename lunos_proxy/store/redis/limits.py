"""Limits on Redis (`Limits`): check-and-consume, settle, leases, bans.

Mixed into `RedisStore`, which owns the connections: the limit calls go
over its pipelined lanes (`_fast`, lane.py: one per server), the rare
ones (`offend`, `ban`, `bans`, ...) through redis-py (`_run`, `_do`).
Every call of one tag is one script on one Cluster node; its keys:

    lunos:{<tag>}:limits               hash <key> -> counter (level, stamp)   hit, settle, adjust
    lunos:{<tag>}:ban:<subject>        "1", expiring with the ban   ban, hit, offend, lift_ban
    lunos:{<tag>}:offences:<subject>   offence count                 offend, lift_ban
    lunos:{<tag>}:slots:<key>          sorted set lease -> expiry    hit, settle, renew

The counters of a tag share one hash, so that a call with many limits
reads them with one HMGET and writes them with one HSET; an empty counter
is removed, and the hash expires when its fullest counter would be empty
(a counter no call touches again stays until then).

The calls of one tag made in one turn of the event loop leave together in
the next, as one script call (`hit`), carrying the settlements of the tag
made before it (`settle_behind`).

One module past 400 lines: the batching of one turn's hits and
settlements (`_send` and the replies it reads back, `_Batch`, `_Hits`,
`_Known`) is one mechanism, and the calls that feed it sit beside it.
"""

from __future__ import annotations

import abc
import asyncio
import functools
import re
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

import msgspec

from .. import gcra
from ..errors import StoreError
from ..limits import SLOT_RETRY, BanEntry, Limit, Limits, Slot, Verdict
from .connect import Client, RedisOptions
from .lane import Lane, ReplyError
from .resp import ScriptCall, arg, data, number
from .scripts import REDIRECTS, Script, store_error

__all__ = ["RedisLimits"]

_T = TypeVar("_T")


def _glob(text: str) -> str:
    """`text` matched literally by a SCAN pattern."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


class RedisLimits(Limits):
    options: RedisOptions
    _client: Client
    _cluster: bool
    _stale: bool
    _scripts: dict[str, Script]

    def __init__(self) -> None:
        self._verdicts = msgspec.msgpack.Decoder(list[Verdict]).decode
        self._families: dict[object, _Known] = {}  # LimitSet.family -> what it shares
        # Limit calls and settlements waiting for the loop's turn to end.
        self._hits: dict[str, _Hits] = {}
        self._behind: dict[str, _Batch] = {}
        self._sending = False  # _send is scheduled
        self._settling: set[asyncio.Task[None]] = set()

    @abc.abstractmethod
    async def _do(self, call: Callable[[], Awaitable[_T]]) -> _T: ...

    @abc.abstractmethod
    async def _run(self, script: str, keys: Sequence[str], args: Sequence[Any] = ()) -> Any: ...

    @abc.abstractmethod
    async def _fast(self, script: str, call: ScriptCall) -> Any:
        """`_run` over a lane, without a connection slot."""

    @abc.abstractmethod
    def _ready_lane(self, key: str) -> Lane | None:
        """The key's lane if it is connected now, else None."""

    @abc.abstractmethod
    def _failed(self, reply: ReplyError, lane: Lane) -> StoreError: ...

    async def _drain(self) -> None:
        """Send what waits for the loop's turn, and wait for the calls sent
        behind on the awaited path (closing)."""
        if self._hits or self._behind:
            self._send()
        if self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)

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
        tagged = known.tags.get(tag)
        if tagged is None:
            tagged = _Tagged(self._tagged(tag), slots)
            if len(known.tags) < _FAMILIES:
                known.tags[tag] = tagged
        if known.last is not limits:
            known.last, known.costs = limits, msgspec.Raw(_json([lim.cost for lim in limits]))
        if bans:
            base = tagged.base
            keys = tagged.slots + b"".join([arg(f"{base}ban:{s}") for s in bans])
            call = ((lease, len(bans), known.costs), known.kind, keys, len(slots) + len(bans))
        else:
            call = ((lease, 0, known.costs), known.kind, tagged.slots, len(slots))
        hits = self._hits.get(tag)
        if hits is None:
            # The first call of the tag in this turn (the others join it;
            # whether the lane is still connected is asked when they leave).
            lane = self._ready_lane(tagged.hash)
            if lane is None:
                # Not connected (or the Cluster's map is stale): this call
                # connects, alone, on the awaited path.
                reply = await self._fast("hit", _hit_call(tagged, [call], None))
                outcome = self._decode_verdicts(reply, 1)
                if isinstance(outcome, StoreError):
                    raise outcome
                return outcome[0]
            # The lane's loop is the running one; asking asyncio for it costs
            # a getpid() system call on Python 3.11.
            hits = self._hits[tag] = _Hits(tagged, lane.loop)
            self._schedule(lane.loop)
        future: asyncio.Future[Verdict] = hits.loop.create_future()
        hits.calls.append(call)
        hits.futures.append(future)
        return await future

    async def settle(
        self, tag: str, charges: Sequence[Limit], slots: Sequence[str] = (), lease: str = ""
    ) -> None:
        if not charges and not slots:
            return
        batch = _Batch()
        batch.add(charges, slots, lease, None)
        await self._fast("settle", batch.alone(self._tagged(tag)))

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
        for tag, waiting in hits.items():
            calls, futures = waiting.live()
            carried = behind.pop(tag, None)
            if not calls:  # every caller gave up before this: nothing to ask
                if carried is not None:
                    behind[tag] = carried
                continue
            for start in range(0, len(calls), _HITS_PER_CALL):
                end = start + _HITS_PER_CALL
                self._send_hits(waiting.tagged, calls[start:end], futures[start:end],
                                carried if start == 0 else None)
        if behind:
            sha = self._scripts["settle"].sha_arg
            for tag, batch in behind.items():
                call = batch.alone(self._tagged(tag))
                lane = self._ready_lane(call.key)
                if lane is None:  # not connected yet: the awaited path connects
                    self._settle_later(call, batch.done)
                    continue
                reply = lane.send(call.evalsha(sha))
                reply.add_done_callback(functools.partial(self._settled, call, batch, lane))

    def _send_hits(
        self,
        tagged: _Tagged,
        calls: list[_Call],
        futures: list[asyncio.Future[Verdict]],
        carried: _Batch | None,
    ) -> None:
        lane = self._ready_lane(tagged.hash)
        if lane is None:  # the connection went: the awaited path connects
            self._hit_later(tagged, calls, futures, carried)
            return
        reply = lane.send(_hit_call(tagged, calls, carried).evalsha(self._scripts["hit"].sha_arg))
        reply.add_done_callback(
            functools.partial(self._hit_done, tagged, calls, futures, carried, lane)
        )

    def _hit_done(
        self,
        tagged: _Tagged,
        calls: list[_Call],
        futures: list[asyncio.Future[Verdict]],
        carried: _Batch | None,
        lane: Lane,
        reply: asyncio.Future[Any],
    ) -> None:
        answer = self._read(reply, lane)
        if answer is _NOT_RUN:
            self._hit_later(tagged, calls, futures, carried)
        elif isinstance(answer, StoreError):
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
            error = store_error(e)
            error.__cause__ = e
            return error
        answer = reply.result()
        if isinstance(answer, ReplyError):
            if str(answer).startswith(("NOSCRIPT", *REDIRECTS)):
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
        self,
        tagged: _Tagged,
        calls: list[_Call],
        futures: list[asyncio.Future[Verdict]],
        carried: _Batch | None,
    ) -> None:
        """Send `calls` on the awaited path (connecting, loading the script or
        following a redirect): only those whose caller still waits, since the
        first attempt did not run."""

        async def hit() -> None:
            live = [i for i, future in enumerate(futures) if not future.done()]
            waiting = [futures[i] for i in live]
            outcome: list[Verdict] | StoreError
            try:
                if not live:
                    if carried is not None:
                        await self._fast("settle", carried.alone(tagged.base))
                    outcome = []
                else:
                    call = _hit_call(tagged, [calls[i] for i in live], carried)
                    outcome = self._decode_verdicts(await self._fast("hit", call), len(live))
            except StoreError as e:
                outcome = e
            except BaseException as e:
                # No caller may wait forever, whatever went wrong here.
                failed = StoreError(f"redis: limit call failed ({type(e).__name__})")
                _answer(waiting, carried, failed)
                raise
            _answer(waiting, carried, outcome)

        self._later(hit())

    def _later(self, call: Coroutine[Any, Any, None]) -> None:
        """Run a call sent behind on the awaited path; `close` waits for it."""
        task = asyncio.get_running_loop().create_task(call)
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    def _settled(
        self, call: ScriptCall, batch: _Batch, lane: Lane, reply: asyncio.Future[Any]
    ) -> None:
        answer = self._read(reply, lane)
        if answer is _NOT_RUN:
            self._settle_later(call, batch.done)
        else:
            batch.finish(answer if isinstance(answer, StoreError) else None)

    def _settle_later(
        self, call: ScriptCall, dones: list[Callable[[BaseException | None], None]]
    ) -> None:
        async def settle() -> None:
            error: StoreError | None = None
            try:
                await self._fast("settle", call)
            except StoreError as e:
                error = e
            for done in dones:
                done(error)

        self._later(settle())

    async def renew(self, tag: str, slots: Sequence[Slot], lease: str) -> None:
        if slots:
            base = self._tagged(tag)
            keys = [f"{base}slots:{slot.key}" for slot in slots]
            ttls = b"".join([number(slot.ttl) for slot in slots])
            call = ScriptCall(keys[0], len(keys), b"".join(map(arg, keys)), 1 + len(slots),
                              arg(lease) + ttls)
            await self._fast("renew", call)

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



class _Batch:
    """Settlements of one tag, sent as one call of settle.lua (or carried by
    a call of hit.lua)."""

    __slots__ = ("charges", "done", "leases")

    def __init__(self) -> None:
        self.charges: list[str | float] = []  # field limit window cost per charge
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
            if c.window <= 0 or c.limit < 0:
                gcra.validate(c)  # raises
            self.charges += (c.key, c.limit, c.window, c.cost)
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

    def carried(self, base: str) -> tuple[int, bytes, bytes]:
        """settle.lua's KEYS past the counter hash (how many, encoded) and
        its two ARGV (encoded), for the tag whose keys start with `base`."""
        keys = b"".join([arg(f"{base}slots:{key}") for key in self.leases])
        args = data(_json(self.charges)) + data(_json(list(self.leases.values())))
        return len(self.leases), keys, args

    def alone(self, base: str) -> ScriptCall:
        """The call of settle.lua that sends these settlements."""
        nkeys, keys, args = self.carried(base)
        hash_key = f"{base}limits"
        return ScriptCall(hash_key, 1 + nkeys, arg(hash_key) + keys, 2, args)


_NOT_RUN = object()  # a reply saying its call did not run (RedisLimits._read)

# One hit call waiting to be sent: what hit.lua is told of it (its lease,
# number of bans and costs; its kind, encoded), and its keys past the
# counter hash (encoded, how many).
_Call = tuple[tuple[str, int, msgspec.Raw], bytes, bytes, int]
_HITS_PER_CALL = 256  # calls of one tag per script call (Lua's unpack() has a bounded stack)


class _Hits:
    """The hit calls of one tag waiting for the loop's turn to end, and their callers."""

    __slots__ = ("calls", "futures", "loop", "tagged")

    def __init__(self, tagged: _Tagged, loop: asyncio.AbstractEventLoop) -> None:
        self.tagged = tagged  # the tag's keys (its counter hash; slots are per call)
        self.loop = loop
        self.calls: list[_Call] = []
        self.futures: list[asyncio.Future[Verdict]] = []

    def live(self) -> tuple[list[_Call], list[asyncio.Future[Verdict]]]:
        """The calls whose caller still waits (one that gave up took nothing)."""
        futures = self.futures
        if not any(future.done() for future in futures):
            return self.calls, futures
        live = [i for i, future in enumerate(futures) if not future.done()]
        return [self.calls[i] for i in live], [futures[i] for i in live]


def _hit_call(tagged: _Tagged, calls: Sequence[_Call], carried: _Batch | None) -> ScriptCall:
    """The call of hit.lua for `calls` of one tag, carrying `carried`."""
    keys, heads, args = [tagged.hash_arg], [], [_SLOT_RETRY, b""]
    nkeys = 1
    for head, kind, call_keys, n in calls:
        heads.append(head)
        args.append(kind)
        keys.append(call_keys)
        nkeys += n
    args[1] = data(_json(heads))
    nargs = 2 + len(calls)
    if carried is not None:
        k, settle_keys, settle_args = carried.carried(tagged.base)
        keys.append(settle_keys)
        args += (number(k), settle_args)
        nkeys += k
        nargs += 3
    return ScriptCall(tagged.hash, nkeys, b"".join(keys), nargs, b"".join(args))


def _answer(
    futures: list[asyncio.Future[Verdict]],
    carried: _Batch | None,
    outcome: list[Verdict] | StoreError,
) -> None:
    """Give each caller its verdict, or its own copy of the error; then
    report the carried settlements."""
    error = outcome if isinstance(outcome, StoreError) else None
    if error is None:
        assert not isinstance(outcome, StoreError)
        for future, verdict in zip(futures, outcome, strict=True):
            if not future.done():  # (done: the caller gave up meanwhile)
                future.set_result(verdict)
    else:
        for future in futures:
            if not future.done():
                own = StoreError(str(error))
                own.__cause__ = error.__cause__
                future.set_exception(own)
    if carried is not None:
        carried.finish(error)


class _Known:
    """What hit.lua needs of the limits and slots of one LimitSet family, encoded."""

    __slots__ = ("costs", "kind", "last", "slots", "tags")

    def __init__(self, limits: Sequence[Limit], slots: Sequence[Slot]) -> None:
        spec: list[str | float] = []
        for lim in limits:
            gcra.validate(lim)
            spec += (lim.key, lim.limit, lim.window, int(lim.shadow))
        slot_spec = [x for s in slots for x in (s.limit, s.ttl, int(s.shadow))]
        self.kind = data(_json([spec, slot_spec]))
        self.slots = slots
        self.tags: dict[str, _Tagged] = {}
        self.last: Sequence[Limit] | None = None  # the limits `costs` was made from
        self.costs = msgspec.Raw(b"[]")


class _Tagged:
    """The keys of one tag, encoded: its counter hash, and a family's slots."""

    __slots__ = ("base", "hash", "hash_arg", "slots")

    def __init__(self, base: str, slots: Sequence[Slot]) -> None:
        self.base = base
        self.hash = f"{base}limits"
        self.hash_arg = arg(self.hash)
        self.slots = b"".join([arg(f"{base}slots:{slot.key}") for slot in slots])


# msgspec writes floats in their shortest exact form, which Lua's cjson reads back exactly.
_json = msgspec.json.encode
_FAMILIES = 4096  # LimitSet families whose encoded parts are kept
_SLOT_RETRY = number(SLOT_RETRY)
