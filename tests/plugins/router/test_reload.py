"""Hot reload: POST /admin/reload and the file watch, under load and with bad files."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import aiohttp
from structlog.testing import capture_logs

from plugins.router.state import REGISTRY
from tests.conftest import ADMIN_HEADERS, ADMIN_TOKEN, GatewayFactory, Running
from tests.plugins.router.conftest import (
    ProviderFactory,
    chat,
    deployment,
    metric,
    router_config,
    write_yaml,
)


async def reload(gw: Running, token: str = ADMIN_TOKEN) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as s, s.post(gw.admin_url + "/admin/reload", headers=headers) as r:
        status, body = r.status, await r.json()
    if status in (200, 422):  # one process answers for itself, as worker 0
        assert [w["worker"] for w in body.pop("workers")] == [0]
    return status, body


async def test_reloads_under_load_fail_no_request(
    fakes: ProviderFactory, make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    a, b = await fakes(2)
    first = router_config({"a": a, "b": b}, {"m": {"deployments": [deployment("a"), deployment("b")]}})
    second = copy.deepcopy(first)
    second["models"]["m"]["deployments"][0]["weight"] = 5
    second["models"]["other"] = {"deployments": [deployment("b", "other")]}
    path = write_yaml(tmp_path / "lunos.yaml", first)
    gw = await make_gateway(first)
    gw.gateway.reloader.path = str(path)

    statuses: list[int] = []
    todo = iter(range(300))

    async def client() -> None:
        for _ in todo:
            statuses.append((await chat(gw.url, stream=len(statuses) % 3 == 0))[0])

    async def reloader() -> None:
        for i in range(10):
            write_yaml(path, second if i % 2 == 0 else first)
            assert await reload(gw) == (200, {"result": "applied", "providers": 2, "models": 2 - i % 2})
            await asyncio.sleep(0.02)

    await asyncio.gather(reloader(), *(client() for _ in range(8)))
    assert len(statuses) == 300
    assert statuses.count(200) == 300
    assert await metric(gw.admin_url, 'lunos_config_reloads_total{result="applied"}') == 10


async def test_invalid_file_is_rejected_and_the_old_routes_stay(
    fakes: ProviderFactory, make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    (a,) = await fakes(1)
    good = router_config({"a": a}, {"m": {"deployments": [deployment("a")]}})
    gw = await make_gateway(good)
    bad = copy.deepcopy(good)
    bad["models"]["m"]["fallbacks"] = ["n"]
    bad["models"]["n"] = {"fallbacks": ["m"], "deployments": [deployment("nowhere")]}
    gw.gateway.reloader.path = str(write_yaml(tmp_path / "routes.yaml", bad))
    with capture_logs() as logs:
        status, body = await reload(gw)
    expected = [
        "routes.yaml: models.n.deployments[0].provider: unknown provider 'nowhere'",
        "routes.yaml: models.m.fallbacks: fallback cycle m -> n -> m",
    ]
    assert (status, body) == (422, {"result": "rejected", "problems": expected})
    assert [e["problem"] for e in logs if e["event"] == "config_rejected"] == expected
    assert await metric(gw.admin_url, 'lunos_config_reloads_total{result="rejected"}') == 1
    assert (await chat(gw.url))[0] == 200
    assert (await chat(gw.url, "n"))[0] == 404


async def test_watched_file_is_reloaded_when_it_changes(
    fakes: ProviderFactory, make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    (a,) = await fakes(1)
    config = router_config({"a": a}, {"m": {"deployments": [deployment("a")]}})
    config["server"] = {"watch_config_seconds": 0.05}
    path = write_yaml(tmp_path / "lunos.yaml", config)
    gw = await make_gateway(config)
    gw.gateway.reloader.path = str(path)
    gw.gateway.reloader.start()
    config["models"]["new"] = {"deployments": [deployment("a", "new-up")]}
    write_yaml(path, config)
    for _ in range(100):  # bounded: 5 s at most
        if "new" in gw.gateway.config.models:
            break
        await asyncio.sleep(0.05)
    assert (await chat(gw.url, "new"))[0] == 200
    assert a.received[-1].json()["model"] == "new-up"


async def test_reload_needs_an_operator_token(fakes: ProviderFactory, make_gateway: GatewayFactory, tmp_path: Path) -> None:
    (a,) = await fakes(1)
    config = router_config({"a": a}, {"m": {"deployments": [deployment("a")]}})
    gw = await make_gateway(config)
    gw.gateway.reloader.path = str(write_yaml(tmp_path / "lunos.yaml", config))
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.admin_url + "/admin/tokens", json={"name": "grafana", "scope": "read"},
                          headers=ADMIN_HEADERS) as r:
            assert r.status == 201
            reader = (await r.json())["token"]
    assert (await reload(gw, "lat-wrong"))[0] == 401
    assert (await reload(gw, reader))[0] == 403
    assert (await reload(gw))[0] == 200
    assert await metric(gw.admin_url, 'lunos_config_reloads_total{result="applied"}') == 1


async def test_a_config_a_plugin_refuses_while_built_is_rejected_and_changes_nothing(
    fakes: ProviderFactory, make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    (a,) = await fakes(1)
    good = router_config({"a": a}, {"m": {"deployments": [deployment("a")]}})
    gw = await make_gateway(good)
    before, generation = gw.gateway.config, gw.gateway.generation
    bad = copy.deepcopy(good)
    bad["admin"] = {"token": "lat-another-token-" + "x" * 40}
    [router] = [p for p in bad["pipeline"] if p["name"] == "router"]
    router.setdefault("settings", {})["breaker"] = {"window_seconds": 99}  # built before the meter
    bad["pipeline"].append({"name": "meter", "settings": {"pricing": str(tmp_path / "missing.yaml")}})
    gw.gateway.reloader.path = str(write_yaml(tmp_path / "lunos.yaml", bad))
    status, body = await reload(gw)
    assert (status, body["result"]) == (422, "rejected")
    assert len(body["problems"]) == 1 and "missing.yaml" in body["problems"][0]
    assert gw.gateway.config is before and gw.gateway.generation is generation
    assert gw.gateway.lasting[REGISTRY].breaker.window_seconds == 30.0  # the old one's
    assert await metric(gw.admin_url, 'lunos_config_reloads_total{result="rejected"}') == 1
    assert (await chat(gw.url))[0] == 200
    assert (await reload(gw))[0] == 422  # the old admin token still holds


async def test_a_stream_outlives_the_grace_of_the_generation_a_reload_replaced(
    fakes: ProviderFactory, make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    (a,) = await fakes(1)
    a.behaviour.chunk_interval = 0.25  # six chunks: about 1.5 s, past the grace
    config = router_config({"a": a}, {"m": {"deployments": [deployment("a")]}})
    config["server"] = {"shutdown_grace_seconds": 0.3}
    gw = await make_gateway(config)
    gw.gateway.reloader.path = str(write_yaml(tmp_path / "lunos.yaml", config))
    old = gw.gateway.generation
    assert old is not None
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    async with asyncio.timeout(10), aiohttp.ClientSession() as s, s.post(
            gw.v1 + "/chat/completions", json=body) as r:
        first = await r.content.readline()
        assert (await reload(gw))[0] == 200
        rest = await r.read()  # hung once the old generation's session closed under it
    assert first.startswith(b"data: ") and rest.rstrip().endswith(b"data: [DONE]")
    assert a.completed_streams == 1 and a.disconnects == 0
    client = old.forwarder.upstreams["a"].client
    assert client is not None
    for _ in range(100):  # the old generation closes once its last request is done
        if client.closed:
            break
        await asyncio.sleep(0.01)
    assert old.in_flight == 0 and client.closed
