"""The YAML schema, loading with environment references, and validation.

The schema is a tree of msgspec Structs with defaults beside each field;
`config/lunos.yaml` is its commented example and runs as is. Loading
never stops at the first problem: every section is checked and every
problem is reported as ``FILE: where: what``, e.g.
``lunos.yaml: providers.openai.base_url: expected an http(s) URL``.
Unknown keys are errors, and so is a key given twice (`yaml_strict`).
``${NAME}`` (or ``${NAME:-default}``) in any string is replaced from the
environment (`env_refs`); a missing variable is an error naming it. Numbers carry
their ranges in their types (`bounds`). The checks that need more than
the schema (the models section as a graph, the plugins' settings, the
files the config names, `open_relay`) run in `loading.py`, which every
caller goes through (`load_config`, `parse_config`).

One module past 400 lines: the schema and the pass that reports its
problems change together (a new field and its check), and the rules
with a life of their own (environment references, repeated keys, ranges,
files) already live beside it in their own modules.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import enum
import math
import os
import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec

from .bounds import Amount, AtLeastOne, Fraction, Port, SecondsOrZero
from .config_files import ConfigFile, type_hints
from .console.settings import ConsoleConfig
from .env_refs import expand_env
from .records.settings import RecordsConfig
from .tracing.settings import TracingConfig
from .yaml_strict import YamlError, load_yaml

__all__ = [
    "AdminConfig",
    "Capacity",
    "Config",
    "ConfigError",
    "ConnectionsConfig",
    "ConsoleConfig",
    "Deployment",
    "DeploymentTimeouts",
    "ModelConfig",
    "PipelineEntry",
    "ProviderConfig",
    "SecretsConfig",
    "ServerConfig",
    "StoreConfig",
    "Timeouts",
    "convert",
    "parse_encryption_keys",
    "parse_schema",
    "read_config_text",
]

WireFormat = Literal["openai", "anthropic", "azure", "gemini", "demo"]


class _Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class TLSConfig(_Strict):
    # Relative paths are found beside the config file (`config_files`).
    cert_file: ConfigFile
    key_file: ConfigFile


class ConnectionsConfig(_Strict):
    """How long a client may take, and how many connections it may hold.

    Enforced by the public listener (lunos_proxy/connections.py); read at
    startup, so a change takes a restart. A connection that runs out of time
    is closed without an answer, as a server closes a connection that never
    finished its request."""

    # The request line and headers must be complete this long after the
    # connection opened (first request) or after their first byte (later ones).
    header_timeout_seconds: float = 10.0
    # A request body gets this long, plus 1 s for every `body_min_rate`
    # bytes that arrived: a client keeping at least that rate is never cut off.
    body_timeout_seconds: float = 20.0
    body_min_rate: int = 1024  # bytes per second; 0: the body must be in within the timeout
    # A keep-alive connection with no request is closed after this long.
    idle_timeout_seconds: float = 75.0
    # Open connections per process, and per client address (an IPv6 client
    # by its /64); a connection over either cap is closed at once. 0: no cap
    # per address (behind a load balancer every connection has its address).
    max_open: int = 4096
    max_per_address: int = 256


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: Port = 8080
    admin_host: str = "127.0.0.1"
    admin_port: Port = 9090
    # Request bodies above this are refused with 413 before being read
    # (compressed bodies: counted decompressed, as they are decoded).
    max_body_bytes: int = 16 * 1024 * 1024
    # Accept request bodies compressed with gzip or deflate (Content-Encoding),
    # decoded after the key is checked and sent on uncompressed. false: 415.
    request_decompression: bool = False
    connections: ConnectionsConfig = msgspec.field(default_factory=ConnectionsConfig)
    # On SIGTERM, in-flight requests get this long to finish.
    shutdown_grace_seconds: SecondsOrZero = 30.0
    # On SIGTERM, first drain this long: /readyz answers 503 (load balancers
    # take the instance out) while requests are still served; then stop
    # accepting and give in-flight requests `shutdown_grace_seconds`.
    drain_seconds: SecondsOrZero = 0.0
    tls: TLSConfig | None = None
    # Reload the config file when it changes, checking this often (0: only
    # on SIGHUP or POST /admin/reload).
    watch_config_seconds: SecondsOrZero = 0.0
    # Forward requests with no API key check while `host` is not loopback.
    # Refused unless set (see `open_relay`), and warned about at every start.
    allow_unauthenticated: bool = False


class StoreConfig(_Strict):
    # memory:///path/to/file.json (embedded, one process) or redis://, rediss://,
    # redis+sentinel://, redis+cluster:// (shared by every instance).
    url: str = "memory://data/lunos.json"
    # What to do while the store is unreachable: keep serving with local
    # limits ("fail_open") or refuse with 503 ("fail_closed").
    on_failure: Literal["fail_open", "fail_closed"] = "fail_open"
    options: dict[str, Any] = msgspec.field(default_factory=dict)


class Timeouts(_Strict):
    connect: float = 10.0
    # Until the provider's response headers arrive (non-streamed answers
    # from large models can take minutes).
    first_byte: float = 300.0
    # Longest silence between two chunks of a body; a healthy stream has no
    # total cap.
    idle: float = 120.0


MIN_HASH_SECRET = 32  # characters of `SecretsConfig.hash_secret`


class SecretsConfig(_Strict):
    """Server secrets (see lunos_proxy/crypto.py). Each field may be empty, and
    is then read from `key_file`; production sets them from the environment."""

    # HMAC-SHA-256 key for API keys, admin tokens and the email blind index:
    # 32+ characters. Changing it invalidates every key (static ones included).
    hash_secret: str = ""
    # AES-256-GCM keys for account PII: "KEY_ID:BASE64URL(32 bytes)", comma
    # separated; the first encrypts, every one decrypts (rotation).
    encryption_keys: str = ""
    # A JSON file {"hash_secret": ..., "encryption_keys": ...} for the fields
    # left empty above.
    key_file: str = ""
    # Create `key_file` with random secrets (mode 0600) when it is missing:
    # for development only, and warned about at startup and by `check`.
    create_key_file: bool = False


MIN_ADMIN_TOKEN = 24  # characters of admin.token


class AdminConfig(_Strict):
    """The admin API's bootstrap credentials (tokens made through it live in the store)."""

    # A full-scope token, usually ${LUNOS_ADMIN_TOKEN}; kept in memory as its hash.
    token: str = ""
    # A full-scope token in a file (mode 0600): read at startup, or created
    # there on first start when missing, which is how `make run` gets a
    # working admin API and CLI without setup.
    token_file: str = ""

    def __post_init__(self) -> None:
        # The admin listener does not slow down guessing (a 401 is logged,
        # never counted), so a full-scope token must be long enough not to be
        # guessed: "changeme" or "admin" is refused.
        if 0 < len(self.token) < MIN_ADMIN_TOKEN:
            raise ValueError(
                f"token is {len(self.token)} characters, too few to be safe: use at least "
                f"{MIN_ADMIN_TOKEN} (e.g. lat- and the output of openssl rand -hex 24)"
            )


