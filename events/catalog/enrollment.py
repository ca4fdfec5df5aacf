"""Enrollment events: one stream per (campaign, contact), so one contact's story is one stream."""

from __future__ import annotations

from dataclasses import dataclass

from events.registry import Event, register


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class EnrollmentCreated(Event):
    TYPE = "enrollment.created"
    enrollment_id: str
    campaign_id: str
    contact_id: str
    batch_number: int | None
    priority: int
    seq: int


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class EnrollmentSkipped(Event):
    """A contact not enrolled (or dropped before its first send) for ``reason``.

    Skips decided at enrollment go on the campaign's stream with ``enrollment_id`` None; a skip
    found later (an MX check at first send) goes on the enrollment's stream.
    """

    TYPE = "enrollment.skipped"
    campaign_id: str
    contact_id: str
    reason: str
    enrollment_id: str | None = None


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class EnrollmentRemoved(Event):
    TYPE = "enrollment.removed"
    enrollment_id: str
    campaign_id: str
    contact_id: str


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class EnrollmentCompleted(Event):
    TYPE = "enrollment.completed"
    enrollment_id: str
    campaign_id: str
    contact_id: str


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class EnrollmentStopped(Event):
    """``reason``: replied, bounced, unsubscribed, campaign_cancelled, company_replied, failed..."""

    TYPE = "enrollment.stopped"
    enrollment_id: str
    campaign_id: str
    contact_id: str
    reason: str
    status: str = "stopped"
