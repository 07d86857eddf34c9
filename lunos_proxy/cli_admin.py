"""The admin subcommands of `lunos-proxy`: accounts, keys, tokens, audit, bans, secrets.

Everything that changes state talks to the admin API of a running proxy
(so it works the same on the embedded store and on Redis, and every
action is audited there); only `keys hash` and `secrets generate` work
offline. Where to reach the proxy and with which token:

    --admin-url  or $LUNOS_ADMIN_URL  or http://<server.admin_host>:<server.admin_port>
    --token      or $LUNOS_ADMIN_TOKEN or admin.token or the file admin.token_file

(the last three from the config, `--config` or $LUNOS_CONFIG). Output is
JSON on stdout; a refused call prints the API's error on stderr and exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote, urlencode

from .config import Config, ConfigError
from .crypto import generate_encryption_key, load_secrets
from .keys import display_prefix, new_key
from .loading import load_config

__all__ = ["add_commands"]

_DEFAULT_CONFIG = "config/lunos.yaml"


def _config(args: argparse.Namespace) -> Config:
    path = args.config or os.environ.get("LUNOS_CONFIG") or _DEFAULT_CONFIG
    try:
        return load_config(path)
    except ConfigError as e:
        raise SystemExit("\n".join(e.problems)) from None


# -- offline commands --------------------------------------------------------


def cmd_keys_hash(args: argparse.Namespace) -> int:
    """Print a static key entry for the auth plugin's settings (and the key, once)."""
    secrets = load_secrets(_config(args).secrets)
    key = sys.stdin.readline().strip() if args.stdin else new_key()
    entry = {"hash": secrets.key_hash(key), "prefix": display_prefix(key), "account": args.account}
    if args.name:
        entry["name"] = args.name
    if not args.stdin:
        print(f"# the key, shown only now: {key}", file=sys.stderr)
    print("- " + json.dumps(entry))
    return 0


def cmd_secrets_generate(args: argparse.Namespace) -> int:
    print(f"LUNOS_HASH_SECRET={new_key('')}")
    print(f"LUNOS_ENCRYPTION_KEYS={generate_encryption_key()}")
    return 0


# -- the admin API client -----------------------------------------------------


class _Admin:
    def __init__(self, args: argparse.Namespace) -> None:
        url = args.admin_url or os.environ.get("LUNOS_ADMIN_URL")
        token = args.token or os.environ.get("LUNOS_ADMIN_TOKEN")
        if not url or not token:
            config = _config(args)
            url = url or f"http://{config.server.admin_host}:{config.server.admin_port}"
            token = token or config.admin.token or _read_token(config.admin.token_file)
        if not token:
            raise SystemExit("no admin token: pass --token or set LUNOS_ADMIN_TOKEN")
        self.url = url.rstrip("/")
        self.token = token

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")
            raise SystemExit(f"{method} {path}: {e.code}: {detail}") from None
        except urllib.error.URLError as e:
            raise SystemExit(f"cannot reach the admin API at {self.url}: {e.reason}") from None


def _read_token(path: str) -> str:
    if not path:
        return ""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return ""