class ProviderConfig(_Strict):
    format: WireFormat
    base_url: str = ""
    api_key: str = ""
    # Azure OpenAI's api-version query parameter; Anthropic's default
    # anthropic-version header when the client sends none.
    api_version: str = ""
    # format openai only: sent as OpenAI-Organization / OpenAI-Project. A
    # client's own are never passed on (they would choose who pays).
    organization: str = ""
    project: str = ""
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    timeouts: Timeouts = msgspec.field(default_factory=Timeouts)
    max_connections: int = 100
    verify_tls: bool = True
    region: str = ""

    def __post_init__(self) -> None:
        # These go into every request's headers: a line break (a key file
        # or `echo` leaves one) would fail each request to this provider.
        problems = [
            f"{name} has a line break (a trailing newline from a file or echo?)"
            for name in ("api_key", "api_version", "organization", "project")
            if _BREAKS.search(getattr(self, name))
        ]
        for header, value in self.headers.items():
            if not HEADER_NAME.fullmatch(header):
                problems.append(f"headers: {header!r} is no HTTP header name")
            elif _BREAKS.search(value):
                problems.append(f"headers: {header} has a line break")
        if problems:
            raise ValueError("; ".join(problems))


_BREAKS = re.compile(r"[\r\n\x00]")
HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+")  # an RFC 9110 token


