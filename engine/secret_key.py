"""The engine's secret key: where it lives beside a database, how it is read, created and checked.

One place for it because two kinds of callers need the same answer: :class:`engine.facade.CampaignEngine`
(which creates the key file on first use) and the audit tools of ``engine/service/audit.py``
(which must never create one: a new key would make every personal field unreadable). The key
comes from ``CAMPAIGN_ENGINE_SECRET_KEY`` when set, else from the file beside the database.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

ENV_VARIABLE = "CAMPAIGN_ENGINE_SECRET_KEY"
MIN_LENGTH = 16  # bytes: shorter keys are refused rather than stretched


def key_file_for(url: str) -> Path:
    """The key file of a database: ``<file>.key`` beside a SQLite file, else ``./campaign-engine.key``."""
    if url.startswith("sqlite") and ":memory:" not in url:
        path = url.split(":///", 1)[1]
        return Path(path).with_name(Path(path).name + ".key")
    return Path("campaign-engine.key")


def secret_bytes(secret_key: str | bytes) -> bytes:
    """A key given as text or bytes, checked for length (``ValueError`` when too short)."""
    raw = secret_key.encode() if isinstance(secret_key, str) else secret_key
    if len(raw) < MIN_LENGTH:
        raise ValueError(f"secret_key must be at least {MIN_LENGTH} bytes long")
    return raw


def load_or_create_secret(url: str) -> bytes:
    """The secret kept beside the database (mode 0600), created on first use; never inside it."""
    path = key_file_for(url)
    if path.exists():
        return bytes.fromhex(path.read_text().strip())
    secret = secrets.token_bytes(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret.hex())
    return secret


def existing_secret(url: str) -> bytes | None:
    """The key from the environment, else from the database's key file; ``None`` when neither
    exists (never a new one: the caller decides whether that is an error)."""
    env = os.environ.get(ENV_VARIABLE)
    if env:
        return secret_bytes(env)
    path = key_file_for(url)
    if path.exists():
        return bytes.fromhex(path.read_text().strip())
    return None


__all__ = ["ENV_VARIABLE", "existing_secret", "key_file_for", "load_or_create_secret", "secret_bytes"]
