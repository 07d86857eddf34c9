"""Real PostgreSQL servers for tests: a cluster of the test run's own.

`initdb` makes a cluster in a temp dir and `postgres` serves it on a free
loopback port (fsync off: a test cluster need not survive a power cut),
stopped when its fixture ends. The binaries are found on PATH or under
/usr/lib/postgresql/<version>/bin (Debian's `postgresql` package, which
`make test` installs when missing). A missing binary fails the test.

PostgreSQL refuses to run as root, and the suite runs as root in CI: then
the server runs as the unprivileged `postgres` user that Debian's package
creates (the child process drops to it before exec), and its temp dir
belongs to that user. Run as anyone else, it runs as that user.

Fixtures (imported into tests/conftest.py with the Redis ones):

    pg_cluster    session   PgServer shared by all tests (each test takes a database)
    pg_url        function  postgresql://... of a fresh, empty database on pg_cluster
    pg_server     function  a PgServer of the test's own: .stop(), .start() (same port)

Tests never share a database: each `pg_url` is `CREATE DATABASE`d for it.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator

import pytest

from tests.redis_servers import _die_with_parent, _terminate, _wait_until, free_port

__all__ = ["PgServer", "pg_cluster", "pg_server", "pg_url"]


def pg_binary(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                      key=lambda p: int(p.split("/")[4]))
    if versions:
        return versions[-1]
    raise RuntimeError(f"{name} not found: install PostgreSQL (Debian: apt-get install postgresql)")


def _run_as() -> pwd.struct_passwd | None:
    """The user the server runs as: `postgres` when we are root, else ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError("running as root needs a `postgres` user for the test cluster") from None


class PgServer:
    """One PostgreSQL cluster; stop it and start it again on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.user = _run_as()
        self.dir = tempfile.mkdtemp(prefix=f"lunos-pg-{self.port}-")
        self.data = os.path.join(self.dir, "data")
        if self.user is not None:
            os.chown(self.dir, self.user.pw_uid, self.user.pw_gid)
        self._proc: subprocess.Popen[bytes] | None = None
        self._exec([pg_binary("initdb"), "-D", self.data, "-U", "postgres", "--auth=trust",
                    "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"])

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url_of(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _popen(self, argv: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        who: dict[str, object] = {}
        if self.user is not None:
            who = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        return subprocess.Popen(  # type: ignore[call-overload,no-any-return]
            argv, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent, cwd=self.dir,
            **who, **kwargs,
        )

    def _exec(self, argv: list[str]) -> None:
        proc = self._popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out, _ = proc.communicate(timeout=120)
        if proc.returncode:
            raise RuntimeError(f"{argv[0]} failed: {out.decode(errors='replace')}")

    def start(self) -> PgServer:
        if self._proc is not None:
            return self
        log = open(os.path.join(self.dir, "postgres.log"), "ab")
        argv = [
            pg_binary("postgres"), "-D", self.data, "-p", str(self.port), "-h", "127.0.0.1",
            "-k", self.dir, "-c", "fsync=off", "-c", "synchronous_commit=off",
            "-c", "full_page_writes=off", "-c", "max_connections=200",
            "-c", "shared_buffers=32MB",
        ]
        self._proc = self._popen(argv, stdout=log, stderr=log)
        log.close()
        try:
            _wait_until(self._answers, f"postgres on port {self.port}", timeout=60)
        except RuntimeError:
            self.stop()
            raise RuntimeError(f"postgres did not start; see {self.dir}/postgres.log") from None
        return self

    def _answers(self) -> bool:
        assert self._proc is not None
        if self._proc.poll() is not None:
            raise RuntimeError(f"postgres exited; see {self.dir}/postgres.log")
        probe = subprocess.run(
            [pg_binary("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"],
            check=False,
        )
        return probe.returncode == 0

    def stop(self) -> None:
        """Stop at once (fast shutdown: open connections are cut)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(2)  # SIGINT: fast shutdown
        _terminate(proc)

    def create_database(self) -> str:
        """A fresh database's URL."""
        name = "t_" + uuid.uuid4().hex[:12]
        psql = pg_binary("psql")
        self._exec([psql, "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-q",
                    "-c", f"CREATE DATABASE {name}"])
        return self.url_of(name)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgServer]:
    server = PgServer().start()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def pg_url(pg_cluster: PgServer) -> str:
    return pg_cluster.create_database()


@pytest.fixture
def pg_server() -> Iterator[PgServer]:
    server = PgServer().start()
    try:
        yield server
    finally:
        server.remove()
