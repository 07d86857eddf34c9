"""The deployment files run, and agree with the code.

The container image is reproduced without a Docker engine: the test reads
deploy/Dockerfile (its final stage's COPY, USER, WORKDIR, ENV and CMD),
lays those paths out under a temporary root, and runs `lunos-proxy check`,
`serve` and real requests with the Dockerfile's command line and
environment, in a mount namespace whose root filesystem is read-only (only
the working directory and /tmp are writable), as the image's user, with
every capability dropped: what `readOnlyRootFilesystem`, `runAsUser` and
`capabilities: drop: [ALL]` give on Kubernetes. Needs root (CI runs as
root) for `unshare -m`.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import kubernetes_validate
import openai
import pytest
import yaml

from lunos_proxy.config import Config
from lunos_proxy.loading import parse_config
from tests.conftest import basic_config, free_port
from tests.fakes import FakeProvider
from tests.serve_support import serve_process, until_ready

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
VENV = Path(sys.executable).parent.parent  # the image's /opt/lunos


# -- the Dockerfile, as the test reads it ------------------------------------


@dataclass
class Image:
    copies: list[tuple[str, str]] = field(default_factory=list)  # (repo path, image path)
    user: str = ""
    workdir: str = "/"
    env: dict[str, str] = field(default_factory=dict)
    cmd: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    stop_signal: str = "SIGTERM"


def read_dockerfile(path: Path) -> Image:
    """The final stage of `path`: what it copies from the build context, and how it runs."""
    text = re.sub(r"\\\n", " ", path.read_text())
    image = Image()
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word, rest = word.upper(), rest.strip()
        if word == "FROM":
            image = Image()  # a new stage: only the last one ships
        elif word == "COPY" and not rest.startswith("--from"):
            *sources, dest = shlex.split(rest)
            image.copies += [(s, dest) for s in sources]
        elif word == "USER":
            image.user = rest
        elif word == "WORKDIR":
            image.workdir = rest
        elif word == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                image.env[key] = value
        elif word == "CMD":
            image.cmd = json.loads(rest)
        elif word == "VOLUME":
            image.volumes += json.loads(rest) if rest.startswith("[") else rest.split()
        elif word == "STOPSIGNAL":
            image.stop_signal = rest
    return image


class Root:
    """The image's filesystem under a host directory (a chroot by path prefix):
    /opt/lunos is this test's virtualenv, everything else the image copies
    is copied under `base`."""

    def __init__(self, image: Image, base: Path) -> None:
        self.image, self.base = image, base
        self.prefixes = {"/opt/lunos": str(VENV)}
        for _, dest in image.copies:
            self.prefixes.setdefault(os.path.dirname(dest), str(base) + os.path.dirname(dest))
        for place in (image.workdir, *image.volumes, "/tmp"):
            self.prefixes.setdefault(place, str(base) + place)

    def host(self, path: str) -> str:
        """Where an image path is on this machine."""
        for prefix in sorted(self.prefixes, key=len, reverse=True):
            if path == prefix or path.startswith(prefix + "/"):
                return self.prefixes[prefix] + path[len(prefix):]
        return path

    def translate(self, text: str) -> str:
        """Every image path in `text` (a config, an env value) as its host path."""
        pattern = "|".join(re.escape(p) for p in sorted(self.prefixes, key=len, reverse=True))
        return re.sub(f"({pattern})(?=[/\\s\"':]|$)", lambda m: self.prefixes[m[1]], text)

    def build(self) -> None:
        for src, dest in self.image.copies:
            target = Path(self.host(dest))
            target.parent.mkdir(parents=True, exist_ok=True)
            source = REPO / src
            if source.is_dir():
                shutil.copytree(source, target)
            else:
                target.write_text(self.translate(source.read_text()))
        uid = int(self.image.user)
        for place in (self.image.workdir, *self.image.volumes, "/tmp"):
            Path(self.host(place)).mkdir(parents=True, exist_ok=True)
            os.chown(self.host(place), uid, uid)
        for path in (self.base, *self.base.rglob("*")):  # readable, as in an image layer
            path.chmod(path.stat().st_mode | stat.S_IROTH | (stat.S_IXOTH if path.is_dir() else 0))

    def env(self, **extra: str) -> dict[str, str]:
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin"}
        for key, value in self.image.env.items():
            env[key] = self.translate(re.sub(r"\$(\w+)|\$\{(\w+)\}",
                                             lambda m: env.get(m[1] or m[2], ""), value))
        env.update(extra)
        return env

    def argv(self, argv: list[str], env: dict[str, str]) -> list[str]:
        """`argv` run as the image runs it: in a mount namespace whose root is
        read-only but for the working directory, its volumes and /tmp, as the
        image's user, in its working directory, with no capabilities."""
        writable = [self.host(p) for p in (self.image.workdir, *self.image.volumes, "/tmp")]
        assert not any(p.startswith("/tmp/") for p in writable), "the root must not be under /tmp"
        script = ["set -e", "mount --rbind / /"]
        # Directories on the way to the interpreter or the checkout that the
        # image's user may not cross (/root is 0700): a world-readable tmpfs
        # over each, with just the child needed bound back.
        for needed in (os.path.realpath(sys.executable), str(REPO), str(VENV)):
            parts = Path(needed).parts
            for i in range(1, len(parts) - 1):
                parent = Path(*parts[: i + 1])
                if not parent.stat().st_mode & stat.S_IXOTH:
                    child = parts[i + 1]
                    hold = self.base / f".hold-{child}"
                    hold.mkdir(exist_ok=True)
                    script += [
                        f"mount --bind {shlex.quote(str(parent / child))} {hold}",
                        f"mount -t tmpfs -o mode=0755 tmpfs {shlex.quote(str(parent))}",
                        f"mkdir -p {shlex.quote(str(parent / child))}",
                        f"mount --bind {hold} {shlex.quote(str(parent / child))}",
                    ]
        script.append("mount -o remount,bind,ro /")
        for place in writable:
            q = shlex.quote(place)
            script += [f"mount --bind {q} {q}", f"mount -o remount,bind,rw {q}"]
        # The emptyDir over /tmp would hide a checkout under /tmp (CI may clone
        # there): hold it aside and bind it back inside the new /tmp.
        kept = [p for p in {str(REPO), os.path.realpath(sys.executable)} if p.startswith("/tmp/")]
        for i, place in enumerate(sorted(kept)):
            hold = self.base / f".tmp-hold-{i}"
            hold.mkdir(exist_ok=True)
            script.append(f"mount --bind {shlex.quote(place)} {hold}")
        script.append(f"mount --bind {shlex.quote(self.host('/tmp'))} /tmp")  # an emptyDir
        for i, place in enumerate(sorted(kept)):
            q = shlex.quote(place)
            script += [f"mkdir -p {q}", f"mount --bind {self.base / f'.tmp-hold-{i}'} {q}"]
        script.append(f"cd {shlex.quote(self.host(self.image.workdir))}")
        uid = int(self.image.user)
        drop = (f"setpriv --reuid={uid} --regid={uid} --clear-groups --inh-caps=-all "
                "--bounding-set=-all --no-new-privs")
        exports = " ".join(shlex.quote(f"{k}={v}") for k, v in env.items())
        run = " ".join(shlex.quote(a) for a in argv)
        script.append(f"exec {drop} env -i {exports} {run}")
        return ["unshare", "-m", "--propagation", "private", "sh", "-c", "\n".join(script)]


