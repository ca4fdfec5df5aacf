"""Contact, suppression and list events.

Personal fields are listed in ``PERSONAL``: the store encrypts them with the contact's own key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from events.registry import Event, register


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class ContactCreated(Event):
    """``email_hash`` is a keyed hash of the normalised address, kept after erasure."""

    TYPE = "contact.created"
    PERSONAL = ("email", "first_name", "last_name", "company", "custom_fields")
    contact_id: str
    email: str | None
    email_hash: str
    email_domain: str
    first_name: str | None
    last_name: str | None
    company: str | None
    timezone: str | None
    custom_fields: dict[str, Any] | None


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class ContactUpdated(Event):
    """``changes`` may hold personal fields, so the whole dict is encrypted."""

    TYPE = "contact.updated"
    PERSONAL = ("changes",)
    contact_id: str
    changes: dict[str, Any] | None


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class ContactErased(Event):
    TYPE = "contact.erased"
    contact_id: str
    email_hash: str | None = None


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class ContactUnsubscribed(Event):
    TYPE = "contact.unsubscribed"
    contact_id: str
    reason: str
    campaign_id: str | None = None
    email_id: str | None = None


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class SuppressionAdded(Event):
    """An email suppression keeps only ``value_hash`` in clear; the address itself is personal."""

    TYPE = "suppression.added"
    PERSONAL = ("value",)
    SUBJECT = "subject_id"
    subject_id: str
    kind: str
    value: str | None
    value_hash: str
    reason: str


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class SuppressionRemoved(Event):
    TYPE = "suppression.removed"
    kind: str
    value_hash: str


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class ListCreated(Event):
    TYPE = "list.created"
    list_id: str
    name: str


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class ListContactsAdded(Event):
    TYPE = "list.contacts_added"
    list_id: str
    contact_ids: tuple[str, ...]


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class ListContactsRemoved(Event):
    TYPE = "list.contacts_removed"
    list_id: str
    contact_ids: tuple[str, ...]
