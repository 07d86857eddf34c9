"""Server secrets: the keyed hash of API keys, encryption of account PII at rest,
and the blind index that finds an account by email without storing it.

    secrets = load_secrets(config.secrets)
    secrets.key_hash("lk-...")                    # HMAC-SHA-256, hex
    sealed = secrets.encrypt("Ada", "acc_1:name") # "enc:v1:<key id>:<base64url>"
    secrets.decrypt(sealed, "acc_1:name")         # "Ada"
    secrets.blind_index("Ada@Example.com ")       # same as for "ada@example.com"

Encryption is AES-256-GCM with a fresh 96-bit nonce per value; the context
(account id and field) is authenticated data, so a ciphertext copied onto
another record or field does not decrypt. Every ciphertext names the key
that sealed it, so keys rotate: put the new key first in
`secrets.encryption_keys`, keep the old ones after it, reload, then
`lunos-proxy accounts reencrypt` rewrites old records under the new key.

Where secrets come from (`SecretsConfig`): each field from the config
(usually ``${ENV}`` references), else from `key_file`. With nothing at all
they are random for this process only (fine for tests, useless after a
restart). Two development conveniences are recognised and warned about:
the published `DEV_HASH_SECRET` and a key file this module generated.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets as random
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .config import MIN_HASH_SECRET as _MIN_SECRET
from .config import SecretsConfig, parse_encryption_keys
from .keys import hmac_hex

__all__ = [
    "DEV_HASH_SECRET",
    "DecryptError",
    "Secrets",
    "generate_encryption_key",
    "load_secrets",
    "secret_warnings",
]

# Published in config/lunos.yaml so that its demo key works out of the box.
# Anyone can compute key hashes with it: never use it where keys matter.
DEV_HASH_SECRET = "dev-only-lunos-hash-secret-not-for-production"
_SEALED = "enc:v1:"
_NONCE = 12


class DecryptError(Exception):
    """A ciphertext under an unknown key, or altered, or moved to another record."""


@dataclass
class _Material:
    hash_secret: str = ""
    encryption_keys: str = ""
    generated: bool = False
    warnings: list[str] = field(default_factory=list)


class Secrets:
    """The loaded secrets; cheap to call from the hot path."""

    def __init__(self, hash_secret: str, encryption_keys: str, warnings: list[str]) -> None:
        self._hash = hash_secret.encode()
        # Derived, so the blind index needs no secret of its own; it changes
        # with the hash secret, which invalidates every key anyway.
        self._index = bytes.fromhex(hmac_hex(self._hash, "lunos blind index v1"))
        self._keyed = hmac.new(self._hash, digestmod=hashlib.sha256)
        self._keys = parse_encryption_keys(encryption_keys)
        self.current_key_id = next(iter(self._keys))
        self.warnings = warnings

    def key_hash(self, key: str) -> str:
        # Every request hashes its key: a copy of a keyed HMAC skips keying
        # it again (2.0 -> 1.1 us against hmac.digest).
        h = self._keyed.copy()
        h.update(key.encode("utf-8", "surrogateescape"))
        return h.hexdigest()

    def blind_index(self, email: str) -> str:
        return hmac_hex(self._index, email.strip().lower())

    def encrypt(self, plaintext: str, context: str) -> str:
        if not plaintext:
            return ""
        nonce = os.urandom(_NONCE)
        aead = AESGCM(self._keys[self.current_key_id])
        sealed = aead.encrypt(nonce, plaintext.encode(), context.encode())
        body = base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
        return f"{_SEALED}{self.current_key_id}:{body}"

    def decrypt(self, sealed: str, context: str) -> str:
        if not sealed:
            return ""
        key_id, raw = _split(sealed)
        key = self._keys.get(key_id)
        if key is None:
            raise DecryptError(f"sealed with key {key_id!r}, which is not configured")
        try:
            plain = AESGCM(key).decrypt(raw[:_NONCE], raw[_NONCE:], context.encode())
        except InvalidTag:
            raise DecryptError("ciphertext altered or not made for this record") from None
        return plain.decode()

    def is_current(self, sealed: str) -> bool:
        """Sealed under the current key (or empty): nothing to re-encrypt."""
        return not sealed or _split(sealed)[0] == self.current_key_id


def _split(sealed: str) -> tuple[str, bytes]:
    if not sealed.startswith(_SEALED):
        raise DecryptError("not a sealed value")
    key_id, _, body = sealed[len(_SEALED) :].partition(":")
    try:
        return key_id, base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise DecryptError("sealed value is not base64") from None


def generate_encryption_key() -> str:
    """A fresh ``KEY_ID:BASE64URL`` entry for `secrets.encryption_keys`."""
    key = base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
    return f"k{random.token_hex(4)}:{key}"


def _read_key_file(path: str) -> dict[str, object] | None:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise ValueError(f"key file {path}: cannot read: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"key file {path}: expected a JSON object")
    return data


def _create_key_file(path: str) -> None:
    data = {
        "generated": True,
        "hash_secret": random.token_urlsafe(32),
        "encryption_keys": generate_encryption_key(),
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # another process made it first; it is read next
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f)


def _gather(cfg: SecretsConfig, *, create: bool) -> _Material:
    m = _Material(cfg.hash_secret, cfg.encryption_keys)
    if cfg.key_file and (not m.hash_secret or not m.encryption_keys):
        data = _read_key_file(cfg.key_file)
        if data is None and cfg.create_key_file:
            if create:
                _create_key_file(cfg.key_file)
                data = _read_key_file(cfg.key_file)
            else:
                m.warnings.append(
                    f"secrets: key file {cfg.key_file} will be generated on first start "
                    "(development only)"
                )
        if data is not None:
            m.hash_secret = m.hash_secret or str(data.get("hash_secret", ""))
            m.encryption_keys = m.encryption_keys or str(data.get("encryption_keys", ""))
            if data.get("generated"):
                m.generated = True
                m.warnings.append(
                    f"secrets: using {cfg.key_file}, generated on first start: development "
                    "only; set LUNOS_HASH_SECRET and LUNOS_ENCRYPTION_KEYS in production"
                )
    if m.hash_secret == DEV_HASH_SECRET:
        m.warnings.append(
            "secrets: hash_secret is the published development default: anyone can forge "
            "key hashes; set LUNOS_HASH_SECRET and re-hash static keys"
        )
    return m


def secret_warnings(cfg: SecretsConfig) -> list[str]:
    """Problems and development defaults, without creating anything (for `check`)."""
    try:
        m = _gather(cfg, create=False)
        warnings = list(m.warnings)
        if m.hash_secret and len(m.hash_secret) < _MIN_SECRET:
            warnings.append(f"secrets: hash_secret is shorter than {_MIN_SECRET} characters")
        if m.encryption_keys:
            parse_encryption_keys(m.encryption_keys)
        if not m.hash_secret or not m.encryption_keys:
            if not any("on first start" in w for w in warnings):
                warnings.append(
                    "secrets: none configured: random for each process, so keys and "
                    "encrypted accounts do not survive a restart"
                )
    except ValueError as e:
        warnings = [f"secrets: {e}"]
    return warnings


_loaded: dict[tuple[str, str, str, bool], Secrets] = {}


def load_secrets(cfg: SecretsConfig) -> Secrets:
    """The secrets `cfg` names, loaded once per distinct config (a reload that
    changes them gets new ones). Raises ValueError for unusable ones."""
    memo = (cfg.hash_secret, cfg.encryption_keys, cfg.key_file, cfg.create_key_file)
    found = _loaded.get(memo)
    if found is not None:
        return found
    m = _gather(cfg, create=True)
    if not m.hash_secret or not m.encryption_keys:
        m.warnings.append(
            "secrets: none configured: random for this process, so keys and encrypted "
            "accounts do not survive a restart"
        )
        m.hash_secret = m.hash_secret or random.token_urlsafe(32)
        m.encryption_keys = m.encryption_keys or generate_encryption_key()
    if len(m.hash_secret) < _MIN_SECRET:
        raise ValueError(f"secrets.hash_secret must be at least {_MIN_SECRET} characters")
    secrets = Secrets(m.hash_secret, m.encryption_keys, m.warnings)
    _loaded[memo] = secrets
    return secrets
