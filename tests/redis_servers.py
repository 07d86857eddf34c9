"""Real Redis servers for tests: standalone, TLS, Sentinel and Cluster.

Every server is a `redis-server` child process on a free loopback port with
persistence off, in its own temp dir, stopped when its fixture ends. A missing
`redis-server` binary fails the test (it is a test dependency, never a skip).

Fixtures (import them into a conftest with ``from tests.redis_servers import *``):

    redis_url           session   URL of a standalone server shared by all tests
    redis_server        function  a RedisServer of the test's own: .stop(), .start(),
                                  .restart() (same port), .url
    redis_cluster       function  a RedisCluster of the test's own (see SlotMove)
    redis_tls           session   TlsRedis: .url (rediss://), .ca_file
    redis_sentinel_url  session   redis+sentinel://127.0.0.1:<port>/mymaster
    redis_cluster_url   session   redis+cluster://127.0.0.1:<port> (3 masters)

Tests sharing a session server keep apart by key prefix, never by FLUSHALL.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import ipaddress
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

__all__ = [
    "RedisCluster",
    "RedisSentinel",
    "RedisServer",
    "SlotMove",
    "TlsRedis",
    "redis_cluster",
    "redis_cluster_url",
    "redis_sentinel_url",
    "redis_server",
    "redis_tls",
    "redis_url",
]

SENTINEL_SERVICE = "mymaster"
_START_TIMEOUT = 10.0


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not on PATH: install redis-server 7 to run these tests")
    return path


def free_port(*, with_bus: bool = False) -> int:
    """A loopback port nothing listens on, for a server another process will
    bind; with `with_bus`, port + 10000 too (a cluster node's bus port).

    Chosen below the kernel's ephemeral range (32768 and up on Linux): a port
    from bind(("", 0)) is one the outgoing connections of parallel work can
    take between this check and the server's bind. In-process servers bind
    first and keep the socket instead (tests.conftest.start_site)."""
    for _ in range(200):
        port = random.randint(10000, 22000) if with_bus else random.randint(10000, 32000)
        candidates = (port, port + 10000) if with_bus else (port,)
        with contextlib.ExitStack() as stack:
            try:
                for candidate in candidates:
                    s = stack.enter_context(socket.socket())
                    s.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port below the ephemeral range")


def _command(port: int, *args: str, tls: ssl.SSLContext | None = None) -> bytes:
    """Send one command in RESP and return the raw reply (enough for readiness checks)."""
    payload = f"*{len(args)}\r\n".encode() + b"".join(
        f"${len(a.encode())}\r\n{a}\r\n".encode() for a in args
    )
    with contextlib.ExitStack() as stack:
        sock = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=2.0))
        if tls:
            sock = stack.enter_context(tls.wrap_socket(sock, server_hostname="localhost"))
        sock.sendall(payload)
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
        return reply


def _wait_until(check: Callable[[], bool], what: str, timeout: float = _START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if check():
                return
        time.sleep(0.02)
    raise RuntimeError(f"timed out waiting for {what}")


def _die_with_parent() -> None:
    # Linux only: a test run killed before its teardown leaves no servers behind.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _spawn(argv: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, preexec_fn=_die_with_parent
    )


def _terminate(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None:
        return
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class RedisServer:
    """One redis-server process; stop and start it again on the same port."""

    def __init__(self, args: list[str] | None = None, *, port: int | None = None) -> None:
        self.port = port or free_port(with_bus=True)
        self.dir = tempfile.mkdtemp(prefix=f"lunos-redis-{self.port}-")
        self._args = args or []
        self._proc: subprocess.Popen[bytes] | None = None
        self.tls: ssl.SSLContext | None = None  # set when the server speaks only TLS

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self, *args: str) -> bytes:
        return _command(self.port, *args, tls=self.tls)

    def start(self) -> RedisServer:
        if self._proc is not None:
            return self
        argv = [
            *(_binary("redis-server"), "--save", "", "--port", str(self.port)),
            *"--bind 127.0.0.1 --appendonly no".split(),
            *("--dir", self.dir, "--logfile", os.path.join(self.dir, "redis.log")),
            *self._args,
        ]
        self._proc = _spawn(argv)
        try:
            _wait_until(self._answers, f"redis-server on port {self.port}")
        except RuntimeError:
            self.stop()
            raise RuntimeError(f"redis-server did not start; see {self.dir}/redis.log") from None
        return self

    def _answers(self) -> bool:
        assert self._proc is not None
        if self._proc.poll() is not None:
            raise RuntimeError(f"redis-server exited; see {self.dir}/redis.log")
        return self.command("PING").startswith(b"+PONG")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        _terminate(proc)

    def restart(self) -> None:
        self.stop()
        self.start()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


# -- TLS ------------------------------------------------------------------------


@dataclass
class TlsRedis:
    server: RedisServer
    ca_file: str

    @property
    def url(self) -> str:
        return f"rediss://localhost:{self.server.port}/0"


def _tls_material(directory: str) -> tuple[str, str, str]:
    """A throwaway CA and a server certificate for localhost/127.0.0.1 it signed:
    paths of (CA cert, server cert, server key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def certificate(subject: str, key: Any, issuer: str, signer: Any, *extensions: Any) -> Any:
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    unused = "content_commitment key_encipherment data_encipherment key_agreement"
    usage = dict.fromkeys([*unused.split(), "encipher_only", "decipher_only"], False)
    ca = certificate(
        "lunos test CA",
        ca_key,
        "lunos test CA",
        ca_key,
        (x509.BasicConstraints(ca=True, path_length=None), True),
        (x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, **usage), True),
    )
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = certificate(
        "localhost",
        key,
        "lunos test CA",
        ca_key,
        (x509.SubjectAlternativeName(names), False),
        (x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH]), False),
    )
    pem = serialization.Encoding.PEM
    files = {
        "ca.crt": ca.public_bytes(pem),
        "server.crt": cert.public_bytes(pem),
        "server.key": key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    }
    for name, blob in files.items():
        with open(os.path.join(directory, name), "wb") as f:
            f.write(blob)
    ca_file, cert_file, key_file = (os.path.join(directory, name) for name in files)
    return ca_file, cert_file, key_file


