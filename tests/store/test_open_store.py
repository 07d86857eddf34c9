"""Choosing a backend from a URL, and the URL forms each backend accepts."""

from __future__ import annotations

import pytest

from lunos_proxy.store import open_store
from lunos_proxy.store.memory import MemoryStore
from lunos_proxy.store.redis import RedisStore
from lunos_proxy.store.redis.connect import RedisOptions, _parse


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("memory://", None),
        ("memory:///var/lib/lunos/store.json", "/var/lib/lunos/store.json"),
        ("memory://data/store.json", "data/store.json"),
        ("memory:///tmp/with%20space.json", "/tmp/with space.json"),
    ],
)
def test_memory_urls_name_the_data_file(url: str, path: str | None) -> None:
    store = open_store(url)
    assert isinstance(store, MemoryStore)
    assert store.path == path


async def test_memory_options_reach_the_store() -> None:
    store = open_store("memory://", clock=lambda: 100.0)
    assert isinstance(store, MemoryStore)
    await store.ban("t", "ip:x", 5)
    assert (await store.hit("t", [], bans=["ip:x"])).banned == 5.0


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6390/0",
        "rediss://cache.internal:6380",
        "redis+sentinel://10.0.0.5:26379,10.0.0.6/lunos",
        "redis+cluster://10.0.0.5:7000,10.0.0.6:7000",
    ],
)
async def test_redis_urls_open_a_redis_store_without_connecting(url: str) -> None:
    store = open_store(url, prefix="staging:", timeout=0.25)
    assert isinstance(store, RedisStore)
    assert store.options.prefix == "staging:"
    assert store.options.timeout == 0.25
    await store.close()


def test_sentinel_url_lists_sentinels_then_service_and_db() -> None:
    parsed = _parse(
        "redis+sentinel://:s%40cret@10.0.0.5:26380,sentinel-b,[::1]:26381/lunos/2", 26379
    )
    assert parsed.hosts == [("10.0.0.5", 26380), ("sentinel-b", 26379), ("::1", 26381)]
    assert parsed.password == "s@cret"
    assert parsed.username is None
    assert parsed.path == ["lunos", "2"]
    assert not parsed.tls
    assert _parse("rediss+cluster://user:pw@node-a:7000", 6379).tls


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("postgres://db/lunos", {}, "unknown store URL scheme 'postgres'"),
        ("redis+sentinel://10.0.0.5", {}, "names the service"),
        ("redis://127.0.0.1", {"prefix": "{lunos}:"}, "must not contain braces"),
        ("redis://127.0.0.1", {"timeuot": 1}, "timeuot"),
    ],
)
def test_bad_urls_and_options_are_refused_by_name(url: str, options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_store(url, **options)


def test_redis_options_default_to_short_timeouts_and_verified_tls() -> None:
    options = RedisOptions()
    assert (options.connect_timeout, options.timeout) == (1.0, 1.0)
    assert options.prefix == "lunos:"
    assert (options.ssl_cert_reqs, options.ssl_check_hostname) == ("required", True)
