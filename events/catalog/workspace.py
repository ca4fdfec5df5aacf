"""Workspace, API key and webhook events."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from events.registry import Event, register, upcaster


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class WorkspaceCreated(Event):
    TYPE = "workspace.created"
    workspace_id: str
    name: str
    monthly_limit: int | None
    require_approval: bool


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class ApiKeyCreated(Event):
    """Only the key's SHA-256 is stored; the plaintext is shown once to whoever created it.

    ``prefix``: the key's first characters (8 since version 2), enough to recognise a key in a
    list without being able to use it. ``name``: what the key is for, set by whoever created it.
    """

    TYPE = "api_key.created"
    VERSION = 2
    workspace_id: str
    key_id: str
    key_hash: str
    prefix: str
    name: str


@upcaster("api_key.created", 1)
def _api_key_named(data: dict[str, Any]) -> dict[str, Any]:
    """Version 1 keys had no name; they were all created with their workspace."""
    return {**data, "name": "initial"}


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class ApiKeyRevoked(Event):
    """From this event on the key answers 401; a workspace's last live key is never revoked."""

    TYPE = "api_key.revoked"
    workspace_id: str
    key_id: str


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookCreated(Event):
    """The signing secret is stored encrypted (``secret_enc``) by the service."""

    TYPE = "webhook.created"
    webhook_id: str
    url: str
    event_types: tuple[str, ...]
    secret_enc: str


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookDeleted(Event):
    TYPE = "webhook.deleted"
    webhook_id: str