@pytest.fixture
def image_root() -> Iterator[Root]:
    image = read_dockerfile(DEPLOY / "Dockerfile")
    # Not under pytest's tmp_path (its parent is 0700, which the image's user
    # cannot cross) nor under /tmp (an emptyDir is mounted over it).
    base = Path(tempfile.mkdtemp(prefix="lunos-image-", dir="/var/tmp"))
    base.chmod(0o755)
    root = Root(image, base)
    root.build()
    yield root
    shutil.rmtree(base, ignore_errors=True)


def run_in(root: Root, argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(root.argv(argv, env), capture_output=True, text=True, timeout=60)


def secrets_env() -> dict[str, str]:
    out = subprocess.run([str(VENV / "bin" / "lunos-proxy"), "secrets", "generate"],
                         capture_output=True, text=True, check=True).stdout
    env = dict(line.split("=", 1) for line in out.split())
    env["LUNOS_ADMIN_TOKEN"] = "lat-" + os.urandom(24).hex()
    return env


def test_dockerfile_final_stage_is_read_as_shipped() -> None:
    image = read_dockerfile(DEPLOY / "Dockerfile")
    assert image.user == "10001" and image.workdir == "/var/lib/lunos"
    assert image.env["LUNOS_CONFIG"] == "/etc/lunos/lunos.yaml"
    assert image.cmd[:2] == ["lunos-proxy", "serve"]
    assert ("deploy/image/lunos.yaml", "/etc/lunos/lunos.yaml") in image.copies
    froms = re.findall(r"^FROM (\S+)", (DEPLOY / "Dockerfile").read_text(), re.M)
    for base in froms:  # an exact release, not a moving tag
        assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base), base