def start_tls_redis() -> TlsRedis:
    directory = tempfile.mkdtemp(prefix="lunos-redis-tls-")
    ca, cert, key = _tls_material(directory)
    port = free_port(with_bus=True)
    server = RedisServer(
        [
            *("--port", "0", "--tls-port", str(port), "--tls-auth-clients", "no"),
            *("--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", ca),
        ],
        port=port,
    )
    server.tls = ssl.create_default_context(cafile=ca)
    server.start()
    return TlsRedis(server=server, ca_file=ca)


# -- Sentinel -------------------------------------------------------------------


class RedisSentinel:
    """A master and one sentinel watching it as `mymaster`."""

    def __init__(self) -> None:
        self.master = RedisServer()
        self.sentinel_port = free_port()
        self._conf = os.path.join(self.master.dir, "sentinel.conf")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel_port}/{SENTINEL_SERVICE}"

    def start(self) -> RedisSentinel:
        self.master.start()
        with open(self._conf, "w") as f:
            f.write(
                f"port {self.sentinel_port}\nbind 127.0.0.1\ndir {self.master.dir}\n"
                f"sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {self.master.port} 1\n"
                f"sentinel down-after-milliseconds {SENTINEL_SERVICE} 60000\n"
            )
        # A sentinel is redis-server in sentinel mode, rewriting its own config file.
        log = os.path.join(self.master.dir, "sentinel.log")
        self._proc = _spawn([_binary("redis-server"), self._conf, "--sentinel", "--logfile", log])
        try:
            _wait_until(self._knows_master, "the sentinel")
        except RuntimeError:
            self.stop()
            raise
        return self

    def _knows_master(self) -> bool:
        assert self._proc is not None
        if self._proc.poll() is not None:
            raise RuntimeError(f"sentinel exited; see {self.master.dir}/sentinel.log")
        reply = _command(
            self.sentinel_port, "SENTINEL", "get-master-addr-by-name", SENTINEL_SERVICE
        )
        return str(self.master.port).encode() in reply

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        _terminate(proc)
        self.master.remove()


# -- Cluster --------------------------------------------------------------------


