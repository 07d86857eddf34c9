"""The shipped rules and dashboard against a real Prometheus scraping a running Lunos.

Debian's `prometheus` server (installed by `make test` with promtool)
scrapes `lunos-proxy serve` every second and evaluates the shipped rules
every second. The rule file is the shipped one with each `for:` cut to
`FOR` (the expressions are the shipped ones, checked below); the scrape
config is the shipped one with a one-second interval and the test's target.

Each scenario runs on its own stack — a redis-server, fake providers, a
Lunos process in front of them and a Prometheus with an empty database, so
no scenario's rates leak into another's windows — and the stacks run side
by side. Alerts on latency percentiles (`LOAD_DEPENDENT`) measure the
machine more than the scenario and are left out of every comparison:

- healthy: every provider answers; no alert is pending or firing, and each
  latency alert's expression evaluates to a number.
- all_down: both deployments of "chat" fail, and the first of "pair" too
  (its second answers): the breakers open, "chat" pages as down and by its
  error rate; "pair" does not page.
- error_rate: both deployments of "chat" answer 503 with a Retry-After, so
  most clients get the gateway's own 503 while every deployment cools down
  (provider "none"): the error rate pages with that reason.
- store_down: the stack's redis-server is killed: the store pages.
- budget: an account past its daily budget keeps asking: the budget warning.

Every dashboard query must return a finite value in the scenario that
exercises it (panels listed in `EXERCISED` must show more than 0 there).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from tests.auth_support import SECRETS, static_entry
from tests.conftest import ADMIN_TOKEN, free_port
from tests.fakes import FakeProvider
from tests.redis_servers import RedisServer
from tests.test_monitoring import DEPLOY, RULES, dashboard_exprs

FOR = "2s"  # every rule's `for:` in the generated rule file
SCRAPE = "1s"
KEY_RICH = "lk-prom-test-rich-0123456789abcdefghijklmnopqrstuvw"
KEY_POOR = "lk-prom-test-poor-0123456789abcdefghijklmnopqrstuvw"
PRICING = """\
currency: USD
models:
  chat:
    - {from: 2020-01-01, input: 2.5, output: 10}
  pair:
    - {from: 2020-01-01, input: 2.5, output: 10}
