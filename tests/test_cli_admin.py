"""`lunos-proxy accounts|keys|tokens|audit|secrets`: the admin API from the command line."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from lunos_proxy.cli import main
from lunos_proxy.config import SecretsConfig
from lunos_proxy.crypto import Secrets, load_secrets
from tests.auth_support import ADMIN_TOKEN, HASH_SECRET, auth_config, chat
from tests.conftest import GatewayFactory, Running
from tests.fakes import FakeProvider


async def run(capsys: pytest.CaptureFixture[str], gw: Running, *argv: str, token: str = ADMIN_TOKEN) -> Any:
    """Run the CLI in a thread (it blocks on HTTP) and decode its JSON output."""
    code = await asyncio.to_thread(main, [*argv, "--admin-url", gw.admin_url, "--token", token])
    assert code == 0
    return json.loads(capsys.readouterr().out)


async def test_cli_covers_accounts_keys_tokens_and_audit(
    capsys: pytest.CaptureFixture[str], provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(auth_config(provider.base_url))
    account = await run(capsys, gw, "accounts", "create", "--name", "Ada", "--email", "ada@example.com",
                        "--plan", "pro", "--allowed-regions", "eu", "us")
    acc = account["id"]
    assert (account["name"], account["allowed_regions"]) == ("Ada", ["eu", "us"])
    assert await run(capsys, gw, "accounts", "show", acc) == account
    fixed = await run(capsys, gw, "accounts", "update", acc, "--email", "ada@fixed.example")
    assert fixed["email"] == "ada@fixed.example" and fixed["name"] == "Ada"
    assert [a["id"] for a in (await run(capsys, gw, "accounts", "list", "--email", "ada@fixed.example"))["accounts"]] == [acc]

    key = await run(capsys, gw, "keys", "create", acc, "--name", "ci", "--allowed-models", "gpt-test")
    assert (await chat(gw, key["key"]))[0] == 200
    listed = (await run(capsys, gw, "keys", "list", acc))["keys"]
    assert [(k["id"], k["prefix"], k["allowed_models"]) for k in listed] == [(key["id"], key["prefix"], ["gpt-test"])]
    rotated = await run(capsys, gw, "keys", "rotate", key["id"], "--grace", "0")
    assert (await chat(gw, rotated["key"]))[0] == 200
    assert (await chat(gw, key["key"]))[0] == 401
    assert (await run(capsys, gw, "keys", "revoke", rotated["id"]))["revoked"] is True
    assert (await chat(gw, rotated["key"]))[0] == 401

    reader = await run(capsys, gw, "tokens", "create", "--name", "auditor", "--scope", "read")
    assert [t["id"] for t in (await run(capsys, gw, "tokens", "list"))["tokens"]] == [reader["id"]]
    exported = await run(capsys, gw, "accounts", "export", acc, token=ADMIN_TOKEN)
    assert exported["account"]["email"] == "ada@fixed.example" and len(exported["keys"]) == 2
    audit = await run(capsys, gw, "audit", "--account-id", acc, token=reader["token"])
    assert [e["action"] for e in reversed(audit["entries"])] == [
        "accounts.create", "accounts.show", "accounts.update", "keys.create", "keys.list", "keys.rotate",
        "keys.revoke", "accounts.export"]
    deleted = await run(capsys, gw, "accounts", "delete", acc)
    assert deleted["deleted"] == {"profile": True, "keys": 2, "usage_rows": 0, "usage_events": 0,
                                  "spend_counters": 0}
    assert (await run(capsys, gw, "tokens", "revoke", reader["id"]))["revoked"] is True


async def test_cli_reports_a_refused_call_and_exits_non_zero(
    capsys: pytest.CaptureFixture[str], provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(auth_config(provider.base_url))
    with pytest.raises(SystemExit) as e:
        await asyncio.to_thread(main, ["accounts", "list", "--admin-url", gw.admin_url, "--token", "lat-wrong"])
    assert str(e.value).startswith("GET /admin/accounts: 401: ")


def test_keys_hash_prints_a_static_entry_for_the_configs_secret(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = tmp_path / "lunos.yaml"
    config.write_text(yaml.safe_dump({"secrets": {"hash_secret": HASH_SECRET, "encryption_keys": "k:" + "A" * 43}}))
    assert main(["keys", "hash", "--account", "acme", "--name", "ci", "--config", str(config)]) == 0
    out, err = capsys.readouterr()
    key = err.split("shown only now: ")[1].strip()
    [entry] = yaml.safe_load(out)
    secrets = load_secrets(SecretsConfig(hash_secret=HASH_SECRET, encryption_keys="k:" + "A" * 43))
    assert entry == {"hash": secrets.key_hash(key), "prefix": key[:9], "account": "acme", "name": "ci"}


def test_secrets_generate_prints_usable_environment_values(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["secrets", "generate"]) == 0
    env = dict(line.split("=", 1) for line in capsys.readouterr().out.splitlines())
    assert set(env) == {"LUNOS_HASH_SECRET", "LUNOS_ENCRYPTION_KEYS"}
    s = Secrets(env["LUNOS_HASH_SECRET"], env["LUNOS_ENCRYPTION_KEYS"], [])
    assert s.decrypt(s.encrypt("x", "c"), "c") == "x" and len(env["LUNOS_HASH_SECRET"]) >= 32


def test_check_warns_about_development_secrets_in_the_shipped_config(capsys: pytest.CaptureFixture[str]) -> None:
    root = Path(__file__).resolve().parent.parent
    assert main(["check", "--config", str(root / "config" / "lunos.yaml")]) == 0
    err = capsys.readouterr().err
    assert "lunos.yaml: warning: secrets: hash_secret is the published development default" in err
    assert "data/lunos-secrets.json" in err  # to be generated, or generated: development only either way
