"""Instructions per request of Lunos under callgrind: an A/B measure for
small changes on the request path. Req/s moves with whatever else the
machine runs; instruction counts do not (within ~3 %: how requests batch
still varies with timing). Needs valgrind (apt-get install -y valgrind).

    .venv/bin/python bench/icount.py SRC CASE [--seconds 10] [--drop PLUGIN ...] [--keep]

SRC is a source tree (a worktree, or an export: `git archive REV | tar -x
-C /tmp/base`); CASE a bench case of SRC's bench/cases.py ("full pipeline",
"plain", "translated", ...). `--drop` takes a plugin out of the case's
pipeline (what it costs is the difference); `--keep` keeps callgrind's file
for `callgrind_annotate --inclusive=yes FILE` (C functions: hiredis, SQLite,
msgspec, libc; Python's own functions do not show there). Compare two trees
interleaved, twice each.

Lunos warms up uncounted for 4 s; counting starts 2.5 s later (what the
warmup wrote behind has been flushed) and ends 2.5 s after the measured
load (what it wrote behind is counted).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("src", type=Path)
    parser.add_argument("case")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--drop", action="append", default=[])
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    src: Path = args.src.resolve()
    sys.path.insert(0, str(src / "bench"))
    import run as bench
    import yaml
    from cases import CASES
    from servers import OUT, free_port, start

    OUT.mkdir(exist_ok=True)
    case = CASES[args.case]
    upstream = bench.start_fake("upstream", 0)
    config = OUT / f"icount-{os.getpid()}.yaml"
    out = Path(f"/tmp/cg-{os.getpid()}.out")
    try:
        port, admin = free_port(), free_port()
        cfg = bench.deep_merge(
            case.lunos_config(upstream.url, OUT),
            {"server": {"host": "127.0.0.1", "port": port, "admin_port": admin}},
        )
        cfg["pipeline"] = [e for e in cfg["pipeline"] if e["name"] not in args.drop]
        config.write_text(yaml.safe_dump(cfg, sort_keys=False))
        cmd = ["taskset", "-c", "1", "valgrind", "--tool=callgrind", "--instr-atstart=no",
               f"--callgrind-out-file={out}", *bench.lunos_command(config, port, admin)]  # fmt: skip
        server = start(f"icount-{os.getpid()}", cmd, port, case.stream, 300, cwd=src)
        try:
            script = bench.write_script(case.stream)
            url = f"{server.url}/v1/chat/completions"

            def wrk(seconds: int) -> str:
                cmd = ["taskset", "-c", "0", "wrk", "-t1", "-c16", f"-d{seconds}s",
                       "-s", str(script), url]  # fmt: skip
                return subprocess.run(cmd, capture_output=True, text=True).stdout

            def counting(on: bool) -> None:
                cmd = ["callgrind_control", "-i", "on" if on else "off", str(server.proc.pid)]
                subprocess.run(cmd, capture_output=True, check=True)

            wrk(4)
            time.sleep(2.5)
            counting(True)
            report = wrk(args.seconds)
            time.sleep(2.5)
            counting(False)
        finally:
            server.stop()
    finally:
        upstream.stop()
        config.unlink(missing_ok=True)
    found = re.search(r"(\d+) requests in", report)
    if found is None:
        print(f"wrk did not finish:\n{report}", file=sys.stderr)
        return 1
    requests = int(found.group(1))
    total = 0
    for part in out.parent.glob(f"{out.name}*"):
        for line in part.read_text(errors="replace").splitlines():
            if line.startswith(("summary:", "totals:")):
                total = max(total, int(line.split()[1]))
        if not args.keep:
            part.unlink()
    bad = re.search(r"Non-2xx.*|Socket errors.*", report)
    label = f"{src.name} {args.case}" + "".join(f" -{name}" for name in args.drop)
    print(f"{label}: {requests} requests, {total / requests / 1e3:.1f} k instructions/request"
          + (f"  WARNING {bad.group(0)}" if bad else "")
          + (f"  (callgrind file {out})" if args.keep else ""))  # fmt: skip
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
