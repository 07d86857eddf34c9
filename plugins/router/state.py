"""Live state of deployments: in-flight counts, latency, breakers, cooldowns.

`Registry` outlives config reloads (it is kept in `Services.lasting[REGISTRY]`), so a
reload keeps breakers, latency averages and in-flight counts; a deployment
is the same one across reloads when its id (`name`, or "provider/model")
is the same.

Cooldowns (a provider said "Retry-After") are shared through the store so
every instance skips a cooling deployment. Reading the store on every
request would cost a round trip, so each instance keeps a local copy:

- setting one writes it locally at once, then to the store and to the
  ``routing:cooldown`` channel in the background;
- a message on that channel updates every other instance's copy (Redis
  pub/sub: milliseconds);
- a message can be lost (pub/sub is fire-and-forget, e.g. while reconnecting),
  so the copy is also replaced from the store at most every `sync_seconds`,
  in the background, when requests arrive.

So instances agree within pub/sub latency, and at worst within
`sync_seconds`. Durations travel as "seconds left" on the store's clock,
never as wall-clock instants, so clock skew between hosts does not matter.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
import structlog

from lunos_proxy.logs import error_name
from lunos_proxy.plugin import ViewKey

from .breaker import Breaker, BreakerSettings, BreakerState

if TYPE_CHECKING:
    from lunos_proxy.config import Deployment, Timeouts
    from lunos_proxy.store.base import Limit
    from lunos_proxy.store.bus import Bus

__all__ = ["CHANNEL", "REGISTRY", "Candidate", "Cooldowns", "DeploymentState", "Registry"]

log = structlog.get_logger("lunos.router")

CHANNEL = "routing:cooldown"


class DeploymentState:
    """What this instance knows of one deployment right now."""

    __slots__ = ("breaker", "id", "in_flight", "latency", "samples")

    def __init__(self, deployment_id: str, breaker: BreakerSettings) -> None:
        self.id = deployment_id
        self.in_flight = 0
        self.latency = 0.0  # EWMA of time to first byte, seconds
        self.samples = 0
        self.breaker = Breaker(breaker)

    def observe_latency(self, seconds: float, alpha: float) -> None:
        if self.samples == 0:
            self.latency = seconds
        else:
            self.latency += alpha * (seconds - self.latency)
        self.samples += 1


class Candidate:
    """One deployment of one public model, as built from the current config."""

    __slots__ = (
        "deployment",
        "id",
        "index",
        "limits",
        "max_concurrent",
        "metered",
        "price",
        "priority",
        "provider",
        "region",
        "state",
        "timeouts",
        "tpm",
        "weight",
    )

    def __init__(
        self,
        index: int,
        deployment: Deployment,
        region: str,
        timeouts: Timeouts,
        price: float | None,
        state: DeploymentState,
    ) -> None:
        self.index = index
        self.deployment = deployment
        self.id = deployment.id
        self.provider = deployment.provider
        self.region = region
        self.weight = deployment.weight
        self.priority = deployment.priority
        self.timeouts = timeouts
        self.price = price
        self.state = state
        cap = deployment.capacity
        self.max_concurrent = cap.max_concurrent if cap else None
        self.tpm = cap.tokens_per_minute if cap else None
        # Whether choosing this one costs a store round trip.
        self.limits = bool(cap and (cap.requests_per_minute or cap.tokens_per_minute))
        # Metric children the router looks up once, not per request.
        self.metered: Any = None

    def store_limits(self, tokens: int) -> list[Limit]:
        from lunos_proxy.store.base import Limit

        cap = self.deployment.capacity
        out: list[Limit] = []
        if cap is not None and cap.requests_per_minute:
            out.append(Limit("rpm", cap.requests_per_minute, 60.0, 1))
        if cap is not None and cap.tokens_per_minute:
            out.append(
                Limit("tpm", cap.tokens_per_minute, 60.0, min(tokens, cap.tokens_per_minute))
            )
        return out

    @property
    def tag(self) -> str:
        return f"route:{self.id}"


class _CooldownMessage(msgspec.Struct):
    deployment: str
    seconds: float


class Cooldowns:
    """This instance's copy of the shared cooldowns (see the module docstring)."""

    def __init__(
        self, store: Bus, sync_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.store = store
        self.sync_seconds = sync_seconds
        self.clock = clock
        self._until: dict[str, float] = {}
        self._synced = -float("inf")
        self._tasks: set[asyncio.Task[Any]] = set()
        self._failing = False
        self.started = False

    async def start(self) -> None:
        """Subscribe (once per gateway: the registry outlives reloads) and load."""
        from lunos_proxy.store.base import StoreError

        self.started = True
        try:
            await self.store.subscribe(CHANNEL, self._heard)
        except StoreError as e:
            # Serving goes on with local cooldowns; the periodic sync catches up.
            log.warning("cooldown_subscribe_failed", error=error_name(e))
        await self._sync()

    async def drain(self) -> None:
        """Wait for background writes and refreshes (each is one store call)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def active(self) -> bool:
        """Whether any cooldown may be running (ended ones go at the next sync)."""
        return bool(self._until)

    def left(self, deployment_id: str, now: float) -> float:
        until = self._until.get(deployment_id)
        return 0.0 if until is None or until <= now else until - now

    def all(self) -> dict[str, float]:
        now = self.clock()
        return {d: until - now for d, until in self._until.items() if until > now}

    def cool(self, deployment_id: str, seconds: float) -> None:
        """Start a cooldown here at once and share it in the background."""
        self._set(deployment_id, seconds)
        self._spawn(self._share(deployment_id, seconds))

    def maybe_sync(self, now: float) -> None:
        """Refresh from the store if the last refresh is older than `sync_seconds`."""
        if now - self._synced >= self.sync_seconds:
            self._synced = now
            self._spawn(self._sync())

    def _set(self, deployment_id: str, seconds: float) -> None:
        until = self.clock() + seconds
        if until > self._until.get(deployment_id, 0.0):
            self._until[deployment_id] = until

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _share(self, deployment_id: str, seconds: float) -> None:
        from lunos_proxy.store.base import StoreError

        try:
            left = await self.store.cool_down(deployment_id, seconds)
            await self.store.publish(
                CHANNEL, _encode(_CooldownMessage(deployment_id, left)).decode()
            )
        except StoreError as e:
            log.warning("cooldown_share_failed", error=error_name(e))

    async def _sync(self) -> None:
        from lunos_proxy.store.base import StoreError

        try:
            current = await self.store.cooldowns()
        except StoreError as e:
            if not self._failing:
                log.warning("cooldown_read_failed", error=error_name(e))
            self._failing = True
            return
        self._failing = False
        now = self.clock()
        self._until = {d: now + left for d, left in current.items()}

    async def _heard(self, message: str) -> None:
        try:
            m = _decode(message)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        self._set(m.deployment, m.seconds)


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(_CooldownMessage).decode


class Registry:
    """Deployment states by id, and the cooldowns; one per gateway."""

    def __init__(
        self,
        store: Bus,
        breaker: BreakerSettings,
        sync_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # Breakers and cooldowns run on this clock (tests move it forward).
        self.clock = clock
        self.states: dict[str, DeploymentState] = {}
        # Ids of deployments whose breaker is not closed (kept by the router).
        self.unhealthy: set[str] = set()
        self.breaker = breaker
        self.cooldowns = Cooldowns(store, sync_seconds, clock)

    def configure(self, breaker: BreakerSettings, sync_seconds: float) -> None:
        """Apply a reloaded config's settings to every existing breaker."""
        self.breaker = breaker
        self.cooldowns.sync_seconds = sync_seconds
        for state in self.states.values():
            state.breaker.settings = breaker

    def set_clock(self, clock: Callable[[], float]) -> None:
        self.clock = self.cooldowns.clock = clock

    def state(self, deployment_id: str) -> DeploymentState:
        state = self.states.get(deployment_id)
        if state is None:
            state = self.states[deployment_id] = DeploymentState(deployment_id, self.breaker)
        return state

    def snapshot(self) -> list[dict[str, Any]]:
        """Every deployment's state, for the admin API (ids and numbers only)."""
        now = self.clock()
        out = []
        for d, s in sorted(self.states.items()):
            b = s.breaker
            requests, failures = b.counts(now)
            out.append(
                {
                    "deployment": d,
                    "breaker": BreakerState(b.state).name.lower(),
                    "breaker_open_seconds_left": round(max(0.0, b.opened_until - now), 3)
                    if b.state is BreakerState.OPEN
                    else 0.0,
                    "window_requests": requests,
                    "window_failures": failures,
                    "cooldown_seconds_left": round(self.cooldowns.left(d, now), 3),
                    "in_flight": s.in_flight,
                    "latency_ms": round(s.latency * 1000, 3),
                }
            )
        return out


# Where the router keeps its registry in `Services.lasting` (the gateway's lifetime).
REGISTRY: ViewKey[Registry] = ViewKey("router.registry")