"""

# Alerts on latency percentiles (10 ms of gateway overhead, 25 ms of store
# latency, 100 ms of loop lag at p99). On a small machine shared with other
# work they measure the machine, not the scenario, so no scenario counts
# them; the healthy one checks that each evaluates to a number (its series
# exist and are scraped), and promtool's rule tests check when they fire.
LOAD_DEPENDENT = frozenset({"LunosOverheadHigh", "LunosEventLoopLag", "LunosStoreSlow"})

# -- Prometheus ---------------------------------------------------------------


def shortened_rules(directory: Path) -> Path:
    """The shipped rules with every `for:` cut to FOR; nothing else changed."""
    doc = yaml.safe_load(RULES.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = FOR
    path = directory / "lunos.rules.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def scrape_config(directory: Path, target: str, rules: Path) -> Path:
    """The shipped scrape config, scraping `target` every second."""
    doc = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    doc["global"].update(scrape_interval=SCRAPE, evaluation_interval=SCRAPE)
    doc["rule_files"] = [str(rules)]
    (job,) = doc["scrape_configs"]
    job.update(scrape_interval=SCRAPE, scrape_timeout=SCRAPE, static_configs=[{"targets": [target]}])
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


class Prometheus:
    def __init__(self, directory: Path, target: str) -> None:
        directory.mkdir()
        self.directory = directory
        self.config = scrape_config(directory, target, shortened_rules(directory))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, session: aiohttp.ClientSession) -> None:
        with (self.directory / "prometheus.log").open("wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                "prometheus", f"--config.file={self.config}", f"--web.listen-address=127.0.0.1:{self.port}",
                f"--storage.tsdb.path={self.directory / 'data'}", "--storage.tsdb.retention.time=1h",
                stdout=log, stderr=log,
            )
        deadline = time.monotonic() + 20
        while True:
            assert self.proc.returncode is None, (self.directory / "prometheus.log").read_text()
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(self.url + "/-/ready") as r:
                    if r.status == 200:
                        return
            assert time.monotonic() < deadline, "prometheus did not become ready"
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        await _terminate(self.proc)

    async def alerts(self, session: aiohttp.ClientSession) -> set[tuple[str, str, frozenset[tuple[str, str]]]]:
        """(alertname, state, other labels) of every pending or firing alert."""
        async with session.get(self.url + "/api/v1/alerts") as r:
            body = await r.json()
        out = set()
        for alert in body["data"]["alerts"]:
            labels = dict(alert["labels"])
            name = labels.pop("alertname")
            labels.pop("severity", None)
            out.add((name, alert["state"], frozenset(labels.items())))
        return out

    async def series(self, session: aiohttp.ClientSession, expr: str) -> list[dict[str, str]]:
        """The labels of each sample `expr` returns now."""
        return [sample["metric"] for sample in await self._query(session, expr)]

    async def query(self, session: aiohttp.ClientSession, expr: str) -> list[float]:
        """The value of each sample `expr` returns now."""
        return [float(sample["value"][1]) for sample in await self._query(session, expr)]

    async def _query(self, session: aiohttp.ClientSession, expr: str) -> list[dict[str, Any]]:
        async with session.get(self.url + "/api/v1/query", params={"query": expr}) as r:
            body = await r.json()
        assert body["status"] == "success", (expr, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result


# -- the stack of one scenario --------------------------------------------------


class Lunos:
    """`lunos-proxy serve` in a process of its own, so its event loop (and its
    overhead and lag) is its own and not the test's."""

    def __init__(self, directory: Path, config: dict[str, Any]) -> None:
        self.config = directory / "lunos.yaml"
        self.config.write_text(yaml.safe_dump(config))
        self.log = directory / "lunos.log"
        self.port, self.admin_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.instance = f"127.0.0.1:{self.admin_port}"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, session: aiohttp.ClientSession) -> None:
        with self.log.open("wb") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "lunos_proxy", "serve", "--config", str(self.config),
                "--port", str(self.port), "--admin-port", str(self.admin_port),
                stdout=out, stderr=out, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + 30
        while True:
            assert self.proc.returncode is None, self.log.read_text()
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(self.url + "/healthz") as r:
                    if r.status == 200:
                        return
            assert time.monotonic() < deadline, "lunos did not start: " + self.log.read_text()
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        await _terminate(self.proc)


async def _terminate(proc: asyncio.subprocess.Process | None) -> None:
    if proc is not None and proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()


@dataclass
class Stack:
    name: str
    lunos: Lunos
    redis: RedisServer
    fakes: dict[str, FakeProvider]
    prometheus: Prometheus
    session: aiohttp.ClientSession
    statuses: dict[str, int] = field(default_factory=dict)  # client-visible, by model/key
    traffic: list[asyncio.Task[None]] = field(default_factory=list)

    async def send(self, model: str, key: str) -> None:
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
        async with self.session.post(
            self.lunos.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
        ) as r:
            await r.read()
            tag = f"{model}:{r.status}"
            self.statuses[tag] = self.statuses.get(tag, 0) + 1

    def keep_sending(self, model: str, key: str, per_second: float) -> None:
        async def loop() -> None:
            while True:
                await self.send(model, key)
                await asyncio.sleep(1 / per_second)

        self.traffic.append(asyncio.get_running_loop().create_task(loop()))

    async def stop_traffic(self) -> None:
        for task in self.traffic:
            task.cancel()
        await asyncio.gather(*self.traffic, return_exceptions=True)

    @property
    def instance(self) -> str:
        return self.lunos.instance

    async def settle_on(
        self, expected: set[tuple[str, frozenset[tuple[str, str]]]], *, within: float,
        errors_of: str = "", store_errors: bool = False,
    ) -> set[Any]:
        """Wait until exactly the expected alerts fire, three evaluations in a
        row, with nothing else pending (`LOAD_DEPENDENT` aside).

        `errors_of`: also one LunosErrorRate per reason (provider,
        error_type) of that model's 5xx in the window; `store_errors`: also
        one LunosStoreErrors per failing operation. Returns those reasons or
        operations."""
        deadline = time.monotonic() + within
        seen: set[Any] = set()
        steady = 0
        extra: set[Any] = set()
        want = set(expected)
        while steady < 3:
            assert time.monotonic() < deadline, (
                f"{self.name}: expected firing {sorted(want)}, saw {sorted(seen)}; "
                f"client statuses {self.statuses}"
            )
            await asyncio.sleep(1)
            want = set(expected)
            if errors_of:
                extra = {(r["provider"], r["error_type"]) for r in await self.prometheus.series(
                    self.session, f'sum by (provider, error_type) (increase(lunos_requests_total{{model="{errors_of}",'
                    'status_class="5xx"}[5m])) > 0')}
                want |= {("LunosErrorRate", labels(model=errors_of, provider=p, error_type=e)) for p, e in extra}
            if store_errors:
                extra = {r["operation"] for r in await self.prometheus.series(
                    self.session, "sum by (operation) (rate(lunos_store_errors_total[5m])) > 0")}
                want |= {("LunosStoreErrors", labels(operation=op)) for op in extra}
            seen = {a for a in await self.prometheus.alerts(self.session) if a[0] not in LOAD_DEPENDENT}
            firing = {(name, ls) for name, state, ls in seen if state == "firing"}
            steady = steady + 1 if want and firing == want and len(seen) == len(want) else 0
        return extra


