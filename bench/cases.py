"""The benchmark cases: each is a name, whether it streams, and Lunos's config.

Add a case with the decorator; the function gets the fake provider's base
URL and the run's scratch directory and returns the Lunos config as a dict
(written out as YAML). Start from `lunos_config`, the one place that knows
the config schema:

    @case("router 50 deployments", stream=False, about="50 weighted deployments")
    def router_50(upstream: str, scratch: Path) -> dict[str, Any]:
        cfg = lunos_config(upstream, scratch)
        cfg["models"]["bench-model"]["deployments"] = [
            {"provider": "fake", "model": "bench-model", "weight": 1} for _ in range(50)
        ]
        return cfg

Every case is measured against the same three targets (the fake provider
directly, the floor, Lunos), so its Lunos/floor ratio compares like with like.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ConfigFactory = Callable[[str, Path], dict[str, Any]]

MODEL = "bench-model"
# Answered slowly by the fake provider: what the clients that hang up ask for.
SLOW_MODEL = "bench-slow"


@dataclass(frozen=True)
class Case:
    name: str
    stream: bool
    lunos_config: ConfigFactory
    about: str
    # The Lunos/floor req/s an issue asks of this case; None: recorded only.
    min_ratio: float | None = None
    # Lunos gets the hostile load (hostile.py), refused with 401, while the
    # floor and the fake provider serve the ordinary one.
    hostile: bool = False
    # The server process's peak RSS must stay below this.
    max_rss_mb: float = 100.0


CASES: dict[str, Case] = {}


def case(
    name: str,
    *,
    stream: bool,
    about: str,
    min_ratio: float | None = None,
    hostile: bool = False,
    max_rss_mb: float = 100.0,
) -> Callable[[ConfigFactory], ConfigFactory]:
    def register(factory: ConfigFactory) -> ConfigFactory:
        if name in CASES:
            raise ValueError(f"benchmark case {name!r} is defined twice")
        CASES[name] = Case(name, stream, factory, about, min_ratio, hostile, max_rss_mb)
        return factory

    return register


def lunos_config(
    upstream: str, scratch: Path, pipeline: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A Lunos config with one fake OpenAI provider serving `bench-model`."""
    return {
        "store": {"url": f"memory://{scratch.resolve()}/lunos-store.json"},
        # Beside the store, not in the source tree's data/: each start begins empty.
        "records": {"url": f"sqlite://{scratch.resolve()}/lunos-records.db"},
        "providers": {
            "fake": {"format": "openai", "base_url": f"{upstream}/v1", "api_key": "sk-fake"}
        },
        "models": {
            MODEL: {"deployments": [{"provider": "fake", "model": MODEL}]},
            SLOW_MODEL: {"deployments": [{"provider": "fake", "model": SLOW_MODEL}]},
        },
        "pipeline": pipeline if pipeline is not None else [{"name": "request_id"}],
    }


@case("plain", stream=False, about="request_id plugin only; small JSON completion",
      min_ratio=0.85)
def plain(upstream: str, scratch: Path) -> dict[str, Any]:
    return lunos_config(upstream, scratch)


@case("stream", stream=True, about="request_id plugin only; SSE stream of 8 events",
      min_ratio=0.85)
def stream(upstream: str, scratch: Path) -> dict[str, Any]:
    return lunos_config(upstream, scratch)


# -- redis limits: the abuse plugin with every limit on, Redis as the store -----

_redis: list[Any] = []  # the one redis-server this bench process started


def _bench_redis(scratch: Path) -> str:
    """A redis-server of the bench's own on a free loopback port, stopped at exit."""
    import atexit
    import shutil
    import socket
    import subprocess
    import time

    if _redis:
        return str(_redis[0])
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("the 'redis limits' case needs redis-server (apt-get install redis-server)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    from servers import SPAWN, prioritise

    proc = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", str(scratch.resolve())],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, **SPAWN,
    )
    # Like every process the bench starts: a session of its own at the bench's
    # niceness. Left in the driver's session, it ran at niceness 0 beside
    # wrk and the upstream at -20 on their core, and Lunos sat waiting for it.
    prioritise(proc.pid)
    atexit.register(proc.terminate)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.05)
    url = f"redis://127.0.0.1:{port}/0"
    _redis.append(url)
    return url


@case("traced", stream=False,
      about="plain with tracing on: every request recorded (3 spans) and exported over "
      "OTLP/HTTP to the upstream's sink (compare with plain)")
def traced(upstream: str, scratch: Path) -> dict[str, Any]:
    cfg = lunos_config(upstream, scratch)
    cfg["tracing"] = {"enabled": True, "endpoint": upstream, "sample_ratio": 1.0}
    return cfg