class Capacity(_Strict):
    """What one deployment may take; a deployment at its limit is passed over.

    Per-minute limits are counted in the store (shared by every instance);
    `max_concurrent` is counted per instance."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_concurrent: int | None = None


class DeploymentTimeouts(_Strict):
    """Overrides of the provider's timeouts for one deployment (e.g. a slow model)."""

    connect: float | None = None
    first_byte: float | None = None
    idle: float | None = None


class Deployment(_Strict):
    provider: str
    model: str  # the provider's name for the model
    # Names the deployment in metrics, the admin API and shared state
    # (cooldowns); defaults to "provider/model".
    name: str = ""
    weight: float = 1.0
    # Tier: 2 is used only while every tier-1 deployment is unavailable.
    priority: AtLeastOne = 1
    region: str = ""  # defaults to the provider's region
    capacity: Capacity | None = None
    timeouts: DeploymentTimeouts | None = None
    # Relative price (e.g. USD per million tokens) for the lowest_price
    # strategy, when the pricing table does not list this deployment.
    price: Amount | None = None

    @property
    def id(self) -> str:
        return self.name or f"{self.provider}/{self.model}"


StrategyName = Literal["weighted", "least_in_flight", "lowest_latency", "lowest_price", "priority"]


class ModelConfig(_Strict):
    deployments: list[Deployment]
    aliases: list[str] = msgspec.field(default_factory=list)
    # How the router picks among the deployments of one tier.
    strategy: StrategyName = "weighted"
    # Public models to try, in order, when every deployment of this one failed.
    fallbacks: list[str] = msgspec.field(default_factory=list)


class PipelineEntry(_Strict):
    name: str
    settings: dict[str, Any] = msgspec.field(default_factory=dict)


class MetricsConfig(_Strict):
    # Share of requests whose plugins are each timed, for
    # lunos_plugin_duration_seconds: timing a plugin costs a layer around it
    # (about 4 % of a request's CPU with the shipped pipeline), and the
    # histogram's quantiles need only a sample. 1: every request; 0: none.
    plugin_time_share: Fraction = 0.125


