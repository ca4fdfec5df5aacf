"""Workspace, API key and webhook events."""

from __future__ import annotations

from dataclasses import dataclass

from events.registry import Event, register


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
    """Only the key's SHA-256 is stored; the plaintext is shown once to whoever created it."""

    TYPE = "api_key.created"
    workspace_id: str
    key_id: str
    key_hash: str
    prefix: str


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class ApiKeyRevoked(Event):
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
