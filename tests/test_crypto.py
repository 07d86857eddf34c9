"""Encryption at rest, blind index, key rotation and where secrets come from."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from lunos_proxy.config import SecretsConfig
from lunos_proxy.crypto import (
    DEV_HASH_SECRET,
    DecryptError,
    Secrets,
    generate_encryption_key,
    load_secrets,
    secret_warnings,
)

HASH = "h" * 32


def test_encrypted_value_round_trips_and_hides_the_plaintext() -> None:
    s = Secrets(HASH, generate_encryption_key(), [])
    sealed = s.encrypt("ada@example.com", "acc_1:email")
    assert "ada" not in sealed and sealed.startswith(f"enc:v1:{s.current_key_id}:")
    assert s.decrypt(sealed, "acc_1:email") == "ada@example.com"
    assert s.encrypt("ada@example.com", "acc_1:email") != sealed  # fresh nonce each time


def test_ciphertext_moved_to_another_record_does_not_decrypt() -> None:
    s = Secrets(HASH, generate_encryption_key(), [])
    sealed = s.encrypt("Ada", "acc_1:name")
    with pytest.raises(DecryptError):
        s.decrypt(sealed, "acc_2:name")


def test_rotation_decrypts_old_values_and_seals_new_ones_with_the_first_key() -> None:
    old_key, new_key = generate_encryption_key(), generate_encryption_key()
    old = Secrets(HASH, old_key, [])
    sealed = old.encrypt("Ada", "c")
    rotated = Secrets(HASH, f"{new_key},{old_key}", [])
    assert rotated.decrypt(sealed, "c") == "Ada"
    assert not rotated.is_current(sealed)
    assert rotated.is_current(rotated.encrypt("Ada", "c"))
    with pytest.raises(DecryptError, match="not configured"):
        Secrets(HASH, new_key, []).decrypt(sealed, "c")


def test_blind_index_ignores_case_and_spaces_and_depends_on_the_secret() -> None:
    a, b = Secrets(HASH, generate_encryption_key(), []), Secrets("x" * 32, generate_encryption_key(), [])
    assert a.blind_index(" Ada@Example.com") == a.blind_index("ada@example.com")
    assert a.blind_index("ada@example.com") != b.blind_index("ada@example.com")
    assert "ada" not in a.blind_index("ada@example.com")


def test_bad_encryption_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="KEY_ID:BASE64URL of 32 bytes"):
        Secrets(HASH, "k1:c2hvcnQ", [])


def test_key_file_is_generated_private_once_and_warned_about(tmp_path: Path) -> None:
    path = tmp_path / "data" / "secrets.json"
    cfg = SecretsConfig(key_file=str(path), create_key_file=True)
    assert secret_warnings(cfg) == [
        f"secrets: key file {path} will be generated on first start (development only)"
    ]
    assert not path.exists()
    s = load_secrets(cfg)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    data = json.loads(path.read_text())
    assert data["generated"] is True
    assert s.key_hash("k") == Secrets(data["hash_secret"], data["encryption_keys"], []).key_hash("k")
    assert "generated on first start: development only" in s.warnings[0]


def test_config_values_win_over_the_key_file_and_dev_secret_is_warned_about(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    key = generate_encryption_key()
    path.write_text(json.dumps({"hash_secret": "f" * 40, "encryption_keys": key}))
    s = load_secrets(SecretsConfig(hash_secret=DEV_HASH_SECRET, key_file=str(path)))
    assert s.key_hash("k") == Secrets(DEV_HASH_SECRET, key, []).key_hash("k")
    assert s.warnings == [
        "secrets: hash_secret is the published development default: anyone can forge key "
        "hashes; set LUNOS_HASH_SECRET and re-hash static keys"
    ]


def test_production_secrets_give_no_warning() -> None:
    cfg = SecretsConfig(hash_secret="p" * 40, encryption_keys=generate_encryption_key())
    assert secret_warnings(cfg) == []
    assert load_secrets(cfg).warnings == []