@case("logger", stream=False, about="request_id + logger (one JSON line per request); compare with plain")
def logger(upstream: str, scratch: Path) -> dict[str, Any]:
    return lunos_config(upstream, scratch, [{"name": "request_id"}, {"name": "logger"}])


@case("logger stream", stream=True, about="request_id + logger; compare with stream")
def logger_stream(upstream: str, scratch: Path) -> dict[str, Any]:
    return lunos_config(upstream, scratch, [{"name": "request_id"}, {"name": "logger"}])


_BENCH_SECRETS = {"hash_secret": "bench-hash-secret-0123456789abcdef-0123456789",
                  "encryption_keys": "k1:" + "A" * 43}


def _auth_pipeline() -> list[dict[str, Any]]:
    from lunos_proxy.config import SecretsConfig
    from lunos_proxy.crypto import load_secrets

    key_hash = load_secrets(SecretsConfig(**_BENCH_SECRETS)).key_hash("sk-bench")
    return [
        {"name": "request_id"},
        {"name": "auth", "settings": {"static_keys": [
            {"hash": key_hash, "prefix": "sk-bench", "account": "bench", "name": "bench"}]}},
    ]


def _limits_pipeline() -> list[dict[str, Any]]:
    big = 1_000_000_000  # every limit is checked and charged; none refuses
    # No meter in this pipeline, so no usage is known and every request keeps
    # its whole reservation (about 4,100 tokens): 1e9 tokens a day ran out
    # after about 240,000 requests, within five rounds on a fast machine.
    tokens = 1_000_000_000_000
    scope = {"requests_per_second": big, "requests_per_minute": big, "requests_per_day": big,
             "tokens_per_minute": tokens, "tokens_per_day": tokens, "concurrent": 10_000}
    return [*_auth_pipeline(), {"name": "abuse", "settings": {
        "plans": {"bench": {"key": scope, "account": scope, "account_model": scope}},
        "default_plan": "bench",
        "on_store_failure": "fail_closed",  # a store problem shows as errors, never hidden
    }}]


@case("auth", stream=False, about="request_id + auth with a static key (compare with plain)")
def auth_only(upstream: str, scratch: Path) -> dict[str, Any]:
    cfg = lunos_config(upstream, scratch, pipeline=_auth_pipeline())
    cfg["secrets"] = _BENCH_SECRETS
    return cfg


@case(
    "memory limits",
    stream=False,
    about="auth + abuse with every limit of 'redis limits', on the embedded store",
)
def memory_limits(upstream: str, scratch: Path) -> dict[str, Any]:
    cfg = lunos_config(upstream, scratch, pipeline=_limits_pipeline())
    cfg["secrets"] = _BENCH_SECRETS
    return cfg


@case(
    "redis limits",
    stream=False,
    about="auth + abuse with key, account, account x model and concurrency limits on Redis",
    min_ratio=0.60,
)
def redis_limits(upstream: str, scratch: Path) -> dict[str, Any]:
    cfg = lunos_config(upstream, scratch, pipeline=_limits_pipeline())
    cfg["store"] = {"url": _bench_redis(scratch)}
    cfg["secrets"] = _BENCH_SECRETS
    return cfg


@case(
    "hostile",
    stream=False,
    about="request_id + auth, decompression on; Lunos refuses garbage without a key, with a "
    "wrong key and a 2 MB gzip bomb (2 GiB inflated) while the floor serves plain requests",
    hostile=True,
)
def hostile(upstream: str, scratch: Path) -> dict[str, Any]:
    # Recorded, with no ratio target: the bomb's 401 closes its connection
    # (the rest of its 2 MB is never read), so it costs a new connection and
    # what arrived with its headers; what must hold is that nothing is
    # decoded and that refusing costs less than the floor's serving (compare
    # CPU us/req with the floor's).
    cfg = lunos_config(upstream, scratch, pipeline=_auth_pipeline())
    cfg["secrets"] = _BENCH_SECRETS
    cfg["server"] = {"request_decompression": True}
    return cfg


@case(
    "router 50 deployments",
    stream=False,
    about="request_id + router; 50 weighted deployments in two tiers (compare with plain)",
)
def router_50(upstream: str, scratch: Path) -> dict[str, Any]:
    cfg = lunos_config(
        upstream,
        scratch,
        pipeline=[{"name": "request_id"}, {"name": "router", "settings": {"seed": 1}}],
    )
    cfg["models"][MODEL]["deployments"] = [
        {
            "provider": "fake",
            "model": MODEL,
            "name": f"d{i:02}",
            "weight": 1 + i % 5,
            "priority": 1 if i < 40 else 2,
            "region": "eu" if i % 2 else "us",
        }
        for i in range(50)
    ]
    return cfg