class RedisCluster:
    """Three masters, no replicas, all 16384 slots assigned."""

    def __init__(self, size: int = 3) -> None:
        args = "--cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 5000"
        self.nodes = [RedisServer(args.split()) for _ in range(size)]

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self) -> RedisCluster:
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> RedisCluster:
        for node in self.nodes:
            node.start()
        created = subprocess.run(
            [_binary("redis-cli"), "--cluster", "create"]
            + [f"127.0.0.1:{n.port}" for n in self.nodes]
            + ["--cluster-replicas", "0", "--cluster-yes"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
        )
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout[-2000:]!r}")
        for node in self.nodes:
            _wait_until(
                lambda node=node: b"cluster_state:ok" in node.command("CLUSTER", "INFO"),
                f"cluster_state:ok on port {node.port}",
                timeout=30,
            )
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.remove()


class SlotMove:
    """Moving one slot of a `RedisCluster` from the node that holds its keys
    to another, in the steps of `redis-cli --cluster reshard`: `begin`
    (IMPORTING on the target, MIGRATING on the owner), `move_keys` (MIGRATE),
    `finish` (SETSLOT NODE on every node, the target first)."""

    def __init__(self, cluster: RedisCluster, slot: int) -> None:
        self.cluster, self.slot = cluster, str(slot)
        self.owner = next(n for n in cluster.nodes if _keys_in_slot(n, slot) > 0)
        self.target = next(n for n in cluster.nodes if n is not self.owner)
        self.ids = {n.port: _node_id(n) for n in cluster.nodes}

    def begin(self) -> None:
        self.target.command("CLUSTER", "SETSLOT", self.slot, "IMPORTING", self.ids[self.owner.port])
        self.owner.command("CLUSTER", "SETSLOT", self.slot, "MIGRATING", self.ids[self.target.port])

    def move_keys(self) -> None:
        while True:
            reply = self.owner.command("CLUSTER", "GETKEYSINSLOT", self.slot, "10")
            keys = [k.decode() for k in reply.split(b"\r\n")[2::2] if k]
            if not keys:
                return
            moved = self.owner.command("MIGRATE", "127.0.0.1", str(self.target.port), "", "0",
                                       "5000", "KEYS", *keys)
            assert moved == b"+OK\r\n", moved

    def finish(self) -> None:
        others = [n for n in self.cluster.nodes if n not in (self.owner, self.target)]
        for node in (self.target, self.owner, *others):
            node.command("CLUSTER", "SETSLOT", self.slot, "NODE", self.ids[self.target.port])


def _node_id(node: RedisServer) -> str:
    return node.command("CLUSTER", "MYID").decode().strip().strip("$").split()[-1]


def _keys_in_slot(node: RedisServer, slot: int) -> int:
    return int(node.command("CLUSTER", "COUNTKEYSINSLOT", str(slot)).strip(b":\r\n"))


# -- fixtures -------------------------------------------------------------------

# Servers are shared per process, not per fixture definition, so a conftest
# at the top and one in a subdirectory both importing these fixtures still
# start one cluster per session.
_shared: dict[str, tuple[Any, int]] = {}
_shared_lock = threading.Lock()


@contextlib.contextmanager
def shared(name: str, start: Callable[[], Any], stop: Callable[[Any], None]) -> Iterator[Any]:
    with _shared_lock:
        thing, users = _shared.get(name, (None, 0))
        if users == 0:
            thing = start()
        _shared[name] = (thing, users + 1)
    try:
        yield thing
    finally:
        with _shared_lock:
            thing, users = _shared[name]
            if users == 1:
                del _shared[name]
                stop(thing)
            else:
                _shared[name] = (thing, users - 1)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with shared("standalone", lambda: RedisServer().start(), RedisServer.remove) as server:
        yield server.url


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def redis_cluster() -> Iterator[RedisCluster]:
    """A 3-node Cluster of the test's own (one that moves slots, say)."""
    cluster = RedisCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_tls() -> Iterator[TlsRedis]:
    def stop(tls: TlsRedis) -> None:
        tls.server.remove()
        shutil.rmtree(os.path.dirname(tls.ca_file), ignore_errors=True)

    with shared("tls", start_tls_redis, stop) as tls:
        yield tls


@pytest.fixture(scope="session")
def redis_sentinel_url() -> Iterator[str]:
    with shared("sentinel", lambda: RedisSentinel().start(), RedisSentinel.stop) as sentinel:
        yield sentinel.url


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    with shared("cluster", lambda: RedisCluster().start(), RedisCluster.stop) as cluster:
        yield cluster.url
