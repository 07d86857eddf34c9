"""Load-test Lunos against the bare aiohttp floor and the fake provider itself.

    .venv/bin/python bench/run.py                      # every case, 10 s per row
    .venv/bin/python bench/run.py --rounds 3           # median of 3 interleaved rounds
    .venv/bin/python bench/run.py --case plain --duration 5
    .venv/bin/python bench/run.py --target direct --target floor
    .venv/bin/python bench/run.py --list-cases

For each case (cases.py) and target (direct = the fake provider itself,
floor = floor.py, lunos = the proxy with the case's config), wrk drives
POST /v1/chat/completions over a fixed number of keep-alive connections:
a short warmup, then the measured run, while the target's resident memory
and CPU time are watched. With several rounds the targets take turns, so
drift on a shared machine hits them alike, and the table shows medians.
The table is printed and written to bench/out/latest.md, beside the raw wrk
output, server logs and the generated Lunos configs.

Placement, with taskset and at least two cores: the server under test runs
alone on the second core; wrk, this driver and the upstream fake provider
share the first (the upstream gets a third core when there is one). The
"direct" target is a second fake provider placed like any server under
test, so all three targets are measured on the same core.

After each round of Lunos, clients hang up mid-request (hangups.py) and
Lunos is measured again at once, without warmup: the "lunos after
hang-ups" row (`--hang-ups 0` leaves it out). Every Lunos row must keep
p99 within 3 x p50. On a case whose store is the bench's Redis, the notes
give what Redis did per request (commands, script calls, bytes each way,
from INFO: counts, meaningful on a busy machine too).

Exit status: 0 when every measurement ran cleanly; 1 when a server failed to
start or answer, or wrk reported socket errors or non-2xx responses; 2 for a
usage error; 3 with --strict when Lunos missed a target (req/s below the
share of the floor's its case asks, or peak RSS of 100 MB or more).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from cases import CASES, Case
from hangups import hang_up, per_request, redis_counts
from loadgen import HOSTILE_KINDS, Load, run_wrk, write_hostile_scripts, write_script
from servers import (
    BENCH,
    HOST,
    OUT,
    ROOT,
    SPAWN,
    Cores,
    Failure,
    Server,
    Watch,
    answer_problem,
    choose_cores,
    free_port,
    pinned,
    prioritise,
    probe,
    python,
    start,
    wait_until_idle,
)

TARGETS = ("direct", "floor", "lunos")
AFTER_HANG_UPS = "lunos after hang-ups"
MAX_TAIL = 3.0  # p99 / p50 of every Lunos row
# After a round, time for the usage written behind (the meter's ledger,
# flushed every second) to reach Redis, so that it counts in that round.
LEDGER_SECONDS = 1.5
# A round in which the server spent this share of the time waiting for its
# core is left out of the medians when a calmer round exists.
NOISY_PERCENT = 5.0
# A server this busy is limited by its own CPU, not by what it waits on.
BUSY_PERCENT = 90.0


def lunos_command(config: Path, port: int, admin_port: int, workers: int = 1) -> list[str]:
    return [python(), "-m", "lunos_proxy", "serve", "--config", str(config),
            "--host", HOST, "--port", str(port), "--admin-port", str(admin_port),
            *(["--workers", str(workers)] if workers > 1 else [])]  # fmt: skip


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def slug(name: str) -> str:
    return name.replace(" ", "-")


def start_lunos(
    case: Case,
    upstream: Server,
    extra: dict[str, Any],
    core: int | None,
    timeout: float,
    src: Path,
    workers: int = 1,
) -> tuple[Server, str | None]:
    """Lunos started with the case's config; and its store's URL when that is Redis."""
    port, admin_port = free_port(), free_port()
    cfg = deep_merge(case.lunos_config(upstream.url, OUT), extra)
    cfg = deep_merge(cfg, {"server": {"host": HOST, "port": port, "admin_port": admin_port}})
    config = OUT / f"lunos-{slug(case.name)}.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    # Every start begins with an empty embedded store: what an earlier case
    # kept there (the meter's usage events) would be loaded and measured too.
    (OUT / "lunos-store.json").unlink(missing_ok=True)
    # Likewise the usage records: a database grown by earlier runs makes
    # each insert a little dearer, run after run.
    for suffix in ("", "-wal", "-shm"):
        (OUT / f"lunos-records.db{suffix}").unlink(missing_ok=True)
    # Several workers get the machine's cores, not the one core of the server under test.
    command = lunos_command(config, port, admin_port, workers)
    cmd = pinned(command, core) if workers == 1 else command
    # `python -m` imports lunos_proxy and plugins from the working directory first.
    server = start(f"lunos-{slug(case.name)}", cmd, port, case.stream, timeout, cwd=src)
    url = str(cfg["store"]["url"])
    return server, url if url.startswith("redis://") else None


def start_fake(name: str, core: int | None) -> Server:
    port = free_port()
    cmd = [python(), str(BENCH / "fake_provider.py"), "--port", str(port)]
    return start(name, pinned(cmd, core), port, False, 15)


def start_floor(upstream: Server, core: int | None) -> Server:
    port = free_port()
    cmd = [python(), str(BENCH / "floor.py"), "--port", str(port), "--upstream", upstream.url]
    return start("floor", pinned(cmd, core), port, False, 15)


@dataclass(frozen=True)
class Sample:
    rps: float
    p50_ms: float
    p99_ms: float
    rss_mb: float  # the server process's peak
    cpu_percent: float
    wait_percent: float
    redis: dict[str, float] | None = None  # per request, from INFO (hangups.redis_counts)
    child_mb: float = 0.0  # its child processes' peak (the tokenizer process)
    # (p50, p99) of each kind of request of a hostile load (loadgen.HOSTILE_KINDS);
    # p50_ms and p99_ms are then the worst kind's (its p99 the most times its p50).
    kinds: tuple[tuple[float, float], ...] = ()

    @property
    def cpu_us(self) -> float:
        """Server CPU time per request: what a contended machine disturbs least."""
        return 10_000 * self.cpu_percent / self.rps if self.rps else 0.0


@contextlib.contextmanager
def py_spy(pid: int, out: Path | None, seconds: float, core: int | None) -> Iterator[None]:
    """Sample the server with py-spy while in the block (when `out` is given)."""
    if out is None:
        yield
        return
    exe = shutil.which("py-spy") or str(ROOT / ".venv" / "bin" / "py-spy")
    fmt = {".svg": "flamegraph", ".json": "speedscope"}.get(out.suffix, "raw")
    cmd = [exe, "record", "-r", "400", "-p", str(pid), "-d", str(max(1, int(seconds))),
           "-f", fmt, "-o", str(out)]  # fmt: skip
    try:
        spy = subprocess.Popen(
            pinned(cmd, core), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **SPAWN
        )
        prioritise(spy.pid)
    except OSError as e:
        raise Failure(f"py-spy could not start ({e}): .venv/bin/pip install py-spy") from None
    try:
        yield
    finally:
        _, err = spy.communicate(timeout=seconds + 60)
        if spy.returncode != 0:
            print(f"py-spy failed: {err.decode(errors='replace')[-500:]}", file=sys.stderr)
        else:
            print(f"  profile written to {out}", file=sys.stderr)


def measure(
    server: Server,
    case: Case,
    target: str,
    script: Path | list[Path],
    load: Load,
    profile: Path | None = None,
    redis_url: str | None = None,
) -> Sample:
    redis = None
    try:
        if load.warmup > 0:
            run_wrk(server.url, script, load.warmup, load)
            wait_until_idle(server.pid)
        before = redis_counts(redis_url) if redis_url else {}
        with (
            Watch(server.pid) as watch,
            py_spy(server.pid, profile, load.duration, load.core),
        ):
            result = run_wrk(server.url, script, load.duration, load)
        if redis_url:
            time.sleep(LEDGER_SECONDS)
            redis = per_request(before, redis_counts(redis_url), result.requests)
    except Failure as e:
        problem = answer_problem(*probe(server.url, case.stream), case.stream)
        hint = f"\none request now: {problem}" if problem else ""
        raise Failure(
            f"{target} ({case.name}): {e}{hint}\n{server.name} output:\n{server.tail()}"
        ) from None
    (OUT / f"{slug(case.name)}-{slug(target)}.wrk.txt").write_text(result.raw)
    return Sample(
        result.rps,
        result.p50_ms,
        result.p99_ms,
        watch.peak_mb,
        watch.cpu_percent,
        watch.wait_percent,
        redis,
        watch.child_mb,
        result.kinds,
    )


@dataclass
class Report:
    samples: dict[tuple[str, str], list[Sample]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def add(self, case: str, target: str, sample: Sample) -> None:
        self.samples.setdefault((case, target), []).append(sample)

    def fail(self, message: str) -> None:
        self.failures.append(message)
        print(message, file=sys.stderr, flush=True)

    def kept(self, case: str, target: str) -> list[Sample]:
        """The rounds that ran on a quiet machine, or all of them if none did."""
        got = self.samples.get((case, target), [])
        return [s for s in got if s.wait_percent < NOISY_PERCENT] or got

    def noisy(self, case: str, target: str) -> bool:
        kept = self.kept(case, target)
        return bool(kept) and statistics.median(s.wait_percent for s in kept) >= NOISY_PERCENT

    def cpu_us(self, case: str, target: str) -> float | None:
        kept = self.kept(case, target)
        return statistics.median(s.cpu_us for s in kept) if kept else None

    def rps(self, case: str, target: str) -> float | None:
        kept = self.kept(case, target)
        return statistics.median(s.rps for s in kept) if kept else None

    def table(self) -> str:
        lines = [
            "| case | target | req/s | p50 ms | p99 ms | peak RSS MB | child RSS MB | CPU % "
            "| CPU us/req | wait % | rounds | vs floor |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for (case, target), got in self.samples.items():
            kept = self.kept(case, target)
            rps = statistics.median(s.rps for s in kept)
            wait = statistics.median(s.wait_percent for s in kept)
            floor = self.rps(case, "floor")
            lines.append(
                f"| {case} | {target} | {rps:,.0f}{' (noisy)' if wait >= NOISY_PERCENT else ''} "
                f"| {statistics.median(s.p50_ms for s in kept):.2f} "
                f"| {statistics.median(s.p99_ms for s in kept):.2f} "
                f"| {max(s.rss_mb for s in got):.1f} "
                f"| {max(s.child_mb for s in got):.0f} "
                f"| {statistics.median(s.cpu_percent for s in kept):.0f} "
                f"| {statistics.median(s.cpu_us for s in kept):.0f} "
                f"| {wait:.0f} | {len(kept)}/{len(got)} "
                f"| {f'{rps / floor:.2f}' if floor else '-'} |"
            )
        return "\n".join(lines)

    def notes(self) -> list[str]:
        out = []
        for case, target in self.samples:
            lunos, floor = self.cpu_us(case, "lunos"), self.cpu_us(case, "floor")
            if target != "lunos" or not lunos or not floor:
                continue
            text = (
                f"{case}: CPU per request {lunos:.0f} us for Lunos, {floor:.0f} us for the "
                f"floor (+{lunos - floor:.0f} us)"
            )
            busy = statistics.median(s.cpu_percent for s in self.kept(case, "lunos"))
            if busy >= BUSY_PERCENT:
                text += f"; CPU-bound, Lunos can reach about {floor / lunos:.2f} of the floor"
            else:
                text += (
                    f"; Lunos kept its core only {busy:.0f} % busy, so it spends the rest "
                    "waiting (on its store or upstream), not computing"
                )
            out.append(text)
        for (case, target), got in self.samples.items():
            if not target.startswith("lunos") or not got[0].kinds:
                continue
            each = ", ".join(
                f"{name} {statistics.median(s.kinds[i][0] for s in got):.2f} / "
                f"{statistics.median(s.kinds[i][1] for s in got):.2f} ms"
                for i, name in enumerate(HOSTILE_KINDS)
            )
            out.append(f"{case} / {target}: p50 / p99 of each kind, each sent by a wrk of its "
                       f"own at once: {each}; the row shows the kind with the longest tail")
        return out

    def verdicts(self) -> list[tuple[str, bool]]:
        out = []
        for (case, target), got in self.samples.items():
            if target != "lunos":
                continue
            lunos, floor = self.rps(case, "lunos"), self.rps(case, "floor")
            wanted = CASES[case].min_ratio
            if lunos and floor and wanted is not None:
                ratio = lunos / floor
                text = f"{case}: Lunos/floor req/s {ratio:.2f} (target >= {wanted:.2f})"
                if any(self.noisy(case, t) for t in ("lunos", "floor")):
                    text += ", measured on a busy machine"
                out.append((text, ratio >= wanted))
            rss = max(s.rss_mb for s in got)
            most = CASES[case].max_rss_mb
            text = f"{case}: Lunos peak RSS {rss:.1f} MB (target < {most:.0f} MB)"
            out.append((text, rss < most))
        for (case, target), got in self.samples.items():
            if not target.startswith("lunos"):
                continue
            worst = max(got, key=lambda s: s.p99_ms / s.p50_ms if s.p50_ms else 0.0)
            tail = worst.p99_ms / worst.p50_ms if worst.p50_ms else 0.0
            text = (f"{case} / {target}: p99 {worst.p99_ms:.2f} ms = {tail:.1f} x p50 in its "
                    f"worst round (target <= {MAX_TAIL:g} x)")
            out.append((text, tail <= MAX_TAIL))
        return out

    def redis_notes(self) -> list[str]:
        """What Redis did per Lunos request (median over the rounds), by case."""
        out = []
        for (case, target), got in self.samples.items():
            rounds = [s.redis for s in got if s.redis]
            if target != "lunos" or not rounds:
                continue
            names = sorted({n for r in rounds for n in r})
            median = {n: statistics.median(r.get(n, 0.0) for r in rounds) for n in names}
            commands = ", ".join(
                f"{n} {v:.2f}" for n, v in median.items()
                if n not in ("scripts", "scripts_us", "bytes_in", "bytes_out", "cpu_us")
            )
            per_call = median.get("scripts_us", 0.0) / (median.get("scripts") or 1.0)
            out.append(
                f"{case}: per request, Redis got {median.get('scripts', 0.0):.2f} script calls "
                f"and {median.get('bytes_in', 0.0):.0f} bytes, sent {median.get('bytes_out', 0.0):.0f}"
                f" bytes, used {median.get('cpu_us', 0.0):.1f} us of CPU, of which "
                f"{median.get('scripts_us', 0.0):.1f} us running scripts ({per_call:.1f} us a call); "
                f"commands (scripts' own included): {commands}"
            )
        return out


def profile_path(fmt: str | None, case: Case, target: str, round_no: int) -> Path | None:
    if fmt is None:
        return None
    suffix = {"flamegraph": "svg", "speedscope": "json", "raw": "folded"}[fmt]
    return OUT / f"profile-{slug(case.name)}-{target}-{round_no}.{suffix}"


def bench(args: argparse.Namespace, cores: Cores, report: Report) -> None:
    cases = [CASES[name] for name in (args.case or CASES)]
    targets = [t for t in TARGETS if t in (args.target or TARGETS)]
    extra: dict[str, Any] = {}
    if args.config_extra is not None:
        extra = yaml.safe_load(args.config_extra.read_text()) or {}
    load = Load(args.duration, args.warmup, args.connections, 1, cores.load)
    servers: list[Server] = []
    try:
        upstream = start_fake("upstream", cores.upstream)
        servers.append(upstream)
        fixed: dict[str, Server] = {}
        if "direct" in targets:
            fixed["direct"] = start_fake("direct", cores.server)
        if "floor" in targets:
            fixed["floor"] = start_floor(upstream, cores.server)
        servers += fixed.values()
        for case in cases:
            script = write_script(case.stream)
            scripts: dict[str, Path | list[Path]] = dict.fromkeys(TARGETS, script)
            if case.hostile:
                scripts["lunos"] = write_hostile_scripts()
            under_test = dict(fixed)
            lunos, redis_url = None, None
            if "lunos" in targets:
                try:
                    lunos, redis_url = start_lunos(
                        case, upstream, extra, cores.server, args.lunos_timeout, args.lunos_src,
                        args.lunos_workers,
                    )
                    under_test["lunos"] = lunos
                except Failure as e:
                    report.fail(str(e))
            # Right after the hang-ups: no warmup, that is the point.
            after = Load(load.duration, 0.0, load.connections, load.threads, load.core)
            try:
                for n in range(1, args.rounds + 1):
                    for target, server in list(under_test.items()):
                        print(f"  {case.name} / {target}: round {n}/{args.rounds}",
                              file=sys.stderr, flush=True)  # fmt: skip
                        profile = profile_path(args.profile, case, target, n)
                        try:
                            store = redis_url if target == "lunos" else None
                            sample = measure(
                                server, case, target, scripts[target], load, profile, store
                            )
                            report.add(case.name, target, sample)
                            if target == "lunos" and args.hang_ups:
                                hang_up(server.url, args.hang_ups, case.stream)
                                sample = measure(
                                    server, case, AFTER_HANG_UPS, scripts[target], after
                                )
                                report.add(case.name, AFTER_HANG_UPS, sample)
                        except Failure as e:
                            report.fail(str(e))
                            del under_test[target]
            finally:
                if lunos is not None:
                    lunos.stop()
    finally:
        for server in reversed(servers):
            server.stop()


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                     model)  # fmt: skip
    return (
        f"{os.cpu_count()} x {model}, Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def lunos_revision(src: Path) -> str:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=src, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "lunos_proxy", "plugins")
    return f"{src} at {head}{' with uncommitted changes' if dirty else ''}"


def markdown(report: Report, args: argparse.Namespace, cores: Cores) -> str:
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout
    rounds = f", median of {args.rounds} interleaved rounds" if args.rounds > 1 else ""
    lines = [
        f"# Lunos bench, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"- command: `{shlex.join(['bench/run.py', *sys.argv[1:]])}`",
        f"- machine: {machine()}",
        f"- lunos: {lunos_revision(args.lunos_src)}",
        f"- load: {wrk.split(' Copyright')[0].strip() or 'wrk'}, 1 thread x "
        f"{args.connections} connections, closed loop, {args.warmup:g} s warmup + "
        f"{args.duration:g} s per row{rounds}",
        f"- placement: {cores.describe()}; niceness {os.getpriority(os.PRIO_PROCESS, 0)}",
        *(
            [f"- profiled with py-spy ({args.profile}): the numbers are lowered"]
            if args.profile
            else []
        ),
        "",
        report.table(),
        "",
    ]
    lines += [
        "req/s, p50 and p99 are medians over the rounds kept; peak RSS is the server",
        "process's highest resident memory, child RSS its child processes' (the tokenizer",
        "process, once an estimate started it); CPU % is the server's share of its core and CPU us/req",
        "its CPU time per request; wait % is how long the server sat ready to run",
        "while other processes had its core. Rounds with wait >=",
        f"{NOISY_PERCENT:.0f} % are dropped unless no round was calmer (then: noisy).",
        "",
    ]
    verdicts = report.verdicts()
    if verdicts:
        lines += [f"- {'PASS' if ok else 'MISS'} {text}" for text, ok in verdicts]
        lines += [f"- {text}" for text in report.notes()] + [""]
    lines += [f"- {text}" for text in report.redis_notes()]
    if report.failures:
        lines += ["## Failures", ""]
        lines += [f"```\n{f}\n```" for f in report.failures] + [""]
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark Lunos against a bare aiohttp pass-through.",
        epilog="cases: " + ", ".join(CASES),
    )
    p.add_argument(
        "--case",
        action="append",
        choices=list(CASES),
        metavar="NAME",
        help="run only this case (repeatable; default: all)",
    )
    p.add_argument(
        "--target",
        action="append",
        choices=TARGETS,
        help="measure only this target (repeatable; default: all)",
    )
    p.add_argument("--duration", type=float, default=10.0, help="seconds per row (default 10)")
    p.add_argument("--warmup", type=float, default=2.0, help="warmup seconds (default 2)")
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="interleaved rounds per case; the table shows medians (default 1)",
    )
    p.add_argument(
        "--nice",
        type=int,
        default=-20,
        help="niceness of the bench and every process it starts, so that other jobs on "
        "the machine disturb it less (default -20; needs root, else ignored)",
    )
    p.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    p.add_argument(
        "--config-extra",
        type=Path,
        metavar="YAML",
        help="YAML merged into every case's Lunos config",
    )
    p.add_argument(
        "--lunos-timeout",
        type=float,
        default=30.0,
        help="seconds Lunos gets to start answering (default 30)",
    )
    p.add_argument(
        "--profile",
        choices=("flamegraph", "speedscope", "raw"),
        help="record each target with py-spy during its measured runs into "
        "bench/out/profile-CASE-TARGET-ROUND.*; slows it, so not for published numbers",
    )
    p.add_argument(
        "--lunos-src",
        type=Path,
        default=ROOT,
        metavar="DIR",
        help="run Lunos from this checkout (e.g. a git worktree of a branch to compare)",
    )
    p.add_argument(
        "--hang-ups",
        type=int,
        default=16,
        metavar="N",
        help="after each round of Lunos, N clients hang up mid-request and Lunos is "
        "measured again at once (default 16; 0: no such round)",
    )
    p.add_argument(
        "--lunos-workers",
        type=int,
        default=1,
        metavar="N",
        help="run Lunos as `serve --workers N`, unpinned (a case on Redis; see "
        "docs/capacity.md for the method)",
    )
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    p.add_argument(
        "--strict", action="store_true", help="exit 3 when Lunos misses the req/s or memory target"
    )
    p.add_argument("--list-cases", action="store_true", help="list the cases and exit")
    args = p.parse_args()  # fmt: skip
    if args.rounds < 1 or args.duration < 1 or args.connections < 1:
        p.error("--rounds, --duration and --connections must be at least 1")
    return args


def main() -> int:
    args = parse_args()
    if args.list_cases:
        for c in CASES.values():
            print(f"{c.name:24} {'stream' if c.stream else 'json  '}  {c.about}")
        return 0
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    OUT.mkdir(exist_ok=True)
    cores = choose_cores(not args.no_pin)
    if cores.load is not None:
        os.sched_setaffinity(0, {cores.load})  # keep the watcher off the measured core
    print(f"placement: {cores.describe()}", file=sys.stderr)
    try:
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)  # inherited by every child
    except OSError as e:
        print(f"cannot set niceness {args.nice} ({e.strerror}): running at 0", file=sys.stderr)
    report = Report()
    try:
        bench(args, cores, report)
    except Failure as e:
        report.fail(str(e))
    text = markdown(report, args, cores)
    (OUT / "latest.md").write_text(text)
    print(text)
    if report.failures:
        return 1
    if args.strict and not all(ok for _, ok in report.verdicts()):
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
