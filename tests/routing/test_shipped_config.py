"""The shipped config/lunos.yaml routes through the router as documented."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import GatewayFactory, shipped_config
from tests.routing.conftest import admin_json, chat

ROOT = Path(__file__).resolve().parents[2]


async def test_shipped_config_serves_demo_chat_through_the_router(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(shipped_config())
    demo_key = "lk-6btyxEq06JC8MobCcJ1UovhbLZcHGE1yVhtZfe_HgmY"  # the README's
    status, _, body = await chat(gw.url, "gpt-4o-mini", headers={"Authorization": f"Bearer {demo_key}"})
    assert status == 200
    assert json.loads(body)["object"] == "chat.completion"
    ids = {d["deployment"] for d in (await admin_json(gw.admin_url, "/admin/routing"))["deployments"]}
    assert ids == {"demo-main", "demo-spare", "demo-backup", "demo/demo-claude", "demo/demo-embed"}