class Config(_Strict):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    store: StoreConfig = msgspec.field(default_factory=StoreConfig)
    # Usage events and the billing ledger (lunos_proxy/records/settings.py).
    records: RecordsConfig = msgspec.field(default_factory=RecordsConfig)
    providers: dict[str, ProviderConfig] = msgspec.field(default_factory=dict)
    models: dict[str, ModelConfig] = msgspec.field(default_factory=dict)
    pipeline: list[PipelineEntry] = msgspec.field(default_factory=list)
    secrets: SecretsConfig = msgspec.field(default_factory=SecretsConfig)
    admin: AdminConfig = msgspec.field(default_factory=AdminConfig)
    console: ConsoleConfig = msgspec.field(default_factory=ConsoleConfig)
    tracing: TracingConfig = msgspec.field(default_factory=TracingConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    # Filled after loading: the plugin settings structs, in pipeline order.
    plugin_settings: list[Any] = msgspec.field(default_factory=list)
    source: str = ""

    def resolve_model(self, name: str) -> tuple[str, ModelConfig] | None:
        """The public model for a name or alias."""
        model = self.models.get(name)
        if model is not None:
            return name, model
        for public, m in self.models.items():
            if name in m.aliases:
                return public, m
        return None


class ConfigError(Exception):
    """A config that cannot be used; `problems` are ``FILE: where: what`` lines."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


_UNKNOWN_FIELD = re.compile(r"Object contains unknown field (\S+)")
_MSGSPEC_PATH = re.compile(r" - at `\$(.*)`$")
T = TypeVar("T")


def _convert(data: Any, typ: type[T], where: str, problems: list[str]) -> T | None:
    # Not strict: a number or true/false may be written as a string, which is
    # what `port: ${LUNOS_PORT:-8080}` is once the environment is read in.
    try:
        return msgspec.convert(data, typ, strict=False)
    except msgspec.ValidationError as e:
        problems.append(_describe(e, where, data, typ))
        return None


def convert(data: Any, typ: type[T], where: str, problems: list[str]) -> T | None:
    """`data` as a `typ` struct, or None with a ``where: what`` line added to `problems`."""
    return _convert(data, typ, where, problems)


def _describe(e: msgspec.ValidationError, where: str, data: Any, typ: Any) -> str:
    text = str(e)
    m = _MSGSPEC_PATH.search(text)
    suffix = ""
    if m:
        text = text[: m.start()]
        suffix, typ = _name_keys(m.group(1), data, typ)
    path = where + suffix
    if path.startswith("."):
        path = path[1:]
    text = text.replace("`", "")
    if text.startswith("Invalid enum value"):
        choices = _choices(typ)
        if choices:
            text += f" (one of: {', '.join(choices)})"
    unknown = _UNKNOWN_FIELD.fullmatch(text)
    fields = getattr(_bare(typ), "__struct_fields__", ())
    if unknown and fields:
        close = difflib.get_close_matches(unknown.group(1), fields, n=1)
        if close:
            text += f" (did you mean {close[0]}?)"
    return f"{path or '(top)'}: {text[:1].lower()}{text[1:]}"


def _choices(typ: Any) -> list[str]:
    """The values a Literal or Enum field takes, as an operator writes them."""
    typ = _bare(typ)
    if typing.get_origin(typ) is typing.Literal:
        return [str(v) for v in typing.get_args(typ)]
    if isinstance(typ, type) and issubclass(typ, enum.Enum):
        return [str(member.value) for member in typ]
    return []


_SEGMENT = re.compile(r"\.([^.\[]+)|\[(\d+)\]|\[\.\.\.\]")


def _name_keys(suffix: str, data: Any, typ: Any) -> tuple[str, Any]:
    """msgspec's error path with the mapping keys it leaves out filled in:
    ``.plans[...].key`` becomes ``.plans.free.key`` (the entry that fails);
    and the type found there (None where the way was lost)."""
    out: list[str] = []
    for m in _SEGMENT.finditer(suffix):
        typ = _bare(typ)
        field, index = m.group(1), m.group(2)
        if field is not None:
            out.append(m.group(0))
            hints = type_hints(typ) if isinstance(typ, type) else {}
            typ = hints.get(field)
            data = data.get(field) if isinstance(data, dict) else None
        elif index is not None:
            out.append(m.group(0))
            args = typing.get_args(typ)
            typ = args[0] if args else None
            data = data[int(index)] if isinstance(data, list) and int(index) < len(data) else None
        else:
            args = typing.get_args(typ)
            typ = args[1] if len(args) == 2 else None
            key = next(
                (k for k, v in (data.items() if isinstance(data, dict) else ())
                 if typ is not None and not _converts(v, typ)),
                None,
            )
            if key is None:
                return suffix, None  # lost the way: msgspec's own path, as is
            out.append(f".{key}")
            data = data[key]
    return "".join(out), typ


def _bare(typ: Any) -> Any:
    """`typ` without Annotated and without a None alternative."""
    while True:
        if typing.get_origin(typ) is typing.Annotated:
            typ = typing.get_args(typ)[0]
            continue
        if typing.get_origin(typ) in (typing.Union, types.UnionType):
            rest = [a for a in typing.get_args(typ) if a is not type(None)]
            if len(rest) == 1:
                typ = rest[0]
                continue
        return typ


def _converts(data: Any, typ: Any) -> bool:
    try:
        msgspec.convert(data, typ, strict=False)
    except (msgspec.ValidationError, TypeError):
        return False
    return True


def _sections(raw: dict[str, Any], problems: list[str]) -> Iterator[tuple[str, Any]]:
    names = [f for f in Config.__struct_fields__ if f not in ("plugin_settings", "source")]
    for key in raw:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append(f"(top): unknown key {key!r}{hint}")
        else:
            yield key, raw[key]


_ENDPOINT_SUFFIXES = (
    "/chat/completions", "/completions", "/embeddings", "/responses", "/messages",
    ":generateContent", ":streamGenerateContent",
)


def _is_http_url(url: str) -> bool:
    return re.fullmatch(r"https?://[^/\s:]+(:\d+)?(/\S*)?", url) is not None


def parse_encryption_keys(text: str) -> dict[str, bytes]:
    """``"k2:BASE64,k1:BASE64"`` → {"k2": key, "k1": key}, first is current."""
    keys: dict[str, bytes] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key_id, sep, b64 = part.partition(":")
        try:
            key = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4))
        except (binascii.Error, ValueError):
            key = b""
        if not sep or not key_id or len(key) != 32:
            raise ValueError("each encryption key must be KEY_ID:BASE64URL of 32 bytes")
        keys[key_id] = key
    if not keys:
        raise ValueError("no encryption key configured")
    return keys


def positive(v: float) -> bool:
    """Greater than 0 and finite (NaN compares false with everything)."""
    return math.isfinite(v) and v > 0


def _check(cfg: Config, problems: list[str], broken: set[str]) -> None:
    if cfg.secrets.hash_secret and len(cfg.secrets.hash_secret) < MIN_HASH_SECRET:
        problems.append(f"secrets.hash_secret: must be at least {MIN_HASH_SECRET} characters")
    if cfg.secrets.encryption_keys:
        try:
            parse_encryption_keys(cfg.secrets.encryption_keys)
        except ValueError as e:
            problems.append(f"secrets.encryption_keys: {e}")
    for name, p in cfg.providers.items():
        where = f"providers.{name}"
        if p.format == "demo":
            if p.base_url:
                problems.append(f"{where}.base_url: the demo provider is built in; remove base_url")
        elif not _is_http_url(p.base_url):
            problems.append(f"{where}.base_url: expected an http(s) URL")
        elif p.base_url.split("?", 1)[0].rstrip("/").endswith(_ENDPOINT_SUFFIXES):
            # The endpoint is added to the base for each request: this one
            # would be asked for .../chat/completions/chat/completions.
            problems.append(
                f"{where}.base_url: give the API's base (such as https://api.openai.com/v1), "
                "not one of its endpoints"
            )
        for field in ("connect", "first_byte", "idle"):
            if not positive(getattr(p.timeouts, field)):
                problems.append(f"{where}.timeouts.{field}: must be greater than 0")
        if p.max_connections < 1:
            problems.append(f"{where}.max_connections: must be at least 1")
        for field in ("organization", "project"):
            value = getattr(p, field)
            if not value:
                continue
            if p.format != "openai":
                problems.append(f"{where}.{field}: only a provider of format openai has one")
            elif re.fullmatch(r"[A-Za-z0-9._:-]{1,200}", value) is None:
                problems.append(f"{where}.{field}: expected an id such as org-... or proj_...")
    seen: dict[str, str] = {}
    for public, m in cfg.models.items():
        where = f"models.{public}"
        if not m.deployments:
            problems.append(f"{where}.deployments: needs at least one deployment")
        for i, d in enumerate(m.deployments):
            if d.provider not in cfg.providers and d.provider not in broken:
                problems.append(
                    f"{where}.deployments[{i}].provider: unknown provider {d.provider!r}"
                )
            if not positive(d.weight):
                problems.append(f"{where}.deployments[{i}].weight: must be greater than 0")
        for name in [public, *m.aliases]:
            if name in seen and seen[name] != public:
                problems.append(f"{where}.aliases: {name!r} is already a name of {seen[name]!r}")
            seen.setdefault(name, public)
    s = cfg.server
    if s.max_body_bytes < 1024:
        problems.append("server.max_body_bytes: must be at least 1024")
    _check_connections(s.connections, problems)
    if not cfg.store.url.startswith(("memory:", "redis://", "rediss://", "redis+")):
        problems.append(
            "store.url: expected memory://, redis://, rediss://, redis+sentinel:// or redis+cluster://"
        )


# (field, lowest, highest): a timeout of 0 would close every connection at
# once, and one of hours would keep a stalled client's connection for hours.
_CONNECTION_BOUNDS: tuple[tuple[str, float, float], ...] = (
    ("header_timeout_seconds", 0.1, 300.0),
    ("body_timeout_seconds", 0.1, 3600.0),
    ("body_min_rate", 0, 1 << 30),
    ("idle_timeout_seconds", 0.1, 3600.0),
    ("max_open", 1, 1_000_000),
    ("max_per_address", 0, 1_000_000),
)


def _check_connections(c: ConnectionsConfig, problems: list[str]) -> None:
    found = len(problems)
    for field, low, high in _CONNECTION_BOUNDS:
        value = getattr(c, field)
        if not (math.isfinite(value) and low <= value <= high):
            problems.append(
                f"server.connections.{field}: must be from {_number(low)} to {_number(high)}"
            )
    if len(problems) == found and c.max_per_address > c.max_open:
        problems.append("server.connections.max_per_address: must not exceed max_open")


def _number(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def parse_schema(text: str, source: str, problems: list[str]) -> Config:
    """Parse YAML text against the schema, adding each problem found to
    `problems` (``where: what``); raise ConfigError only for text that is no
    config at all. `lunos_proxy.loading.parse_config` adds the checks that
    need the providers and the plugins."""
    label = Path(source).name or source
    try:
        raw = load_yaml(text, label)
    except YamlError as e:
        raise ConfigError(e.problems) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([f"{label}: (top): expected a mapping of sections"])
    raw = expand_env(raw, "", problems)
    parts: dict[str, Any] = {}
    broken: set[str] = set()
    for key, value in _sections(raw, problems):
        if key in ("providers", "models") and isinstance(value, dict):
            item_type = ProviderConfig if key == "providers" else ModelConfig
            items = {}
            for name, item in value.items():
                converted = _convert(item, item_type, f"{key}.{name}", problems)
                if converted is not None:
                    items[str(name)] = converted
                elif key == "providers":
                    broken.add(str(name))  # named once; its models do not repeat it
            parts[key] = items
        elif key == "pipeline" and isinstance(value, list):
            entries = [
                _convert(v, PipelineEntry, f"pipeline[{i}]", problems) for i, v in enumerate(value)
            ]
            parts[key] = [e for e in entries if e is not None]
        else:
            sections: dict[str, type[msgspec.Struct]] = {
                "server": ServerConfig,
                "store": StoreConfig,
                "secrets": SecretsConfig,
                "admin": AdminConfig,
                "console": ConsoleConfig,
                "tracing": TracingConfig,
                "metrics": MetricsConfig,
                "records": RecordsConfig,
            }
            typ = sections.get(key)
            if typ is None:
                shape = "list" if key == "pipeline" else "mapping"
                problems.append(f"{key}: expected a {shape}, got {type(value).__name__}")
                continue
            section = _convert(value, typ, key, problems)
            if section is not None:
                parts[key] = section
    cfg = Config(**parts, source=source)
    _check(cfg, problems, broken)
    problems += cfg.tracing.problems()
    return cfg


def read_config_text(path: str | os.PathLike[str]) -> str:
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError([f"{p.name}: (file): cannot read: {e.strerror}"]) from None
    except UnicodeDecodeError as e:
        raise ConfigError([f"{p.name}: (file): not UTF-8 text (byte {e.start})"]) from None
