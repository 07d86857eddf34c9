"""Clients that hang up mid-request, and what Redis did per request.

`hang_up` opens `count` connections that each send a request for the
fake provider's slow model (its answer comes after half a second) and
leave while the proxy's attempt is in flight. With the meter on, every
one of them is billed an estimate: the tokenizer counts (and, the first
time in a process, loads its tables). run.py measures a round right after,
the "after hang-ups" row, whose p99 shows whether that stalled the proxy.

`redis_counts` reads the counters a round's per-request figures come from
(INFO commandstats and INFO stats): counts, not times, so they mean the
same on a busy machine as on a quiet one.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

from cases import SLOW_MODEL
from servers import HOST, PATH

LEAVE_AFTER = 0.1  # seconds: the attempt is in flight, the answer not yet sent


def hang_up(url: str, count: int, stream: bool) -> None:
    port = int(url.rsplit(":", 1)[1])
    body: dict[str, Any] = {"model": SLOW_MODEL, "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        body["stream"] = True
    data = json.dumps(body).encode()
    request = (
        f"POST {PATH} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer sk-bench\r\nContent-Length: {len(data)}\r\n\r\n"
    ).encode() + data
    clients = []
    try:
        for _ in range(count):
            s = socket.create_connection((HOST, port), timeout=5)
            s.sendall(request)
            clients.append(s)
        time.sleep(LEAVE_AFTER)
    finally:
        for s in clients:
            s.close()


def redis_counts(url: str) -> dict[str, int]:
    """Calls per command (scripts' own commands included, as Redis counts
    them), `scripts` (EVALSHA, EVAL, FCALL calls), bytes in and out, and
    the server's CPU time (`cpu_us`: a time, so inflated on a busy machine)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats")
        net = client.info("stats")
        cpu = client.info("cpu")
    finally:
        client.close()
    counts = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
    scripts = ("evalsha", "eval", "evalsha_ro", "fcall")
    counts["scripts"] = sum(counts.get(c, 0) for c in scripts)
    # Time Redis spent running scripts (their commands included), microseconds.
    counts["scripts_us"] = sum(int(stats.get(f"cmdstat_{c}", {}).get("usec", 0)) for c in scripts)
    counts["bytes_in"] = int(net["total_net_input_bytes"])
    counts["bytes_out"] = int(net["total_net_output_bytes"])
    # The server's own CPU time (main thread and the rest), in microseconds.
    counts["cpu_us"] = round((float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])) * 1e6)
    return counts


# The INFO calls themselves, left out of the differences.
_OWN = {"info"}


def per_request(before: dict[str, int], after: dict[str, int], requests: int) -> dict[str, float]:
    out = {}
    for name, value in after.items():
        if name in _OWN:
            continue
        delta = value - before.get(name, 0)
        if delta:
            out[name] = delta / requests
    return out
