"""Email events, all on the enrollment's stream. ``email_id`` is ``<enrollment_id>.<step>``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from events.registry import Event, register


@dataclass(frozen=True, slots=True, kw_only=True)
class EmailEvent(Event):
    enrollment_id: str
    campaign_id: str
    contact_id: str
    email_id: str
    step: int


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class EmailScheduled(EmailEvent):
    """``due_at`` is the earliest moment the step may go; the planner picks the real slot."""

    TYPE = "email.scheduled"
    due_at: datetime
    sender_id: str | None
    priority: int = 0
    seq: int = 0


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class EmailClaimed(EmailEvent):
    """Committed before SMTP is spoken: a claim with no outcome is never re-sent blindly."""

    TYPE = "email.claimed"
    sender_id: str
    message_id: str
    lease_until: datetime
    attempt: int = 1
    # The campaign's timezone when it was claimed: the local day and hour the claim counts in
    # against the campaign's daily_limit and max_per_hour (projections/usage.py).
    timezone: str = "UTC"
    # The recipient's domain, for the schedule's per-domain limits (None in events written before).
    recipient_domain: str | None = None


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class EmailSent(EmailEvent):
    TYPE = "email.sent"
    PERSONAL = ("links",)  # rendered links may carry merge-tag values
    sender_id: str
    message_id: str
    smtp_code: int | None
    links: tuple[str, ...] = ()
    variant: str | None = None  # the step's A/B variant id sent (None: the step has no variants)


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class EmailDeferred(EmailEvent):
    TYPE = "email.deferred"
    sender_id: str
    code: int | None
    message: str
    retry_at: datetime
    attempt: int
    # The claim this deferral undoes (its time and the campaign's timezone then): nothing was
    # delivered, so it stops counting against the limits. None in events written before.
    claimed_at: datetime | None = None
    timezone: str | None = None
    recipient_domain: str | None = None


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class EmailFailed(EmailEvent):
    TYPE = "email.failed"
    sender_id: str | None
    code: int | None
    message: str


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class EmailUncertain(EmailEvent):
    TYPE = "email.uncertain"
    sender_id: str
    message: str


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class EmailCancelled(EmailEvent):
    TYPE = "email.cancelled"
    reason: str


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class EmailBounced(EmailEvent):
    """``bounce_type`` hard/soft/block; ``source`` smtp (during sending) or dsn (a report later)."""

    TYPE = "email.bounced"
    sender_id: str | None
    bounce_type: str
    reason: str
    status: str | None
    code: int | None
    source: str
    variant: str | None = None  # the A/B variant refused during sending (None for a DSN or no variants)


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class EmailOpened(EmailEvent):
    TYPE = "email.opened"
    prefetch: bool = False
    user_agent: str | None = None


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class EmailClicked(EmailEvent):
    TYPE = "email.clicked"
    PERSONAL = ("url",)  # a rendered link may carry merge-tag values
    url: str
    link_index: int
    # A link scanner or automated client followed the link (engine/service/tracking.py): recorded,
    # never counted as a person's click. False in events written before.
    prefetch: bool = False
    user_agent: str | None = None


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class EmailReplied(EmailEvent):
    TYPE = "email.replied"
    out_of_office: bool
    message_id: str | None
    received_at: datetime | None = None


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class EmailComplained(EmailEvent):
    TYPE = "email.complained"
    feedback_type: str


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class TestEmailSent(Event):
    """A test send: recorded for the audit trail, never counted in stats."""

    TYPE = "test_email.sent"
    campaign_id: str
    recipients: tuple[str, ...]
    steps: int
    outcome: dict[str, Any]


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class EmailDelayed(EmailEvent):
    """A delivery status notification with ``Action: delayed``: a remote MTA still holds the
    message and keeps trying. It is a warning, not a bounce (the message may yet be delivered),
    so it changes no email status, no bounce count and no enrollment; it is kept for the
    activity feed and the audit trail. ``reason`` is the classifier's vocabulary, never the
    diagnostic text (which often names the address, and events outlive an erasure).
    ``will_retry_until`` is the DSN's ``Will-Retry-Until`` when the MTA gave one."""

    TYPE = "email.delayed"
    sender_id: str | None
    status: str | None
    reason: str
    code: int | None = None
    will_retry_until: datetime | None = None


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class EmailReleased(EmailEvent):
    """A claim given back before any SMTP was spoken for it: a pause, a stop, a disabled sender or
    a shutdown came first. The email waits in the queue again (``email.cancelled`` follows when
    the stop ends its enrollment); it is neither sent nor uncertain, and the claim stops counting
    against the limits (``claimed_at`` and ``timezone`` name its buckets, as on a deferral)."""

    TYPE = "email.released"
    sender_id: str
    reason: str
    claimed_at: datetime
    timezone: str
    recipient_domain: str | None = None


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class EmailQuarantined(EmailEvent):
    """A poison message: worker processes died ``deaths`` times while building this email, before
    any SMTP was spoken for it. It is set aside for good (never sent, never retried) so that the
    rest of the queue keeps going; its enrollment stops with reason ``quarantined``. Like a release,
    the claim stops counting against the limits (``claimed_at``, ``timezone`` name its buckets)."""

    TYPE = "email.quarantined"
    sender_id: str
    reason: str
    deaths: int
    claimed_at: datetime
    timezone: str
    recipient_domain: str | None = None
