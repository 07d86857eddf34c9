"""The YAML schema, loading with environment references, and validation.

The schema is a tree of msgspec Structs with defaults beside each field;
`config/lunos.yaml` is its commented example and runs as is. Loading
never stops at the first problem: every section is checked and every
problem is reported as ``FILE: where: what``, e.g.
``lunos.yaml: providers.openai.base_url: expected an http(s) URL``.
Unknown keys are errors. ``${NAME}`` (or ``${NAME:-default}``) in any
string is replaced from the environment; a missing variable is an error
naming it.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec
import yaml

from .console.settings import ConsoleConfig

__all__ = [
    "AdminConfig",
    "Capacity",
    "Config",
    "ConfigError",
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
    "load_config",
]

WireFormat = Literal["openai", "anthropic", "azure", "gemini", "demo"]


class _Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class TLSConfig(_Strict):
    cert_file: str
    key_file: str


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = 8080
    admin_host: str = "127.0.0.1"
    admin_port: int = 9090
    # Request bodies above this are refused with 413 before being read.
    max_body_bytes: int = 16 * 1024 * 1024
    # On SIGTERM, in-flight requests get this long to finish.
    shutdown_grace_seconds: float = 30.0
    # On SIGTERM, first drain this long: /readyz answers 503 (load balancers
    # take the instance out) while requests are still served; then stop
    # accepting and give in-flight requests `shutdown_grace_seconds`.
    drain_seconds: float = 0.0
    tls: TLSConfig | None = None
    # Reload the config file when it changes, checking this often (0: only
    # on SIGHUP or POST /admin/reload).
    watch_config_seconds: float = 0.0


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


class AdminConfig(_Strict):
    """The admin API's bootstrap credentials (tokens made through it live in the store)."""

    # A full-scope token, usually ${LUNOS_ADMIN_TOKEN}; kept in memory as its hash.
    token: str = ""
    # A full-scope token in a file (mode 0600): read at startup, or created
    # there on first start when missing, which is how `make run` gets a
    # working admin API and CLI without setup.
    token_file: str = ""


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
    priority: int = 1
    region: str = ""  # defaults to the provider's region
    capacity: Capacity | None = None
    timeouts: DeploymentTimeouts | None = None
    # Relative price (e.g. USD per million tokens) for the lowest_price
    # strategy, when the pricing table does not list this deployment.
    price: float | None = None

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


class Config(_Strict):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    store: StoreConfig = msgspec.field(default_factory=StoreConfig)
    providers: dict[str, ProviderConfig] = msgspec.field(default_factory=dict)
    models: dict[str, ModelConfig] = msgspec.field(default_factory=dict)
    pipeline: list[PipelineEntry] = msgspec.field(default_factory=list)
    secrets: SecretsConfig = msgspec.field(default_factory=SecretsConfig)
    admin: AdminConfig = msgspec.field(default_factory=AdminConfig)
    console: ConsoleConfig = msgspec.field(default_factory=ConsoleConfig)
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


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_MSGSPEC_PATH = re.compile(r" - at `\$(.*)`$")
T = TypeVar("T")


def _expand_env(node: Any, where: str, problems: list[str]) -> Any:
    if isinstance(node, str):

        def sub(m: re.Match[str]) -> str:
            value = os.environ.get(m.group(1), m.group(2))
            if value is None:
                problems.append(f"{where}: environment variable {m.group(1)} is not set")
                return ""
            return value

        return _ENV_REF.sub(sub, node)
    if isinstance(node, dict):
        return {k: _expand_env(v, _join(where, str(k)), problems) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand_env(v, f"{where}[{i}]", problems) for i, v in enumerate(node)]
    return node


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _convert(data: Any, typ: type[T], where: str, problems: list[str]) -> T | None:
    try:
        return msgspec.convert(data, typ)
    except msgspec.ValidationError as e:
        problems.append(_describe(e, where))
        return None


def _describe(e: msgspec.ValidationError, where: str) -> str:
    text = str(e)
    m = _MSGSPEC_PATH.search(text)
    suffix = ""
    if m:
        text = text[: m.start()]
        suffix = m.group(1)
    path = where + suffix
    if path.startswith("."):
        path = path[1:]
    text = text.replace("`", "")
    return f"{path or '(top)'}: {text[:1].lower()}{text[1:]}"


