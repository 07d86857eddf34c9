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

from bomb import gzip_bomb
from servers import OUT, PATH, SPAWN, Failure, pinned, prioritise, request_body

# wrk's done() hook: one line with the counts; STATUS_ERRORS is what counts
# as a wrong answer (wrk's own count of non-2xx, or the script's).
DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"p50_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, STATUS_ERRORS, e.timeout))
end
"""

WRK_SCRIPT = """\
wrk.method = "POST"
wrk.path = "{path}"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"
"""

# The hostile load ("hostile" case): requests without a valid key, of three
# kinds, each sent by a wrk of its own (`HOSTILE_KINDS`), all at once:
# garbage with no key, garbage with a wrong key and a gzip bomb with no key
# (2 MB that would inflate to 2 GiB). Every answer must be 401. Apart, so
# that each kind's tail is its own: a bomb's answer takes a new connection
# and part of its 2 MB, and a mix's p99 would be the bombs' however the
# server fared.
HOSTILE_SCRIPT = """\
local f = assert(io.open("{bomb}", "rb"))
local bomb = f:read("*a")
f:close()
local garbage = "{garbage}"
local threads = {{}}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  unexpected = 0
  local json = {{["Content-Type"] = "application/json"}}
  queue = {{
    wrk.format("POST", "{path}", json, garbage),
    wrk.format("POST", "{path}", {{["Content-Type"] = "application/json",
                                  ["Authorization"] = "Bearer sk-not-a-lunos-key"}}, garbage),
    wrk.format("POST", "{path}", {{["Content-Type"] = "application/json",
                                  ["Content-Encoding"] = "gzip"}}, bomb),
  }}
end

function request()
  return queue[{kind}]
end

function response(status, headers, body)
  if status ~= 401 then
    unexpected = unexpected + 1
  end
end

function unexpected_statuses()
  local n = 0
  for _, t in ipairs(threads) do
    n = n + t:get("unexpected")
  end
  return n
end
"""


def write_script(stream: bool) -> Path:
    path = OUT / ("wrk-stream.lua" if stream else "wrk-plain.lua")
    text = WRK_SCRIPT.format(path=PATH, body=request_body(stream).decode())
    path.write_text(text + DONE.replace("STATUS_ERRORS", "e.status"))
    return path


HOSTILE_KINDS = ("garbage, no key", "garbage, wrong key", "2 MB gzip bomb, no key")


def write_hostile_scripts() -> list[Path]:
    """One script per kind of `HOSTILE_KINDS`, in that order."""
    bomb = OUT / "bomb-2gib.gz"
    if not bomb.exists():
        bomb.write_bytes(gzip_bomb(2))
    garbage = "\\x00\\xff{not json at all ]] " * 8  # with Lua's escapes
    paths = []
    for kind in range(1, len(HOSTILE_KINDS) + 1):
        text = HOSTILE_SCRIPT.format(bomb=bomb.resolve(), path=PATH, garbage=garbage, kind=kind)
        path = OUT / f"wrk-hostile-{kind}.lua"
        path.write_text(text + DONE.replace("STATUS_ERRORS", "unexpected_statuses()"))
        paths.append(path)
    return paths


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
    # Several kinds of request, each from its own wrk: (p50, p99) of each,
    # in the order of their scripts; p50_ms and p99_ms are then the kind's
    # whose p99 is the most times its p50.
    kinds: tuple[tuple[float, float], ...] = ()


def run_wrk(url: str, script: Path | list[Path], seconds: float, load: Load) -> WrkResult:
    """One wrk with `script`; or, given several scripts, one wrk each, all
    at once, the connections shared out (a kind of request per script)."""
    if isinstance(script, Path):
        return _finish(url, _start_wrk(url, script, seconds, load, load.connections))
    shares = [load.connections // len(script)] * len(script)
    shares[0] += load.connections - sum(shares)
    procs = [_start_wrk(url, s, seconds, load, n) for s, n in zip(script, shares, strict=True)]
    try:
        results = [_finish(url, proc) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    worst = max(results, key=lambda r: r.p99_ms / r.p50_ms if r.p50_ms else 0.0)
    return WrkResult(
        requests=sum(r.requests for r in results),
        rps=sum(r.rps for r in results),
        p50_ms=worst.p50_ms,
        p99_ms=worst.p99_ms,
        raw="\n".join(r.raw for r in results),
        kinds=tuple((r.p50_ms, r.p99_ms) for r in results),
    )


def _start_wrk(
    url: str, script: Path, seconds: float, load: Load, connections: int
) -> subprocess.Popen[str]:
    cmd = [
        "wrk",
        f"-t{load.threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "5s",
        "--latency",
        "-s",
        str(script),
        url + PATH,
    ]
    proc = subprocess.Popen(
        pinned(cmd, load.core),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=OUT,
        **SPAWN,
    )
    prioritise(proc.pid)
    return proc


def _finish(url: str, proc: subprocess.Popen[str]) -> WrkResult:
    with proc:
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