def gateway_config(fakes: dict[str, FakeProvider], redis_url: str, pricing: Path,
                   breaker_min_requests: int) -> dict[str, Any]:
    return {
        "store": {"url": redis_url},
        "secrets": dict(SECRETS),
        "admin": {"token": ADMIN_TOKEN},
        "providers": {
            name: {"format": "openai", "base_url": fake.base_url, "api_key": f"sk-{name}"}
            for name, fake in fakes.items()
        },
        "models": {
            "chat": {"deployments": [
                {"provider": "alpha", "model": "up", "name": "chat-a"},
                {"provider": "beta", "model": "up", "name": "chat-b"},
            ]},
            "pair": {"strategy": "priority", "fallbacks": ["chat"], "deployments": [
                {"provider": "alpha", "model": "up", "name": "pair-a", "priority": 1},
                {"provider": "gamma", "model": "up", "name": "pair-b", "priority": 2},
            ]},
        },
        "pipeline": [
            {"name": "request_id"},
            {"name": "auth", "settings": {"static_keys": [
                static_entry(KEY_RICH, account="acct-rich"),
                static_entry(KEY_POOR, account="acct-poor", plan="tight"),
            ]}},
            {"name": "abuse", "settings": {
                "plans": {"basic": {"key": {"requests_per_minute": 100_000}},
                          "tight": {"key": {"requests_per_minute": 80}}},
                "default_plan": "basic",
            }},
            {"name": "meter", "settings": {
                "pricing": str(pricing), "flush_interval_seconds": 0.2,
                # A request costs 88 micro-dollars: the first one spends it.
                "budgets": {"accounts": {"acct-poor": {"daily": "0.00005"}}},
            }},
            {"name": "router", "settings": {"seed": 1, "max_attempts": 2, "breaker": {
                "min_requests": breaker_min_requests, "failure_rate": 0.5, "window_seconds": 60,
                "open_seconds": 300,
            }}},
        ],
    }


@contextlib.asynccontextmanager
async def stack(name: str, tmp_path: Path, session: aiohttp.ClientSession,
                breaker_min_requests: int = 1000) -> AsyncIterator[Stack]:
    directory = tmp_path / name
    directory.mkdir()
    fakes = {n: FakeProvider() for n in ("alpha", "beta", "gamma")}
    redis = RedisServer()
    pricing = directory / "pricing.yaml"
    pricing.write_text(PRICING)
    lunos: Lunos | None = None
    prometheus: Prometheus | None = None
    try:
        for fake in fakes.values():
            await fake.start()
        await asyncio.to_thread(redis.start)
        lunos = Lunos(directory, gateway_config(fakes, redis.url, pricing, breaker_min_requests))
        await lunos.start(session)
        prometheus = Prometheus(directory / "prometheus", lunos.instance)
        s = Stack(name, lunos, redis, fakes, prometheus, session)
        for model in ("chat", "pair"):  # first connections and caches: not the steady state
            for _ in range(5):
                await s.send(model, KEY_RICH)
        s.statuses.clear()
        await prometheus.start(session)
        try:
            yield s
        finally:
            await s.stop_traffic()
    finally:
        if prometheus is not None:
            await prometheus.stop()
        if lunos is not None:
            await lunos.stop()
        redis.remove()
        for fake in fakes.values():
            await fake.close()