def test_image_config_is_refused_without_its_secrets(image_root: Root) -> None:
    """No development default: an image started without secrets stops at once."""
    env = image_root.env()
    done = run_in(image_root, ["lunos-proxy", "check"], env)
    assert done.returncode == 2
    assert "environment variable LUNOS_HASH_SECRET is not set" in done.stderr


async def test_image_layout_checks_serves_and_answers_on_a_read_only_root(
    image_root: Root,
) -> None:
    env = image_root.env(**secrets_env())
    etc = Path(image_root.host("/etc/lunos"))
    work = Path(image_root.host(image_root.image.workdir))

    check = await asyncio.to_thread(run_in, image_root, ["lunos-proxy", "check"], env)
    assert check.returncode == 0, check.stderr
    assert check.stdout.startswith("lunos.yaml: ok (")
    # The emulation holds: the config folder cannot be written.
    probe = await asyncio.to_thread(
        run_in, image_root, [sys.executable, "-c", f"open({str(etc / 'x')!r}, 'w')"], env
    )
    assert "Read-only file system" in probe.stderr

    port, admin_port = free_port(), free_port()
    argv = [*image_root.image.cmd, "--port", str(port), "--admin-port", str(admin_port)]
    proc = await asyncio.create_subprocess_exec(
        *image_root.argv(argv, env), stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        url, admin = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}"
        headers = {"Authorization": f"Bearer {env['LUNOS_ADMIN_TOKEN']}"}
        await until_ready(url, proc)
        async with aiohttp.ClientSession() as http:
            # No open relay: a request without a key is refused.
            async with http.post(url + "/v1/chat/completions", json={"model": "demo-chat"}) as r:
                assert r.status == 401
            async with http.post(admin + "/admin/accounts", json={"name": "Ada"},
                                 headers=headers) as r:
                assert r.status == 201, await r.text()
                account = (await r.json())["id"]
            async with http.post(f"{admin}/admin/accounts/{account}/keys", json={"name": "ci"},
                                 headers=headers) as r:
                assert r.status == 201, await r.text()
                key = (await r.json())["key"]
        client = openai.AsyncOpenAI(api_key=key, base_url=url + "/v1", max_retries=0)
        answer = await client.chat.completions.create(
            model="demo-chat", messages=[{"role": "user", "content": "hello"}]
        )
        await client.close()
        assert answer.choices[0].message.content
        assert answer.usage is not None and answer.usage.total_tokens > 0
    finally:
        if proc.returncode is None:
            proc.send_signal(getattr(signal, image_root.image.stop_signal))
        try:
            code = await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            raise
    assert code == 0, (await proc.stderr.read()).decode()  # type: ignore[union-attr]
    # The embedded store was written where the image keeps state, and nothing
    # was added to the config folder.
    assert await asyncio.to_thread(os.path.isfile, work / "data" / "lunos.json")
    assert sorted(await asyncio.to_thread(os.listdir, etc)) == ["lunos.yaml", "pricing.yaml"]


# -- compose -------------------------------------------------------------------


ENCRYPTION_KEYS = "k1:" + "A" * 43  # one key id and 32 bytes, base64url


def _lunos_config(text: str, name: str, monkeypatch: pytest.MonkeyPatch) -> Config:
    for var in ("LUNOS_HASH_SECRET", "LUNOS_ENCRYPTION_KEYS", "LUNOS_ADMIN_TOKEN",
                "LUNOS_REDIS_URL", "OPENAI_API_KEY", "LUNOS_DB_PASSWORD"):
        monkeypatch.setenv(var, "x" * 40)
    monkeypatch.setenv("LUNOS_RECORDS_URL", "postgresql://lunos:pw@postgres.example:5432/lunos")
    monkeypatch.setenv("LUNOS_REDIS_URL", "redis://redis:6379/0")
    monkeypatch.setenv("LUNOS_ENCRYPTION_KEYS", ENCRYPTION_KEYS)
    # The image ships this file (the layout test runs it); here the wiring is read.
    text = text.replace("/etc/lunos/pricing.yaml", str(REPO / "config" / "pricing.yaml"))
    return parse_config(text, name)


