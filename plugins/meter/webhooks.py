"""Budget notifications: a signed POST to the operator's webhook, sent once.

Each notification has a name (subject, period, threshold). Before sending,
the notifier claims the name in the store (`Accounting.claim`), so of all
instances exactly one sends it, once per period. Delivery is retried with
exponential backoff (1 s, 2 s, 4 s, ...) up to `max_attempts`; a
notification that still fails is counted in `lunos_webhook_failures` and not
sent again (at most once, rather than possibly twice).

The receiver checks the signature:

    Lunos-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>

and should refuse timestamps far from its own clock (replays).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from typing import Any

import aiohttp
import msgspec
import structlog

from lunos_proxy.metrics import Metrics
from lunos_proxy.store.accounting import Accounting
from lunos_proxy.store.errors import StoreError

from .metrics import MeterMetrics

__all__ = ["Notifier", "sign"]

log = structlog.get_logger("lunos.meter")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


class Notifier:
    def __init__(
        self,
        store: Accounting,
        metrics: Metrics,
        url: str,
        secret: str,
        *,
        max_attempts: int = 5,
        backoff: float = 1.0,
        timeout: float = 5.0,
    ) -> None:
        self.store = store
        self.metrics = metrics.add(MeterMetrics)
        self.url = url
        self.secret = secret
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.timeout = timeout
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    def notify(self, name: str, ttl: int, payload: dict[str, Any]) -> None:
        """Send `payload` once (across instances) under `name`, claimed for `ttl` s."""
        task = asyncio.get_running_loop().create_task(self._send(name, ttl, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, name: str, ttl: int, payload: dict[str, Any]) -> None:
        for attempt in range(self.max_attempts):
            try:
                if not await self.store.claim(f"webhook:{name}", ttl):
                    return
                break
            except StoreError:
                await asyncio.sleep(self.backoff * 2**attempt)
        else:
            self.metrics.webhook_failures.inc()
            return
        body = msgspec.json.encode({"id": name, **payload})
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        for attempt in range(self.max_attempts):
            headers = {
                "Content-Type": "application/json",
                "Lunos-Signature": sign(self.secret, int(time.time()), body),
                "Lunos-Event-Id": name,
            }
            try:
                async with self._session.post(self.url, data=body, headers=headers) as r:
                    if r.status < 300:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            if attempt + 1 < self.max_attempts:
                await asyncio.sleep(self.backoff * 2**attempt)
        self.metrics.webhook_failures.inc()
        log.warning("budget_webhook_failed", attempts=self.max_attempts)

    async def close(self) -> None:
        # Give pending notifications a moment; they are best effort past that.
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self.timeout)
        for task in list(self._tasks):
            task.cancel()
        if self._session is not None:
            await self._session.close()
