"""Admin routes that read a plugin say so when that plugin is not in the pipeline."""

from __future__ import annotations

from tests.auth_support import admin
from tests.conftest import GatewayFactory, basic_config
from tests.fakes import FakeProvider


async def test_routing_bans_and_usage_say_their_plugin_is_absent(
    provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(basic_config(provider.base_url))  # request_id only

    assert await admin(gw, "GET", "/admin/routing") == (200, {"router": False, "deployments": []})
    assert await admin(gw, "GET", "/admin/bans") == (409, {"error": {
        "message": "bans are the abuse plugin's, and it is not in the pipeline",
        "status": 409}})
    status, usage = await admin(gw, "GET", "/admin/usage/acct-a")
    assert (status, usage["metered"], usage["currency"], usage["rows"]) == (200, False, "USD", [])
    status, balance = await admin(gw, "GET", "/admin/usage/acct-a/balance")
    assert (status, balance["metered"], balance["spent_total_micros"]) == (200, False, 0)


async def test_routing_says_the_router_runs_when_it_does(
    provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    config = basic_config(provider.base_url)
    config["pipeline"].append({"name": "router"})
    gw = await make_gateway(config)
    status, doc = await admin(gw, "GET", "/admin/routing")
    assert (status, doc["router"]) == (200, True)
