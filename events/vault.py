"""The personal-data vault: per-subject keys that encrypt personal fields inside event data.

Each contact (more generally, each *subject*) gets its own random AES-256-GCM key, stored wrapped
under a key derived from the engine's secret key. Personal fields in an event's data are stored as
``pii:<base64>`` tokens. Erasure deletes the subject's key row: the events stay in the log (the
hash chain still verifies), but their personal fields can never be read again.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from collections.abc import Sequence
from enum import Enum
from json.encoder import encode_basestring_ascii
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from events import schema
from events.chain import GENESIS, event_hash

PII_PREFIX = "pii:"
SECRET_PREFIX = "enc:"
# What the key check value is an HMAC of. Fixed for ever: changing it would make every existing
# database look as if it had been created under another key.
KEY_CHECK_LABEL = b"campaign-engine key check v1"
NONCE_BYTES = 12  # AES-GCM's 96-bit nonce, random for every encryption
# The text a personal field is encrypted as: compact JSON with sorted keys. One encoder built once:
# ``json.dumps`` with non-default options builds a new one per call, which bulk imports pay per field.
_PLAIN_JSON = json.JSONEncoder(separators=(",", ":"), sort_keys=True).encode


def _plain_json(value: Any) -> bytes:
    """The JSON text a personal field other than a string is encrypted as.

    Custom fields, a flat object of strings, go through orjson (the same value when read back,
    several times faster); anything else through the standard library, which also keeps what
    orjson would not (non-finite floats).
    """
    if type(value) is dict and all(type(item) is str for item in value.values()):
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:  # a key that is not a string, a lone surrogate
            pass
    return _PLAIN_JSON(value).encode()


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
        # Its own derived key, so the stored check value says nothing about any key in use.
        self._check_key = _derive(secret, b"key-check")

    # -- key check ----------------------------------------------------------------------------
    def key_check_value(self) -> str:
        """The value a database records when it is created, to recognise its secret key later.

        Opening a database under another key would chain new events under the wrong HMAC key and
        fail to decrypt every personal field; comparing this value first refuses such an open
        before anything is written. It is an HMAC of a fixed label, so it reveals nothing of the key.
        """
        return hmac.new(self._check_key, KEY_CHECK_LABEL, hashlib.sha256).hexdigest()

    def matches_key_check(self, recorded: str) -> bool:
        """Whether ``recorded`` (a database's check value) was made under this vault's secret key."""
        return hmac.compare_digest(self.key_check_value(), recorded)

    # -- subject keys -------------------------------------------------------------------------
    @staticmethod
    def new_key() -> bytes:
        return AESGCM.generate_key(bit_length=256)

    def wrap(self, subject_id: str, key: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._wrap.encrypt(nonce, key, subject_id.encode())

    def wrap_many(self, keys: dict[str, bytes]) -> list[tuple[str, bytes]]:
        """(subject, wrapped key) for each of ``keys``: :meth:`wrap` with one read of the system's
        random source for all the nonces (an import wraps thousands of new keys per append)."""
        nonces = os.urandom(NONCE_BYTES * len(keys))
        encrypt = self._wrap.encrypt
        out: list[tuple[str, bytes]] = []
        for index, (subject_id, key) in enumerate(keys.items()):
            nonce = nonces[index * NONCE_BYTES:(index + 1) * NONCE_BYTES]
            out.append((subject_id, nonce + encrypt(nonce, key, subject_id.encode())))
        return out

    def unwrap(self, subject_id: str, wrapped: bytes) -> bytes:
        return self._wrap.decrypt(wrapped[:12], wrapped[12:], subject_id.encode())

    # -- personal fields ----------------------------------------------------------------------
    @staticmethod
    def encrypt_field(key: bytes, value: Any) -> str:
        nonce = os.urandom(12)
        plain = json.dumps(value, separators=(",", ":"), sort_keys=True).encode()
        return PII_PREFIX + base64.b64encode(nonce + AESGCM(key).encrypt(nonce, plain, None)).decode()

    @staticmethod
    def encrypt_fields(key: bytes, data: dict[str, Any], names: Sequence[str]) -> None:
        """:meth:`encrypt_field` for each of `names` present in `data` (in place), the same tokens.

        Built for the append of a bulk import, which pays this per event: one cipher for the
        event rather than one per field, one read of the random source for all its nonces, and a
        string (most personal fields) encoded by the JSON encoder's own C routine, which writes
        exactly what ``json.dumps`` writes for it.
        """
        present = [name for name in names if data.get(name) is not None]
        if not present:
            return
        encrypt = AESGCM(key).encrypt
        nonces = os.urandom(NONCE_BYTES * len(present))
        for index, name in enumerate(present):
            value = data[name]
            plain = encode_basestring_ascii(value).encode() if type(value) is str else _plain_json(value)
            nonce = nonces[index * NONCE_BYTES:(index + 1) * NONCE_BYTES]
            sealed = binascii.b2a_base64(nonce + encrypt(nonce, plain, None), newline=False)
            data[name] = PII_PREFIX + sealed.decode()

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
        # one-shot digest: several times cheaper than hmac.new(...) per call on bulk imports
        return hmac.digest(self._hash_key, value.strip().lower().encode(), "sha256").hex()


# -- the database's key check -----------------------------------------------------------------
class KeyCheck(Enum):
    """What :func:`check_database_key` found."""

    MATCHED = "matched"  # the recorded value is this key's
    RECORDED = "recorded"  # a new (empty) database: this key's value is now recorded
    RECORDED_EXISTING = "recorded_existing"  # a database from before key checks, proven to be this key's
    MISMATCH = "mismatch"  # another key's database: refuse it


async def check_database_key(conn: AsyncConnection, vault: Vault) -> KeyCheck:
    """Compare the database's key check value with ``vault``'s; record it when there is none yet.

    Run in its own transaction before anything else touches the database. A database created
    before key checks existed has no value: it gets this key's only when the data already in it
    proves the key (a subject key unwraps, or else the last event's hash chains under it), so
    that a first open with the wrong key cannot lock the right one out. Two processes opening a
    new database at once both insert with ``ON CONFLICT DO NOTHING`` and compare what won.
    """
    recorded = (await conn.execute(select(schema.key_check.c.check_value)
                                   .where(schema.key_check.c.id == 1))).scalar()
    if recorded is not None:
        return KeyCheck.MATCHED if vault.matches_key_check(recorded) else KeyCheck.MISMATCH
    proven = await _existing_data_proves_key(conn, vault)
    if proven is False:
        return KeyCheck.MISMATCH
    await conn.execute(text("INSERT INTO key_check (id, check_value) VALUES (1, :value) ON CONFLICT (id) DO NOTHING"),
                       {"value": vault.key_check_value()})
    winner = (await conn.execute(select(schema.key_check.c.check_value)
                                 .where(schema.key_check.c.id == 1))).scalar_one()
    if not vault.matches_key_check(winner):
        return KeyCheck.MISMATCH
    return KeyCheck.RECORDED if proven is None else KeyCheck.RECORDED_EXISTING


async def _existing_data_proves_key(conn: AsyncConnection, vault: Vault) -> bool | None:
    """True or False when the data in the database says whether ``vault`` holds its key; None when
    there is nothing to tell by (an empty database)."""
    keys = schema.vault_keys.c
    wrapped = (await conn.execute(select(keys.subject_id, keys.wrapped_key).limit(1))).first()
    if wrapped is not None:
        try:
            vault.unwrap(wrapped.subject_id, wrapped.wrapped_key)
        except InvalidTag:
            return False
        return True
    ev = schema.events.c
    found = (await conn.execute(select(schema.events).where(
        ev.position == select(func.max(ev.position)).scalar_subquery()))).first()
    if found is None:
        return None
    last = found._mapping
    prev = (await conn.execute(select(ev.hash).where(ev.stream == last["stream"],
                                                     ev.version == last["version"] - 1))).scalar()
    computed = event_hash(prev or GENESIS, stream=last["stream"], version=last["version"], type_name=last["type"],
                          type_version=last["type_version"], data=last["data"], metadata=last["metadata"],
                          recorded_at=last["recorded_at"], workspace_id=last["workspace_id"], key=vault.chain_key)
    return hmac.compare_digest(computed, last["hash"])
