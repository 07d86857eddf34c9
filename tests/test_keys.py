"""Key format, display prefix, keyed hash and the headers a key may come in."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import yaml
from multidict import CIMultiDict

from lunos_proxy.config import SecretsConfig
from lunos_proxy.crypto import DEV_HASH_SECRET, load_secrets
from lunos_proxy.keys import display_prefix, hmac_hex, key_from_headers, new_id, new_key

ROOT = Path(__file__).resolve().parent.parent


def test_new_key_is_lk_and_32_random_urlsafe_bytes() -> None:
    key = new_key()
    assert key.startswith("lk-")
    assert len(base64.urlsafe_b64decode(key[3:] + "=")) == 32
    assert new_key() != key


def test_display_prefix_shows_six_random_characters() -> None:
    assert display_prefix("lk-AbC12xyz-rest") == "lk-AbC12x"
    assert display_prefix("lat-AbC12xyz-rest") == "lat-AbC12x"


def test_ids_name_their_kind_and_differ() -> None:
    a, b = new_id("key"), new_id("key")
    assert re.fullmatch(r"key_[0-9a-f]{16}", a) and a != b


def test_key_hash_is_hmac_sha256_of_the_server_secret() -> None:
    # RFC 4231 test case 2.
    assert hmac_hex(b"Jefe", "what do ya want for nothing?") == (
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )
    # The server's own hashing (a copy of a keyed HMAC per call) agrees, call after call.
    from lunos_proxy.crypto import Secrets

    secrets = Secrets("Jefe" * 8, "k1:" + "A" * 43, [])
    for key in ("lk-one", "lk-two", "lk-one"):
        assert secrets.key_hash(key) == hmac_hex(("Jefe" * 8).encode(), key)


def test_key_is_read_from_bearer_x_api_key_and_api_key_headers() -> None:
    assert key_from_headers(CIMultiDict({"Authorization": "Bearer lk-a"})) == "lk-a"
    assert key_from_headers(CIMultiDict({"authorization": "bearer  lk-b "})) == "lk-b"
    assert key_from_headers(CIMultiDict({"x-api-key": "lk-c"})) == "lk-c"
    assert key_from_headers(CIMultiDict({"api-key": "lk-d"})) == "lk-d"
    assert key_from_headers(CIMultiDict({"Authorization": "Basic xyz"})) is None
    assert key_from_headers(CIMultiDict({})) is None


def test_readme_demo_key_matches_the_static_key_in_the_default_config() -> None:
    readme = (ROOT / "README.md").read_text()
    [demo] = set(re.findall(r"lk-[A-Za-z0-9_-]{43}", readme))
    config = yaml.safe_load((ROOT / "config" / "lunos.yaml").read_text())
    [auth] = [p for p in config["pipeline"] if p["name"] == "auth"]
    [entry] = auth["settings"]["static_keys"]
    secrets = load_secrets(SecretsConfig(hash_secret=DEV_HASH_SECRET, encryption_keys="k:" + "A" * 43))
    assert entry["hash"] == secrets.key_hash(demo)
    assert entry["prefix"] == display_prefix(demo)
