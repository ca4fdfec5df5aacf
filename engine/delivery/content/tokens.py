"""Signed tokens for tracking and unsubscribe links.

A token carries ids only (email id, link index, workspace and contact ids), never an address or a
name: it ends up in URLs that proxies, scanners and browser histories keep. It is
``base64url(payload) "." base64url(mac)`` where the payload is compact JSON and the MAC is
HMAC-SHA256, truncated to 128 bits, over the kind and the payload. The kind is inside the MAC, so
an open token can never be replayed as a click or an unsubscribe token.

The signing key is derived from the engine's secret (which also encrypts personal data), so a
token's MAC never uses the encryption key itself.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Final

__all__ = [
    "KIND_CLICK",
    "KIND_OPEN",
    "KIND_UNSUBSCRIBE",
    "ClickToken",
    "OpenToken",
    "UnsubscribeToken",
    "click_token",
    "open_token",
    "read_click",
    "read_open",
    "read_unsubscribe",
    "sign",
    "unsubscribe_token",
    "verify",
]

KIND_OPEN: Final = "o"
KIND_CLICK: Final = "c"
KIND_UNSUBSCRIBE: Final = "u"

_MAC_BYTES: Final = 16  # 128 bits: forging needs 2**128 tries; keeps the URL short
_MAX_TOKEN_CHARS: Final = 1024  # refuse absurd input before doing any work on it
_KEY_LABEL: Final = b"campaign-engine/tracking-token/v1"

Payload = dict[str, str | int]


@functools.lru_cache(maxsize=16)
def _signing_key(secret: bytes) -> bytes:
    return hmac.new(secret, _KEY_LABEL, hashlib.sha256).digest()


def _mac(secret: bytes, kind: str, body: bytes) -> bytes:
    if not isinstance(secret, bytes | bytearray) or not secret:
        raise ValueError("secret must be non-empty bytes")
    message = kind.encode("ascii") + b"\x00" + body
    return hmac.digest(_signing_key(bytes(secret)), message, "sha256")[:_MAC_BYTES]


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    return base64.urlsafe_b64decode(padded.encode("ascii"))


def _check_kind(kind: str) -> None:
    if not kind or not kind.isascii() or not kind.isalpha():
        raise ValueError(f"token kind must be ASCII letters, not {kind!r}")


def sign(secret: bytes, kind: str, payload: Payload) -> str:
    """A URL-safe token for ``payload`` (string keys; str or int values) of ``kind``.

    The same inputs always give the same token (keys are sorted), so a message rebuilt for a retry
    carries the same links.
    """
    _check_kind(kind)
    for key, value in payload.items():
        if not isinstance(key, str):
            raise TypeError(f"token payload keys must be str, not {type(key).__name__}")
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise TypeError(f"token payload value for {key!r} must be str or int")
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()
    return f"{_b64encode(body)}.{_b64encode(_mac(secret, kind, body))}"


def verify(secret: bytes, kind: str, token: str) -> Payload | None:
    """The payload of a genuine token of ``kind``; ``None`` for anything forged, altered or foreign.

    The MAC is compared in constant time before the payload is parsed, so unauthenticated input
    never reaches the JSON decoder.
    """
    _check_kind(kind)
    if not isinstance(token, str) or len(token) > _MAX_TOKEN_CHARS or not token.isascii():
        return None
    body_text, dot, mac_text = token.partition(".")
    if not dot or not body_text or not mac_text:
        return None
    try:
        body = _b64decode(body_text)
        given = _b64decode(mac_text)
    except (binascii.Error, ValueError):
        return None
    # Re-encoding must give the same text: refuses alternative spellings of the same bytes.
    if _b64encode(body) != body_text or _b64encode(given) != mac_text:
        return None
    if not hmac.compare_digest(given, _mac(secret, kind, body)):
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    payload: Payload = {}
    for key, value in data.items():
        if isinstance(value, bool) or not isinstance(value, str | int):
            return None
        payload[key] = value
    return payload


@dataclass(frozen=True, slots=True)
class OpenToken:
    """What an open-pixel token proves: this email was fetched by someone."""

    email_id: str


@dataclass(frozen=True, slots=True)
class ClickToken:
    """What a click token proves: this email's link number ``link_index`` (0-based) was followed."""

    email_id: str
    link_index: int


@dataclass(frozen=True, slots=True)
class UnsubscribeToken:
    """What an unsubscribe token proves: this contact asked out through this email."""

    workspace_id: str
    contact_id: str
    email_id: str


def open_token(secret: bytes, email_id: str) -> str:
    return sign(secret, KIND_OPEN, {"e": email_id})


def click_token(secret: bytes, email_id: str, link_index: int) -> str:
    if link_index < 0:
        raise ValueError("link_index must be >= 0")
    return sign(secret, KIND_CLICK, {"e": email_id, "i": link_index})


def unsubscribe_token(secret: bytes, workspace_id: str, contact_id: str, email_id: str) -> str:
    return sign(secret, KIND_UNSUBSCRIBE, {"w": workspace_id, "c": contact_id, "e": email_id})


def read_open(secret: bytes, token: str) -> OpenToken | None:
    data = verify(secret, KIND_OPEN, token)
    if data is None or set(data) != {"e"} or not isinstance(data["e"], str):
        return None
    return OpenToken(email_id=data["e"])


def read_click(secret: bytes, token: str) -> ClickToken | None:
    data = verify(secret, KIND_CLICK, token)
    if data is None or set(data) != {"e", "i"}:
        return None
    email_id, index = data["e"], data["i"]
    if not isinstance(email_id, str) or not isinstance(index, int) or index < 0:
        return None
    return ClickToken(email_id=email_id, link_index=index)


def read_unsubscribe(secret: bytes, token: str) -> UnsubscribeToken | None:
    data = verify(secret, KIND_UNSUBSCRIBE, token)
    if data is None or set(data) != {"w", "c", "e"}:
        return None
    workspace_id, contact_id, email_id = data["w"], data["c"], data["e"]
    if not (isinstance(workspace_id, str) and isinstance(contact_id, str) and isinstance(email_id, str)):
        return None
    return UnsubscribeToken(workspace_id=workspace_id, contact_id=contact_id, email_id=email_id)