def _binds(service: dict[str, Any]) -> dict[str, str]:
    """A compose service's bind mounts from deploy/: source -> path in the container."""
    return {v.split(":")[0]: v.split(":")[1] for v in service["volumes"] if v.startswith("./")}


def _seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+)(s|m)", value)
    assert m, value
    return int(m[1]) * (60 if m[2] == "m" else 1)


def test_compose_runs_two_lunos_redis_postgres_prometheus_and_grafana(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"redis", "postgres", "lunos-migrate", "lunos-a", "lunos-b",
                             "prometheus", "grafana"}
    for name, service in services.items():
        assert "healthcheck" in service, name
        image = service.get("image", "")
        # PostgreSQL numbers its releases major.minor.
        exact = r":v?\d+\.\d+\.\d+" if name != "postgres" else r":\d+\.\d+-"
        assert re.search(exact, image), f"{name}: {image} is not an exact release"
    redis = services["redis"]
    assert "--appendonly" in redis["command"] and redis["volumes"] == ["redis-data:/data"]
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert _binds(services["lunos-a"]) == {"./lunos.compose.yaml": "/etc/lunos/lunos.yaml"}
    config = _lunos_config((DEPLOY / "lunos.compose.yaml").read_text(), "lunos.compose.yaml",
                           monkeypatch)
    assert config.store.url == "redis://redis:6379/0"
    assert config.records.url == f"postgresql://lunos:{'x' * 40}@postgres:5432/lunos"
    postgres = services["postgres"]
    assert postgres["environment"]["POSTGRES_PASSWORD"].startswith("${LUNOS_DB_PASSWORD:?")
    assert postgres["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    migrate = services["lunos-migrate"]
    assert migrate["command"] == ["lunos-proxy", "db", "migrate"] and migrate["restart"] == "no"
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    needed = config.server.drain_seconds + config.server.shutdown_grace_seconds
    assert config.server.drain_seconds > 0
    for name in ("lunos-a", "lunos-b"):
        lunos = services[name]
        assert _seconds(lunos["stop_grace_period"]) > needed, name
        assert lunos["depends_on"] == {"redis": {"condition": "service_healthy"},
                                       "lunos-migrate": {"condition": "service_completed_successfully"}}
        assert lunos["read_only"] is True and lunos["cap_drop"] == ["ALL"]
        for var in ("LUNOS_HASH_SECRET", "LUNOS_ENCRYPTION_KEYS", "LUNOS_ADMIN_TOKEN"):
            assert lunos["environment"][var].startswith(f"${{{var}:?"), var  # required
    prometheus = _binds(services["prometheus"])
    assert prometheus["./prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    prom_config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    rules = os.path.normpath(os.path.join("/etc/prometheus", prom_config["rule_files"][0]))
    assert rules == "/etc/alerts/lunos.rules.yml" and prometheus["./alerts"] == "/etc/alerts"
    targets = prom_config["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == [f"{n}:{config.server.admin_port}" for n in ("lunos-a", "lunos-b")]
    grafana = _binds(services["grafana"])
    provisioning = DEPLOY / "grafana" / "provisioning"
    assert grafana["./grafana/provisioning"] == "/etc/grafana/provisioning"
    dashboards = yaml.safe_load((provisioning / "dashboards" / "lunos.yaml").read_text())
    folder = dashboards["providers"][0]["options"]["path"]
    assert grafana["./grafana/lunos-dashboard.json"] == f"{folder}/lunos-dashboard.json"
    sources = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())
    assert sources["datasources"][0]["url"] == "http://prometheus:9090"


# -- Kubernetes ----------------------------------------------------------------


def _k8s() -> list[dict[str, Any]]:
    return list(yaml.safe_load_all((DEPLOY / "k8s" / "lunos.yaml").read_text()))


def test_k8s_manifests_match_the_kubernetes_schema() -> None:
    """Offline, against the schemas kubernetes-validate ships (Kubernetes 1.30 and the newest)."""
    for version in ("1.30.0", kubernetes_validate.utils.latest_version()):
        for doc in _k8s():
            kubernetes_validate.validate(doc, version, strict=True)


def test_k8s_schema_check_catches_a_mistake() -> None:
    deployment = next(d for d in _k8s() if d["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnly"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, "1.30.0", strict=True)


def test_k8s_wires_secrets_drains_and_is_locked_down(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = {d["kind"]: d for d in _k8s()}
    assert set(docs) == {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget",
                         "HorizontalPodAutoscaler"}
    text = docs["ConfigMap"]["data"]["lunos.yaml"]
    config = _lunos_config(text, "lunos.yaml", monkeypatch)
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    # Every secret the config reads comes from the Secret, by reference.
    for var in ("LUNOS_HASH_SECRET", "LUNOS_ENCRYPTION_KEYS", "LUNOS_ADMIN_TOKEN",
                "LUNOS_REDIS_URL", "LUNOS_RECORDS_URL", "OPENAI_API_KEY"):
        assert f"${{{var}}}" in text, var
        assert env[var]["valueFrom"]["secretKeyRef"] == {"name": "lunos-secrets", "key": var}
    assert config.records.url.startswith("postgresql://")
    # The records schema is migrated before the server starts, with the server's config.
    [migrate] = pod["initContainers"]
    assert migrate["args"] == ["lunos-proxy", "db", "migrate"]
    assert migrate["image"] == container["image"] and migrate["env"] == container["env"]
    assert migrate["volumeMounts"] == container["volumeMounts"]
    assert migrate["securityContext"] == container["securityContext"]
    assert config.secrets.hash_secret == "x" * 40 and config.admin.token == "x" * 40
    assert config.secrets.encryption_keys == ENCRYPTION_KEYS
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert env["LUNOS_CONFIG"]["value"] == mounts["config"] + "/lunos.yaml"
    assert mounts["work"] == read_dockerfile(DEPLOY / "Dockerfile").workdir
    assert mounts["tmp"] == "/tmp"
    # Stopping: preStop, then the drain, then the grace, all inside the termination grace.
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    s = config.server
    assert s.drain_seconds > 0
    assert pod["terminationGracePeriodSeconds"] > pre_stop + s.drain_seconds + s.shutdown_grace_seconds
    ready = container["readinessProbe"]
    assert ready["httpGet"]["path"] == "/readyz"
    assert ready["periodSeconds"] * ready["failureThreshold"] < s.drain_seconds
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == int(read_dockerfile(DEPLOY / "Dockerfile").user)
    assert not container["image"].endswith(":latest")
    labels = docs["Deployment"]["spec"]["selector"]["matchLabels"]
    assert docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == labels
    hpa = docs["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == docs["Deployment"]["metadata"]["name"]
    assert hpa["minReplicas"] >= 2


def test_every_shipped_deploy_config_authenticates(monkeypatch: pytest.MonkeyPatch) -> None:
    """No open relay: each config the deploy files run has the auth plugin in its pipeline."""
    texts = {
        "image": (DEPLOY / "image" / "lunos.yaml").read_text(),
        "compose": (DEPLOY / "lunos.compose.yaml").read_text(),
        "k8s": next(d for d in _k8s() if d["kind"] == "ConfigMap")["data"]["lunos.yaml"],
    }
    for name, text in texts.items():
        config = _lunos_config(text, f"{name}.yaml", monkeypatch)
        names = [p.name for p in config.pipeline]
        assert "auth" in names and names.index("auth") < names.index("router"), name


# -- the drain -----------------------------------------------------------------


async def test_sigterm_drains_readyz_503_while_requests_are_served(
    provider: FakeProvider, tmp_path: Path
) -> None:
    config = basic_config(provider.base_url,
                          server={"drain_seconds": 1.5, "shutdown_grace_seconds": 5})
    path = tmp_path / "lunos.yaml"
    path.write_text(yaml.safe_dump(config))
    port, admin_port = free_port(), free_port()
    proc = await serve_process(path, port, admin_port)
    url = f"http://127.0.0.1:{port}"
    body = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
    try:
        await until_ready(url, proc)
        async with aiohttp.ClientSession() as http:
            proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            async with http.get(url + "/readyz") as r:
                assert (r.status, await r.json()) == (503, {"status": "draining"})
            async with http.get(url + "/healthz") as r:
                assert r.status == 200
            async with http.post(url + "/v1/chat/completions", json=body) as r:
                assert r.status == 200
            assert proc.returncode is None
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        with pytest.raises(aiohttp.ClientConnectionError):
            async with aiohttp.ClientSession() as http, http.get(url + "/healthz"):
                pass
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
