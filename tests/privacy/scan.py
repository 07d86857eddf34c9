"""Everything the proxy keeps or shows, gathered as bytes to search."""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import redis.asyncio as redis

from tests.auth_support import ADMIN_TOKEN
from tests.conftest import Running


async def redis_contents(url: str) -> bytes:
    """Every key and every value in the Redis at `url`, whatever its type."""
    client = redis.Redis.from_url(url)
    parts: list[bytes] = []
    try:
        async for key in client.scan_iter(count=1000):
            parts.append(key)
            kind = (await client.type(key)).decode()
            if kind == "string":
                parts.append(await client.get(key) or b"")
            elif kind == "hash":
                for field, value in (await client.hgetall(key)).items():
                    parts += [field, value]
            elif kind == "list":
                parts += await client.lrange(key, 0, -1)
            elif kind == "set":
                parts += list(await client.smembers(key))
            elif kind == "zset":
                parts += [member for member, _ in await client.zrange(key, 0, -1, withscores=True)]
            elif kind == "stream":
                for _, fields in await client.xrange(key):
                    for field, value in fields.items():
                        parts += [field, value]
            else:
                raise AssertionError(f"key {key!r} has a type this scan cannot read: {kind}")
    finally:
        await client.aclose()
    return b"\n".join(parts)


_PARAM = re.compile(r"\{([a-z_]+)\}")


async def migrated(url: str) -> None:
    """The records schema in the database at `url` (what `lunos-proxy db migrate` does)."""
    from lunos_proxy.records import open_records

    records = open_records(url)
    await records.migrate()
    await records.close()


async def postgres_contents(url: str) -> bytes:
    """Every row of every table in the database at `url`, as text."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
        out = []
        for t in tables:
            rows = await conn.fetch(f'SELECT row_to_json(x)::text AS j FROM "{t[0]}" x')
            out += [r["j"].encode() for r in rows]
        return b"\n".join(out)
    finally:
        await conn.close()


def admin_get_paths(gw: Running, ids: dict[str, str]) -> list[str]:
    """Every GET route of the admin listener, path parameters filled from `ids`.

    A new admin route with a parameter not in `ids` fails here, so that it
    is added to the proof rather than skipped."""
    paths = []
    for route in gw.gateway.admin_app().router.routes():
        if route.method != "GET":
            continue
        path = route.resource.canonical if route.resource is not None else ""
        missing = [p for p in _PARAM.findall(path) if p not in ids]
        assert not missing, f"privacy proof: no value for {missing} in {path}; add one to `ids`"
        paths.append(_PARAM.sub(lambda m: ids[m.group(1)], path))
    return sorted(set(paths))


async def admin_outputs(gw: Running, ids: dict[str, str]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with aiohttp.ClientSession() as s:
        for path in admin_get_paths(gw, ids):
            async with s.get(gw.admin_url + path, headers=headers) as r:
                body = await r.read()
                assert r.status == 200, f"GET {path}: {r.status} {body[:200]!r}"
                out[path] = body
    return out


async def console_outputs(gw: Running, key: str) -> dict[str, bytes]:
    """Every GET page of the account console, signed in with `key`."""
    from lunos_proxy.console.app import console_app
    from tests.console.support import Browser

    paths = sorted(
        route.resource.canonical
        for route in console_app(gw.gateway).router.routes()
        if route.method == "GET" and route.resource is not None
        and not route.resource.canonical.startswith("/static/")
    )
    assert not [p for p in paths if _PARAM.search(p)], f"privacy proof: console pages with parameters: {paths}"
    browser = Browser(gw)
    out: dict[str, bytes] = {}
    try:
        await browser.sign_in_with_key(key)
        for path in paths:
            status, text = await browser.get("/console" + path)
            # Sign-in pages answer 4xx without their link or code; their output counts too.
            assert status < 500, f"GET /console{path}: {status} {text[:200]}"
            out["/console" + path] = text.encode()
    finally:
        await browser.close()
    return out


def findings(sources: dict[str, bytes], needles: dict[str, str]) -> list[str]:
    """'what' in 'where' for every needle found in a source."""
    found = []
    for where, data in sources.items():
        for what, needle in needles.items():
            if needle.encode() in data:
                found.append(f"{what} in {where}")
    return found


def as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()
