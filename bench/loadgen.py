"""Driving a server with wrk and reading back exact numbers.

wrk's Lua `done()` hook prints one `BENCH_RESULT {json}` line with the
request count, duration, latency percentiles (microseconds) and error
counts; nothing is scraped from wrk's human-readable summary. wrk counts
any response with status 400 or above as a status error ("Non-2xx or 3xx
responses"); every kind of error fails the run.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from servers import OUT, PATH, SPAWN, Failure, pinned, prioritise, request_body

WRK_SCRIPT = """\
wrk.method = "POST"
wrk.path = "{path}"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {{"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"p50_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def write_script(stream: bool) -> Path:
    path = OUT / ("wrk-stream.lua" if stream else "wrk-plain.lua")
    path.write_text(WRK_SCRIPT.format(path=PATH, body=request_body(stream).decode()))
    return path


@dataclass(frozen=True)
class Load:
    duration: float
    warmup: float
    connections: int
    threads: int
    core: int | None  # where wrk runs


@dataclass(frozen=True)
class WrkResult:
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    raw: str


def run_wrk(url: str, script: Path, seconds: float, load: Load) -> WrkResult:
    cmd = [
        "wrk",
        f"-t{load.threads}",
        f"-c{load.connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "5s",
        "--latency",
        "-s",
        str(script),
        url + PATH,
    ]
    with subprocess.Popen(
        pinned(cmd, load.core),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=OUT,
        **SPAWN,
    ) as proc:
        prioritise(proc.pid)
        try:
            raw, _ = proc.communicate()
        except BaseException:
            proc.kill()
            raise
    if proc.returncode != 0:
        raise Failure(f"wrk exited with {proc.returncode}:\n{raw}")
    line = next((x for x in raw.splitlines() if x.startswith("BENCH_RESULT ")), None)
    if line is None:
        raise Failure(f"wrk printed no BENCH_RESULT line:\n{raw}")
    r = json.loads(line.removeprefix("BENCH_RESULT "))
    socket_errors = {k: r[k] for k in ("connect", "read", "write", "timeout") if r[k]}
    if r["status"] or socket_errors or not r["requests"]:
        said = [x.strip() for x in raw.splitlines() if "Non-2xx" in x or "Socket errors" in x]
        raise Failure(
            f"wrk saw errors at {url}: {r['requests']} requests, {r['status']} non-2xx, "
            f"socket errors: {socket_errors or 'none'}\n" + "\n".join(said)
        )
    return WrkResult(
        requests=r["requests"],
        rps=r["requests"] / (r["duration_us"] / 1e6),
        p50_ms=r["p50_us"] / 1000,
        p99_ms=r["p99_us"] / 1000,
        raw=raw,
    )