# -- the dashboard ----------------------------------------------------------------


def runnable(expr: str) -> str:
    """A dashboard expression as Grafana would send it over the test's range."""
    found = _LABEL_VALUES.match(expr)
    if found:
        return f"group by ({found[2]}) ({found[1]})"
    return expr.replace("$model", ".*").replace("$__rate_interval", "20s").replace("$__range", "1m")


_LABEL_VALUES = re.compile(r"label_values\((\w+), (\w+)\)")

# Where a panel's query is exercised: there it must show more than 0.
EXERCISED: dict[str, str] = {  # the first part an expression contains decides
    'lunos_requests_total{status_class="5xx"': "error_rate",
    'lunos_requests_total{error_type!="none"}': "budget",
    "lunos_requests_total{model": "healthy",
    "lunos_requests_in_flight": "",  # a gauge of 0 when idle: any finite value
    "lunos_request_duration_seconds_bucket": "healthy",
    "lunos_upstream_time_to_first_byte_seconds_bucket": "healthy",
    "lunos_upstream_duration_seconds_bucket": "healthy",
    "lunos_gateway_overhead_seconds_bucket": "healthy",
    "lunos_plugin_duration_seconds_bucket": "healthy",
    "lunos_event_loop_lag_seconds_bucket": "",  # an idle loop's lag is 0
    "lunos_tokens_total": "healthy",
    "lunos_cost_usd_total": "healthy",
    "lunos_breaker_open": "all_down",
    "lunos_deployment_attempts_total": "all_down",
    "lunos_deployment_time_to_first_byte_seconds_bucket": "healthy",
    "lunos_route_retries_total": "error_rate",
    "lunos_route_skips_total": "all_down",
    "lunos_limit_refusals_total": "budget",
    "lunos_abuse_refusals_total": "budget",  # a rule's series appears with its first refusal
    "lunos_limits_store_degraded": "store_down",
    "lunos_store_operation_seconds_bucket": "healthy",
    "lunos_store_errors_total": "store_down",
    "lunos_store_up": "healthy",
}


def exercised_in(expr: str) -> tuple[str, bool]:
    """(scenario, must be > 0) for a dashboard expression; ("healthy", False) by default."""
    for part, scenario in EXERCISED.items():
        if part in expr:
            return (scenario or "healthy"), bool(scenario)
    return "healthy", False


async def check_dashboard(s: Stack) -> list[str]:
    problems = []
    for expr in dashboard_exprs():
        scenario, positive = exercised_in(expr)
        if scenario != s.name:
            continue
        # A rate needs two scrapes in its window: on a loaded machine a
        # scrape can come late, so a query is asked again for a while.
        for _ in range(10):
            values = await s.prometheus.query(s.session, runnable(expr))
            finite = [v for v in values if math.isfinite(v)]
            if finite and (not positive or max(finite) > 0):
                break
            await asyncio.sleep(1)
        if not finite:
            problems.append(f"{s.name}: no data: {expr}")
        elif positive and max(finite) <= 0:
            problems.append(f"{s.name}: only 0: {expr}")
    return problems


# -- the scenarios -------------------------------------------------------------------


def labels(**values: str) -> frozenset[tuple[str, str]]:
    return frozenset(values.items())


async def healthy(s: Stack) -> list[str]:
    # Enough requests that a percentile is not one request's time.
    s.keep_sending("chat", KEY_RICH, 12)
    s.keep_sending("pair", KEY_RICH, 4)
    await asyncio.sleep(8)  # every window has data; any `for:` has passed twice over
    for _ in range(4):
        alerts = {a for a in await s.prometheus.alerts(s.session) if a[0] not in LOAD_DEPENDENT}
        assert alerts == set(), f"healthy: {sorted(alerts)}; client statuses {s.statuses}"
        await asyncio.sleep(1)
    assert set(s.statuses) == {"chat:200", "pair:200"}
    problems = []
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") in LOAD_DEPENDENT:
                measured = re.sub(r"\s*>\s*[0-9.]+\s*$", "", rule["expr"].strip())
                if not [v for v in await s.prometheus.query(s.session, measured) if math.isfinite(v)]:
                    problems.append(f"healthy: {rule['alert']} measures nothing: {measured}")
    return problems + await check_dashboard(s)