@case(
    "meter streamed",
    stream=True,
    about="request_id + meter: SSE parsed for usage, cost, ledger written behind "
    "(compare with stream)",
)
def meter_streamed(upstream: str, scratch: Path) -> dict[str, Any]:
    pricing = scratch / "bench-pricing.yaml"
    pricing.write_text(
        f"currency: USD\nmodels:\n  {MODEL}:\n    - {{from: 2020-01-01, input: 2.5, output: 10}}\n"
    )
    return lunos_config(upstream, scratch, pipeline=[
        {"name": "request_id"},
        # The bench provider sends its usage chunk unasked (unlike OpenAI), and the
        # load generator checks the client sees it: so the meter does not ask.
        {"name": "meter", "settings": {"pricing": str(pricing.resolve()),
                                       "request_stream_usage": False}},
    ])


# -- the whole default pipeline ------------------------------------------------


def _full_pipeline(scratch: Path) -> list[dict[str, Any]]:
    """config/lunos.yaml's pipeline, as shipped, with three changes for the
    bench: the bench's key instead of the demo key, limits that none of the
    load reaches (the same limits, each checked and charged), and a price
    for the bench's models."""
    import yaml

    shipped = Path(__file__).resolve().parent.parent / "config" / "lunos.yaml"
    pipeline: list[dict[str, Any]] = yaml.safe_load(shipped.read_text())["pipeline"]
    bench_auth = _auth_pipeline()[1]["settings"]
    pricing = scratch / "bench-pricing.yaml"
    pricing.write_text(
        "currency: USD\nmodels:\n"
        + "".join(f"  {m}:\n    - {{from: 2020-01-01, input: 2.5, output: 10}}\n"
                  for m in (MODEL, SLOW_MODEL))
    )
    for entry in pipeline:
        settings = entry.setdefault("settings", {})
        if entry["name"] == "auth":
            settings["static_keys"] = bench_auth["static_keys"]
        elif entry["name"] == "abuse":
            for plan in settings["plans"].values():
                for scope in plan.values():
                    for limit in scope:
                        scope[limit] = 10_000 if limit == "concurrent" else 1_000_000_000_000
        elif entry["name"] == "meter":
            settings["pricing"] = str(pricing.resolve())
            # The bench provider sends its usage chunk unasked (unlike OpenAI),
            # and the load generator checks the client sees it.
            settings["request_stream_usage"] = False
    return pipeline


def _full_config(upstream: str, scratch: Path) -> dict[str, Any]:
    cfg = lunos_config(upstream, scratch, pipeline=_full_pipeline(scratch))
    cfg["store"] = {"url": _bench_redis(scratch)}
    cfg["secrets"] = _BENCH_SECRETS
    return cfg


# The same config twice: answered as JSON, and streamed.
case(
    "full pipeline",
    stream=False,
    about="config/lunos.yaml's pipeline (request_id, logger, auth, abuse, meter, router) "
    "on Redis; the provider reports usage",
    min_ratio=0.60,
)(_full_config)
case(
    "full pipeline streamed",
    stream=True,
    about="the same, SSE stream of 8 events with its usage chunk",
    min_ratio=0.60,
)(_full_config)


@case(
    "full pipeline tokenizer",
    stream=False,
    about="'full pipeline' with the tokenizer's tables loaded at start "
    "(preload_tokenizer): its RSS against the row without",
    # The pipeline's ~75 MB and the tables' ~135 MB, in the server itself.
    max_rss_mb=250.0,
)
def full_pipeline_tokenizer(upstream: str, scratch: Path) -> dict[str, Any]:
    cfg = _full_config(upstream, scratch)
    for entry in cfg["pipeline"]:
        if entry["name"] == "meter":
            entry["settings"]["preload_tokenizer"] = True
    return cfg


@case(
    "translated",
    stream=False,
    about="request_id only; an OpenAI client, an Anthropic-format provider: the request "
    "and the answer translated (compare with plain)",
)
def translated(upstream: str, scratch: Path) -> dict[str, Any]:
    cfg = lunos_config(upstream, scratch)
    cfg["providers"]["fake"]["format"] = "anthropic"
    return cfg


case(
    "translated streamed",
    stream=True,
    about="request_id only; an OpenAI client streaming from an Anthropic-format provider: "
    "each event translated as it arrives (compare with stream)",
)(translated)
