"""Sender (mailbox) events. Passwords and DKIM keys travel only encrypted (``*_enc``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from events.registry import Event, register


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class SenderAdded(Event):
    TYPE = "sender.added"
    sender_id: str
    email: str
    from_name: str | None
    smtp: dict[str, Any]
    imap: dict[str, Any] | None
    daily_limit: int
    daily_limit_variation_pct: float
    bounce_rate_threshold: float
    max_connections: int = 4  # concurrent SMTP connections
    warmup: dict[str, Any] | None = None  # {start, increase_per_day, target}


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class SenderUpdated(Event):
    TYPE = "sender.updated"
    sender_id: str
    changes: dict[str, Any]


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class SenderDisabled(Event):
    """``status`` is ``disabled`` (bounce rate) or ``disconnected`` (login failed)."""

    TYPE = "sender.disabled"
    sender_id: str
    status: str
    reason: str


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class SenderReenabled(Event):
    TYPE = "sender.reenabled"
    sender_id: str


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class SenderRemoved(Event):
    TYPE = "sender.removed"
    sender_id: str


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class SenderDkimKeySet(Event):
    """The sender's DKIM key was generated or imported; it replaces any earlier key.

    The private key travels only encrypted by the vault (``private_key_enc``, dropped from every
    export like the other ``*_enc`` fields); ``public_key`` is the ``p=`` value of the TXT record.
    """

    TYPE = "sender.dkim_key_set"
    sender_id: str
    selector: str
    algorithm: str  # rsa-sha256 | ed25519-sha256
    public_key: str
    private_key_enc: str