def _fields(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in names:
        value = getattr(args, name, None)
        if value is not None:
            out[name] = value
    return out


def _show(value: Any) -> int:
    print(json.dumps(value, indent=2, sort_keys=True))
    return 0


def _api(method: str, path: str, *fields: str, query: tuple[str, ...] = ()) -> Any:
    """A command calling `path` (formatted with the args) with `fields` as its body."""

    def run(args: argparse.Namespace) -> int:
        where = path.format(**{k: quote(str(v), safe="") for k, v in vars(args).items()})
        q = _fields(args, *query)
        if q:
            where += "?" + urlencode(q)
        body = _fields(args, *fields) if method in ("POST", "PATCH") else None
        return _show(_Admin(args).call(method, where, body))

    return run


def _connection(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML file (for the admin address and token file)")
    p.add_argument("--admin-url", help="e.g. http://127.0.0.1:9090")
    p.add_argument("--token", help="admin token (prefer $LUNOS_ADMIN_TOKEN)")


def _account_fields(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name")
    p.add_argument("--email")
    p.add_argument("--plan")
    p.add_argument("--allowed-regions", dest="allowed_regions", nargs="*")
    p.add_argument("--allowed-providers", dest="allowed_providers", nargs="*")


def _group(sub: Any, name: str, help: str) -> Any:
    return sub.add_parser(name, help=help).add_subparsers(dest="action", required=True)


def _online(group: Any, name: str, help: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = group.add_parser(name, help=help)
    _connection(p)
    return p


def add_commands(sub: Any) -> None:
    """Add the admin subcommands to `lunos-proxy`'s subparsers."""
    profile = ("name", "email", "plan", "allowed_regions", "allowed_providers")
    accounts = _group(sub, "accounts", "accounts and their data rights")
    p = _online(accounts, "create", "create an account")
    _account_fields(p)
    p.set_defaults(func=_api("POST", "/admin/accounts", *profile))
    p = _online(accounts, "list", "list accounts (or find one with --email)")
    p.add_argument("--email")
    p.set_defaults(func=_api("GET", "/admin/accounts", query=("email",)))
    for action, method, path, what in (
        ("show", "GET", "/admin/accounts/{account_id}", "show an account's profile"),
        ("export", "GET", "/admin/accounts/{account_id}/export", "everything held about it"),
        ("delete", "DELETE", "/admin/accounts/{account_id}", "erase it; billing is kept"),
    ):
        p = _online(accounts, action, what)
        p.add_argument("account_id")
        p.set_defaults(func=_api(method, path))
    p = _online(accounts, "update", "correct an account's profile")
    p.add_argument("account_id")
    _account_fields(p)
    p.set_defaults(func=_api("PATCH", "/admin/accounts/{account_id}", *profile))
    p = _online(accounts, "reencrypt", "re-encrypt every account under the current key")
    p.set_defaults(func=_api("POST", "/admin/accounts/reencrypt"))

    keys = _group(sub, "keys", "API keys")
    p = _online(keys, "create", "create a key (shown once)")
    p.add_argument("account_id")
    p.add_argument("--name")
    p.add_argument("--expires-in", dest="expires_in", type=float, help="seconds")
    p.add_argument("--allowed-models", dest="allowed_models", nargs="*")
    p.add_argument("--plan")
    p.add_argument("--budget-micros", dest="budget_micros", type=int)
    key_fields = ("name", "expires_in", "allowed_models", "plan", "budget_micros")
    p.set_defaults(func=_api("POST", "/admin/accounts/{account_id}/keys", *key_fields))
    p = _online(keys, "list", "an account's keys (prefixes only)")
    p.add_argument("account_id")
    p.set_defaults(func=_api("GET", "/admin/accounts/{account_id}/keys"))
    p = _online(keys, "revoke", "revoke a key on every instance")
    p.add_argument("key_id")
    p.set_defaults(func=_api("POST", "/admin/keys/{key_id}/revoke"))
    p = _online(keys, "rotate", "new key; the old one works for a grace period")
    p.add_argument("key_id")
    p.add_argument("--grace", dest="grace_seconds", type=float, help="seconds (default 86400)")
    p.set_defaults(func=_api("POST", "/admin/keys/{key_id}/rotate", "grace_seconds"))
    p = keys.add_parser("hash", help="print a static key entry for the YAML (offline)")
    p.add_argument("--account", required=True)
    p.add_argument("--name", default="")
    p.add_argument("--stdin", action="store_true", help="hash the key on stdin, not a new one")
    p.add_argument("--config", help="YAML file (for its hash secret)")
    p.set_defaults(func=cmd_keys_hash)

    tokens = _group(sub, "tokens", "admin tokens")
    p = _online(tokens, "create", "create an admin token (shown once)")
    p.add_argument("--name", required=True)
    p.add_argument("--scope", choices=("read", "operator", "full"), required=True)
    p.set_defaults(func=_api("POST", "/admin/tokens", "name", "scope"))
    p = _online(tokens, "list", "admin tokens (prefixes only)")
    p.set_defaults(func=_api("GET", "/admin/tokens"))
    p = _online(tokens, "revoke", "delete an admin token")
    p.add_argument("token_id")
    p.set_defaults(func=_api("DELETE", "/admin/tokens/{token_id}"))

    p = sub.add_parser("audit", help="read the admin audit log")
    _connection(p)
    p.add_argument("--account-id", dest="account_id")
    p.add_argument("--limit", type=int)
    p.set_defaults(func=_api("GET", "/admin/audit", query=("account_id", "limit")))

    bans = _group(sub, "bans", "auth-failure bans of client addresses")
    p = _online(bans, "list", "bans in force: address, reason, expiry")
    p.set_defaults(func=_api("GET", "/admin/bans"))
    p = _online(bans, "lift", "lift an address's ban on every instance")
    p.add_argument("address", help="IPv4 or IPv6 address, or an IPv6 /64 as listed")
    p.set_defaults(func=_api("DELETE", "/admin/bans/{address}"))

    secrets = _group(sub, "secrets", "server secrets")
    p = secrets.add_parser("generate", help="print fresh secrets as environment variables")
    p.set_defaults(func=cmd_secrets_generate)
