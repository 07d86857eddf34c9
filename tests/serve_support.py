"""Real `lunos-proxy serve` processes for tests: start one, wait until it is ready."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import aiohttp

__all__ = ["serve_process", "until_ready"]


async def until_ready(url: str, proc: asyncio.subprocess.Process, tries: int = 300) -> None:
    """Wait for `url`/readyz to answer 200; fail with the process's stderr if it exits."""
    async with aiohttp.ClientSession() as http:
        for _ in range(tries):
            try:
                async with http.get(url + "/readyz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            if proc.returncode is not None:
                err = b"" if proc.stderr is None else await proc.stderr.read()
                raise AssertionError(f"serve exited {proc.returncode}: {err.decode()}")
            await asyncio.sleep(0.05)
    raise AssertionError(f"{url} never became ready")


async def serve_process(
    config: Path, port: int, admin_port: int, *args: str
) -> asyncio.subprocess.Process:
    """`python -m lunos_proxy serve` on `config` and these ports (logs on stdout, kept)."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lunos_proxy", "serve", "--config", str(config),
        "--port", str(port), "--admin-port", str(admin_port), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