async def all_down(s: Stack) -> list[str]:
    for name in ("alpha", "beta"):  # chat: both deployments; pair: its first
        s.fakes[name].behaviour.status = 500
    s.keep_sending("chat", KEY_RICH, 6)
    s.keep_sending("pair", KEY_RICH, 4)
    breakers = (("chat", "chat-a", "alpha"), ("chat", "chat-b", "beta"), ("pair", "pair-a", "alpha"))
    expected = {
        ("LunosModelAllDeploymentsDown", labels(model="chat", instance=s.instance)),
        *(("LunosBreakerOpen", labels(job="lunos", instance=s.instance, model=m, deployment=d, provider=p))
          for m, d, p in breakers),
    }
    reasons = await s.settle_on(expected, errors_of="chat", within=30)
    # Once both breakers are open the gateway answers alone: provider "none".
    assert ("none", "provider") in reasons
    assert s.statuses.get("pair:200", 0) > 0 and set(s.statuses) <= {"pair:200", "chat:500", "chat:503"}
    return await check_dashboard(s)


async def error_rate(s: Stack) -> list[str]:
    for name in ("alpha", "beta"):
        s.fakes[name].behaviour.status = 503
        s.fakes[name].behaviour.headers = {"Retry-After": "2"}
    s.keep_sending("chat", KEY_RICH, 8)
    s.keep_sending("pair", KEY_RICH, 3)
    reasons = await s.settle_on(set(), errors_of="chat", within=30)
    # The missed page: most of what clients saw was the gateway's own
    # 503 while every deployment cooled down after a provider's Retry-After.
    assert ("none", "provider") in reasons
    assert s.statuses.get("chat:503", 0) > s.statuses.get("chat:200", 0)
    return await check_dashboard(s)


async def store_down(s: Stack) -> list[str]:
    s.keep_sending("chat", KEY_RICH, 6)
    await asyncio.sleep(2)
    await asyncio.to_thread(s.redis.stop)
    expected = {("LunosStoreDown", labels(instance=s.instance))}
    operations = await s.settle_on(expected, store_errors=True, within=30)
    assert "hit" in operations  # the limit call, on every request
    assert set(s.statuses) == {"chat:200"}  # the limits fail open: clients are still served
    return await check_dashboard(s)


async def budget(s: Stack) -> list[str]:
    s.keep_sending("chat", KEY_RICH, 4)
    # Past its budget after one request, then past its plan's 80 a minute.
    # The rule's rate is over 15 minutes: it needs 45 refusals in the window.
    s.keep_sending("chat", KEY_POOR, 10)
    await s.settle_on({("LunosBudgetExhaustion", labels())}, within=30)
    assert s.statuses.get("chat:429", 0) > 45
    return await check_dashboard(s)


SCENARIOS = {
    "healthy": (healthy, 1000),
    "all_down": (all_down, 4),
    "error_rate": (error_rate, 1000),
    "store_down": (store_down, 1000),
    "budget": (budget, 1000),
}


async def test_shipped_rules_and_dashboard_on_a_real_prometheus(tmp_path: Path) -> None:
    shipped = yaml.safe_load(RULES.read_text())
    generated = yaml.safe_load(shortened_rules(tmp_path).read_text())
    exprs = [[r["expr"] for r in g["rules"]] for g in shipped["groups"]]
    assert exprs == [[r["expr"] for r in g["rules"]] for g in generated["groups"]]
    assert {r.get("for") for g in generated["groups"] for r in g["rules"]} == {FOR, None}

    async with contextlib.AsyncExitStack() as stacks:
        session = await stacks.enter_async_context(aiohttp.ClientSession())
        started = await asyncio.gather(*(
            stacks.enter_async_context(stack(name, tmp_path, session, min_requests))
            for name, (_, min_requests) in SCENARIOS.items()
        ))
        results = await asyncio.gather(*(SCENARIOS[s.name][0](s) for s in started))
    problems = [p for found in results for p in found]
    assert not problems, "\n".join(problems)
    # Every dashboard query was checked in some scenario.
    assert {exercised_in(e)[0] for e in dashboard_exprs()} <= set(SCENARIOS)
