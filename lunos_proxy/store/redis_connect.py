"""From a URL and options to a redis-py asyncio client.

URLs (user and password optional everywhere; a port defaults to 6379, or
26379 for a sentinel):

    redis://[[user]:password@]host[:port][/db]          one server
    rediss://...                                        the same over TLS
    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]
    rediss+sentinel://...                               TLS to sentinels and master
    redis+cluster://[[user]:password@]host[:port][,host[:port]...]
    rediss+cluster://...                                TLS to every node

For Sentinel the hosts are the sentinels and `service` is the name they
monitor (`sentinel monitor <service> ...`); the user and password are the
master's, while the sentinels' own credentials, if any, are the options
`sentinel_username` / `sentinel_password`. For Cluster the hosts are seed
nodes; the rest of the cluster is discovered from them.

TLS verifies the server's certificate and host name by default; point
`ssl_ca_certs` at a private CA's file rather than turning verification off.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import msgspec
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..bounds import AtLeastOne, Seconds, SecondsOrZero
from ..config_files import ConfigFile
from .redis_lane import Address, LaneAuth, fixed

__all__ = ["SCHEMES", "Client", "Connected", "RedisOptions", "connect"]

SCHEMES = (
    "redis",
    "rediss",
    "redis+sentinel",
    "rediss+sentinel",
    "redis+cluster",
    "rediss+cluster",
)

Client = Redis | RedisCluster


class RedisOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    prefix: str = "lunos:"  # of every key and channel; several deployments can share a server
    connect_timeout: Seconds = 1.0  # seconds
    timeout: Seconds = 1.0  # seconds for one operation
    max_connections: AtLeastOne = 16  # operations in flight at once, per store
    health_check_interval: SecondsOrZero = 10.0  # seconds between PINGs on the pub/sub connection
    # Files: relative to the config file's folder, checked when it loads.
    ssl_ca_certs: ConfigFile | None = None  # CA file; None: the system's trust store
    ssl_cert_reqs: Literal["required", "optional", "none"] = "required"
    ssl_check_hostname: bool = True
    ssl_certfile: ConfigFile | None = None  # client certificate, for servers that ask for one
    ssl_keyfile: ConfigFile | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None

    def __post_init__(self) -> None:
        # Braces would end the `{hash tag}` that keeps a script's keys on one slot.
        if "{" in self.prefix or "}" in self.prefix:
            raise ValueError("the key prefix must not contain braces")


@dataclasses.dataclass
class _Url:
    tls: bool
    hosts: list[tuple[str, int]]
    username: str | None
    password: str | None
    path: list[str]


def _parse(url: str, default_port: int) -> _Url:
    # urlsplit() refuses a comma-separated host list as a netloc, so split by hand.
    parts = urlsplit(url)
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    hosts = []
    for item in hostlist.split(","):
        host, port = item, str(default_port)
        if item.startswith("["):  # [IPv6]:port
            host, _, rest = item[1:].partition("]")
            port = rest.removeprefix(":") or port
        elif ":" in item:
            host, _, port = item.rpartition(":")
        if not host:
            raise ValueError(f"no host in store URL {parts.scheme}://...")
        hosts.append((host, int(port)))
    return _Url(
        tls=parts.scheme.startswith("rediss"),
        hosts=hosts,
        username=unquote(username) or None,
        password=unquote(password) or None,
        path=[unquote(p) for p in parts.path.split("/") if p],
    )


def _connection_kwargs(options: RedisOptions, tls: bool) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "socket_connect_timeout": options.connect_timeout,
        "socket_timeout": options.timeout,
        "socket_keepalive": True,
        "health_check_interval": options.health_check_interval,
        # One quick retry on a broken connection (a server restart leaves the
        # pool's sockets dead); none on a timeout, since the command may have
        # run and a retried `hit` would charge twice.
        "retry": Retry(
            ExponentialBackoff(cap=0.05, base=0.01), retries=1, supported_errors=(ConnectionError,)
        ),
    }
    if tls:
        kwargs.update(
            ssl=True,
            ssl_ca_certs=options.ssl_ca_certs,
            ssl_cert_reqs=options.ssl_cert_reqs,
            ssl_check_hostname=options.ssl_check_hostname,
            ssl_certfile=options.ssl_certfile,
            ssl_keyfile=options.ssl_keyfile,
        )
    return kwargs


@dataclasses.dataclass
class Connected:
    client: Client
    # Where and as whom the store's pipelined lane (redis_lane) connects:
    # `master` says where the one writable server is now (None on a Cluster,
    # where each key's node comes from the client's slot map).
    auth: LaneAuth
    tls: bool
    master: Address | None = None
    # Clients besides `client` that must close with it: a Sentinel's own.
    others: list[Redis] = dataclasses.field(default_factory=list)

    async def aclose(self) -> None:
        for client in (self.client, *self.others):
            await client.aclose()


def connect(url: str, options: RedisOptions) -> Connected:
    """A client for `url`; it connects lazily, on the first command."""
    scheme = urlsplit(url).scheme
    if scheme not in SCHEMES:
        raise ValueError(f"not a Redis URL scheme: {scheme!r}")
    if scheme.endswith("+cluster"):
        parsed = _parse(url, 6379)
        auth = LaneAuth(parsed.username, parsed.password)
        return Connected(_cluster(parsed, options), auth, parsed.tls)
    if scheme.endswith("+sentinel"):
        return _sentinel(_parse(url, 26379), options)
    kwargs = _connection_kwargs(options, scheme == "rediss")
    # from_url() turns "rediss" into an SSL connection class itself.
    kwargs.pop("ssl", None)
    pool = ConnectionPool.from_url(url, **kwargs)
    at = pool.connection_kwargs
    auth = LaneAuth(at.get("username"), at.get("password"), int(at.get("db") or 0))
    master = fixed(str(at.get("host", "localhost")), int(at.get("port", 6379)))
    # The client owns the pool: closing the client closes it.
    return Connected(Redis.from_pool(pool), auth, scheme == "rediss", master)


class _Cluster(RedisCluster):
    """RedisCluster that never sends a command again after a timeout: the
    command may have run (a retried `hit` would charge twice). redis-py's
    cluster client retries the errors of ERRORS_ALLOW_RETRY on its own,
    whatever the `retry` it is given says."""

    ERRORS_ALLOW_RETRY = tuple(  # type: ignore[assignment]
        e for e in RedisCluster.ERRORS_ALLOW_RETRY if not issubclass(e, RedisTimeoutError)
    )


def _cluster(parsed: _Url, options: RedisOptions) -> RedisCluster:
    kwargs = _connection_kwargs(options, parsed.tls)
    return _Cluster(
        startup_nodes=[ClusterNode(host, port) for host, port in parsed.hosts],
        username=parsed.username,
        password=parsed.password,
        # Per node; the store's own limit keeps it from being reached
        # (RedisCluster raises rather than waits when it is).
        max_connections=options.max_connections + 8,
        **kwargs,
    )


def _sentinel(parsed: _Url, options: RedisOptions) -> Connected:
    if not parsed.path:
        raise ValueError("a redis+sentinel URL names the service: .../<service>[/<db>]")
    service = parsed.path[0]
    db = int(parsed.path[1]) if len(parsed.path) > 1 else 0
    kwargs = _connection_kwargs(options, parsed.tls)
    sentinel_kwargs = {
        **kwargs,
        "username": options.sentinel_username,
        "password": options.sentinel_password,
    }
    sentinel = Sentinel(parsed.hosts, sentinel_kwargs=sentinel_kwargs, **kwargs)  # type: ignore[no-untyped-call]
    client: Redis = sentinel.master_for(
        service, db=db, username=parsed.username, password=parsed.password
    )

    async def master() -> tuple[str, int]:
        host, port = await sentinel.discover_master(service)
        return str(host), int(port)

    auth = LaneAuth(parsed.username, parsed.password, db)
    return Connected(client, auth, parsed.tls, master, list(sentinel.sentinels))
