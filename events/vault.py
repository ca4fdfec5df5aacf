"""The personal-data vault: per-subject keys that encrypt personal fields inside event data.

Each contact (more generally, each *subject*) gets its own random AES-256-GCM key, stored wrapped
under a key derived from the engine's secret key. Personal fields in an event's data are stored as
``pii:<base64>`` tokens. Erasure deletes the subject's key row: the events stay in the log (the
hash chain still verifies), but their personal fields can never be read again.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PII_PREFIX = "pii:"
SECRET_PREFIX = "enc:"


def _derive(secret: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=SHA256(), length=32, salt=b"campaign-engine", info=purpose).derive(secret)


class Vault:
    """Key wrapping, field encryption and keyed hashing, all derived from one secret key."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the secret key must be at least 16 bytes")
        self._wrap = AESGCM(_derive(secret, b"vault-wrap"))
        self._secrets = AESGCM(_derive(secret, b"secrets"))
        self._hash_key = _derive(secret, b"lookup-hash")
        self.token_key = _derive(secret, b"tracking-tokens")
        self.chain_key = _derive(secret, b"hash-chain")

    # -- subject keys -------------------------------------------------------------------------
    @staticmethod
    def new_key() -> bytes:
        return AESGCM.generate_key(bit_length=256)

    def wrap(self, subject_id: str, key: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._wrap.encrypt(nonce, key, subject_id.encode())

    def unwrap(self, subject_id: str, wrapped: bytes) -> bytes:
        return self._wrap.decrypt(wrapped[:12], wrapped[12:], subject_id.encode())

    # -- personal fields ----------------------------------------------------------------------
    @staticmethod
    def encrypt_field(key: bytes, value: Any) -> str:
        nonce = os.urandom(12)
        plain = json.dumps(value, separators=(",", ":"), sort_keys=True).encode()
        return PII_PREFIX + base64.b64encode(nonce + AESGCM(key).encrypt(nonce, plain, None)).decode()

    @staticmethod
    def decrypt_field(key: bytes | None, token: Any) -> Any:
        """The clear value, or None when the key was destroyed (erased)."""
        if not isinstance(token, str) or not token.startswith(PII_PREFIX):
            return token
        if key is None:
            return None
        raw = base64.b64decode(token[len(PII_PREFIX):])
        return json.loads(AESGCM(key).decrypt(raw[:12], raw[12:], None))

    # -- secrets (SMTP / IMAP passwords, webhook secrets) ------------------------------------
    def encrypt_secret(self, value: str) -> str:
        nonce = os.urandom(12)
        return SECRET_PREFIX + base64.b64encode(nonce + self._secrets.encrypt(nonce, value.encode(), None)).decode()

    def decrypt_secret(self, token: str) -> str:
        if not token.startswith(SECRET_PREFIX):
            raise ValueError("not an encrypted secret")
        raw = base64.b64decode(token[len(SECRET_PREFIX):])
        return self._secrets.decrypt(raw[:12], raw[12:], None).decode()

    # -- keyed hashes -------------------------------------------------------------------------
    def lookup_hash(self, value: str) -> str:
        """A keyed hash for equality look-ups that must outlive erasure (suppressions)."""
        return hmac.new(self._hash_key, value.strip().lower().encode(), hashlib.sha256).hexdigest()
