"""What a refusal costs Lunos, by the body it refuses.

    .venv/bin/python bench/refusals.py [--requests 200] [--rounds 5]

Lunos runs the "hostile" case's config (request_id + auth, decompression
on). Each kind of request below is sent without a key, each on a new
connection, in interleaved rounds; the table gives the server's CPU time
(user + system, all threads, from /proc schedstat) per request, median of
the rounds. What must hold (issue: "refusing the 2 GiB bomb costs no more
than refusing a plain request"): a gzip bomb costs no more than a plain
body of the same size, since neither is read past what came with its
headers, and nothing is inflated before the 401.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bomb import gzip_bomb
from bench.cases import CASES
from bench.run import start_fake, start_lunos
from bench.servers import HOST, OUT, ROOT, _sched_seconds

BOMB = gzip_bomb(2)  # about 2 MB, 2 GiB inflated
PLAIN = b'{"model":"bench-model","messages":[{"role":"user","content":"' + (
    b"x" * (len(BOMB) - 70)
) + b'"}]}'
SMALL = b'{"model":"bench-model","messages":[{"role":"user","content":"hi"}]}'

KINDS: dict[str, tuple[bytes, str]] = {
    "small JSON body": (SMALL, ""),
    f"{len(PLAIN) / 1e6:.1f} MB plain JSON body": (PLAIN, ""),
    f"{len(BOMB) / 1e6:.1f} MB gzip bomb (2 GiB inflated)": (BOMB, "Content-Encoding: gzip\r\n"),
}


def refused(port: int, body: bytes, extra: str) -> int:
    """Send one keyless request on a new connection; its status."""
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {HOST}\r\n"
        f"Content-Type: application/json\r\n{extra}Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection((HOST, port)) as sock:
        sock.sendall(head)
        try:
            sock.sendall(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused and closed before the body was all sent: the point
        answer = b""
        try:
            while b"\r\n" not in answer:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        except ConnectionResetError:
            pass
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="per kind and round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    upstream = start_fake("upstream-refusals", None)
    lunos, _ = start_lunos(CASES["hostile"], upstream, {}, None, 30, ROOT)
    port = int(lunos.url.rsplit(":", 1)[1])
    costs: dict[str, list[float]] = {kind: [] for kind in KINDS}
    statuses: dict[str, set[int]] = {kind: set() for kind in KINDS}
    try:
        for _ in range(args.rounds):
            for kind, (body, extra) in KINDS.items():
                before = _sched_seconds(lunos.pid)[0]
                for _ in range(args.requests):
                    statuses[kind].add(refused(port, body, extra))
                spent = _sched_seconds(lunos.pid)[0] - before
                costs[kind].append(spent / args.requests * 1e6)
    finally:
        lunos.stop()
        upstream.stop()
    print(f"| refused without a key ({args.rounds} rounds x {args.requests}) | status | "
          "Lunos CPU us/req (median) | min | max |")
    print("|---|---|---:|---:|---:|")
    for kind, samples in costs.items():
        print(f"| {kind} | {', '.join(map(str, sorted(statuses[kind])))} | "
              f"{statistics.median(samples):,.0f} | {min(samples):,.0f} | {max(samples):,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