def _sections(raw: dict[str, Any], problems: list[str]) -> Iterator[tuple[str, Any]]:
    for key in raw:
        if key not in Config.__struct_fields__ or key in ("plugin_settings", "source"):
            problems.append(f"(top): unknown key {key!r}")
        else:
            yield key, raw[key]


def _is_http_url(url: str) -> bool:
    return re.fullmatch(r"https?://[^/\s:]+(:\d+)?(/\S*)?", url) is not None


def positive(v: float) -> bool:
    """Greater than 0 and finite (NaN compares false with everything)."""
    return math.isfinite(v) and v > 0


def _check(cfg: Config, problems: list[str]) -> None:
    if cfg.secrets.hash_secret and len(cfg.secrets.hash_secret) < MIN_HASH_SECRET:
        problems.append(f"secrets.hash_secret: must be at least {MIN_HASH_SECRET} characters")
    for name, p in cfg.providers.items():
        where = f"providers.{name}"
        if p.format == "demo":
            if p.base_url:
                problems.append(f"{where}.base_url: the demo provider is built in; remove base_url")
        elif not _is_http_url(p.base_url):
            problems.append(f"{where}.base_url: expected an http(s) URL")
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
            if d.provider not in cfg.providers:
                problems.append(
                    f"{where}.deployments[{i}].provider: unknown provider {d.provider!r}"
                )
            if not positive(d.weight):
                problems.append(f"{where}.deployments[{i}].weight: must be greater than 0")
        for name in [public, *m.aliases]:
            if name in seen and seen[name] != public:
                problems.append(f"{where}.aliases: {name!r} is already a name of {seen[name]!r}")
            seen.setdefault(name, public)
    from .routing.checks import check_routes

    problems += check_routes(cfg)
    s = cfg.server
    if s.max_body_bytes < 1024:
        problems.append("server.max_body_bytes: must be at least 1024")
    if not cfg.store.url.startswith(("memory:", "redis://", "rediss://", "redis+")):
        problems.append(
            "store.url: expected memory://, redis://, rediss://, redis+sentinel:// or redis+cluster://"
        )


def _plugin_settings(cfg: Config, problems: list[str]) -> None:
    from .plugin import PluginError, find_plugin

    names: set[str] = set()
    for i, entry in enumerate(cfg.pipeline):
        where = f"pipeline[{i}]"
        if entry.name in names:
            problems.append(f"{where}.name: plugin {entry.name!r} appears twice")
        names.add(entry.name)
        try:
            cls = find_plugin(entry.name)
        except PluginError as e:
            problems.append(f"{where}.name: {e}")
            cfg.plugin_settings.append(None)
            continue
        settings = _convert(entry.settings, cls.Settings, f"{where}.settings", problems)
        cfg.plugin_settings.append(settings)


def parse_config(text: str, source: str) -> Config:
    """Parse and validate YAML text; raise ConfigError listing every problem."""
    label = Path(source).name or source
    problems: list[str] = []
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f"line {mark.line + 1}" if mark is not None else "(top)"
        reason = getattr(e, "problem", None) or "not valid YAML"
        raise ConfigError([f"{label}: {at}: {reason}"]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([f"{label}: (top): expected a mapping of sections"])
    raw = _expand_env(raw, "", problems)
    parts: dict[str, Any] = {}
    for key, value in _sections(raw, problems):
        if key in ("providers", "models") and isinstance(value, dict):
            item_type = ProviderConfig if key == "providers" else ModelConfig
            items = {}
            for name, item in value.items():
                converted = _convert(item, item_type, f"{key}.{name}", problems)
                if converted is not None:
                    items[str(name)] = converted
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
    _check(cfg, problems)
    _plugin_settings(cfg, problems)
    if problems:
        raise ConfigError([f"{label}: {p}" for p in problems])
    return cfg


def load_config(path: str | os.PathLike[str]) -> Config:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError([f"{p.name}: (file): cannot read: {e.strerror}"]) from None
    return parse_config(text, str(p))
