"""Enrollment decisions: who joins a campaign, who is skipped and why, and the rule-tree filter.

Everything here is pure: facts about contacts are looked up by the service beforehand.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from engine.delivery.bounces import refusal_type  # the one RFC 3463 status rule, the DSN classifier's
from engine.domain.campaign import CampaignState
from engine.domain.definition import CampaignSettings
from engine.errors import InvalidState
from events.catalog import email as em
from events.catalog import enrollment as en
from events.registry import Event

# A well-known list of free mailbox providers, for allow_free_email_domains and company replies.
FREE_EMAIL_DOMAINS = frozenset({
    "gmail.com", "googlemail.com", "yahoo.com", "yahoo.co.uk", "yahoo.fr", "ymail.com", "hotmail.com",
    "hotmail.co.uk", "hotmail.fr", "outlook.com", "live.com", "msn.com", "aol.com", "icloud.com", "me.com",
    "mac.com", "gmx.com", "gmx.de", "gmx.net", "web.de", "mail.com", "mail.ru", "yandex.ru", "yandex.com",
    "protonmail.com", "proton.me", "zoho.com", "qq.com", "163.com", "126.com", "orange.fr", "free.fr",
    "laposte.net", "libero.it", "t-online.de", "comcast.net", "att.net", "verizon.net", "fastmail.com",
})

ENROLLABLE = frozenset({"draft", "scheduled", "active", "paused"})
SKIP_REASONS = ("already_enrolled", "duplicate_elsewhere", "suppressed", "unsubscribed", "previously_bounced",
                "previously_replied", "free_email_domain", "mx_invalid")


@dataclass(frozen=True, slots=True)
class ContactFacts:
    """What enrollment needs to know about one contact (from the read models)."""

    contact_id: str
    email_domain: str
    suppressed: bool
    unsubscribed: bool
    bounced: bool
    replied: bool
    enrolled_here: bool
    enrolled_elsewhere: bool
    same_outreach_elsewhere: bool


def skip_reason(settings: CampaignSettings, f: ContactFacts) -> str | None:
    """The first reason to skip this contact, in the contract's order, or None.

    ``unsubscribed`` comes before ``suppressed`` although the contract lists them the other way:
    unsubscribing also suppresses the address, so checking the suppression first would hide the
    more specific reason for good (contract section 6: the most specific reason wins). A
    suppression of a contact who never unsubscribed is still reported as ``suppressed``.
    """
    if f.enrolled_here:
        return "already_enrolled"
    if f.same_outreach_elsewhere or (settings.skip_if_enrolled_elsewhere and f.enrolled_elsewhere):
        return "duplicate_elsewhere"
    if f.unsubscribed:
        return "unsubscribed"
    if f.suppressed:
        return "suppressed"
    if settings.skip_previously_bounced and f.bounced:
        return "previously_bounced"
    if settings.skip_previously_replied and f.replied:
        return "previously_replied"
    if not settings.allow_free_email_domains and f.email_domain in FREE_EMAIL_DOMAINS:
        return "free_email_domain"
    return None


def first_due(campaign: CampaignState, now: datetime) -> datetime:
    launch_at = campaign.definition.schedule.launch_at
    if launch_at is not None:
        return max(now, launch_at)
    return now


def releases_now(campaign: CampaignState, batch_number: int | None) -> bool:
    """Whether a new enrollment's first email is scheduled at once (launched, batch released)."""
    if campaign.status not in ("active", "scheduled", "paused"):
        return False
    if campaign.definition.settings.manual_batches:
        return batch_number in campaign.dispatched_batches
    return True


@dataclass(frozen=True, slots=True)
class EnrollDecision:
    batches: list[tuple[str, list[Event]]]  # (stream, events)
    added: int
    skipped: dict[str, int]


def decide_enroll(
    campaign: CampaignState,
    facts: Sequence[ContactFacts],
    *,
    new_ids: Sequence[str],
    now: datetime,
    batch_number: int | None,
    priority: int,
    first_seq: int,
) -> EnrollDecision:
    if campaign.status not in ENROLLABLE or campaign.id is None:
        raise InvalidState(campaign.status, "enroll contacts into")
    settings = campaign.definition.settings
    if settings.manual_batches and batch_number is None:
        batch_number = 1
    release = releases_now(campaign, batch_number)
    due = first_due(campaign, now)
    skipped: dict[str, int] = {}
    skip_events: list[Event] = []
    batches: list[tuple[str, list[Event]]] = []
    seq = first_seq
    seen: set[str] = set()
    for f, enrollment_id in zip(facts, new_ids, strict=True):
        reason = "already_enrolled" if f.contact_id in seen else skip_reason(settings, f)
        seen.add(f.contact_id)
        if reason:
            skipped[reason] = skipped.get(reason, 0) + 1
            skip_events.append(en.EnrollmentSkipped(campaign_id=campaign.id, contact_id=f.contact_id, reason=reason))
            continue
        seq += 1
        events: list[Event] = [en.EnrollmentCreated(
            enrollment_id=enrollment_id, campaign_id=campaign.id, contact_id=f.contact_id,
            batch_number=batch_number, priority=priority, seq=seq)]
        if release:
            events.append(schedule_step(enrollment_id, campaign.id, f.contact_id, 1, due, None, priority, seq))
        batches.append((f"enrollment-{enrollment_id}", events))
    if skip_events:
        batches.append((f"campaign-{campaign.id}", skip_events))
    return EnrollDecision(batches=batches, added=len(batches) - (1 if skip_events else 0), skipped=skipped)


def schedule_step(enrollment_id: str, campaign_id: str, contact_id: str, step: int, due_at: datetime,
                  sender_id: str | None, priority: int, seq: int) -> em.EmailScheduled:
    return em.EmailScheduled(enrollment_id=enrollment_id, campaign_id=campaign_id, contact_id=contact_id,
                             email_id=f"{enrollment_id}.{step}", step=step, due_at=due_at, sender_id=sender_id,
                             priority=priority, seq=seq)


# -- the rule-tree filter ---------------------------------------------------------------------
def _field(contact: Mapping[str, Any], name: str) -> Any:
    if name.startswith("custom."):
        return (contact.get("custom_fields") or {}).get(name[len("custom."):])
    return contact.get(name)


def _text(value: Any) -> str:
    return "" if value is None else str(value).lower()


def matches(rule_tree: Mapping[str, Any], contact: Mapping[str, Any]) -> bool:
    """Evaluate a rule tree ``{operator, rules: [{field, op, value} | tree]}`` against a contact."""
    results = []
    for rule in rule_tree.get("rules") or []:
        if "rules" in rule:
            results.append(matches(rule, contact))
            continue
        value = _field(contact, rule["field"])
        op, want = rule["op"], rule.get("value")
        if op == "exists":
            ok = (value not in (None, "")) == (want is not False)
        elif op == "eq":
            ok = _text(value) == _text(want)
        elif op == "neq":
            ok = _text(value) != _text(want)
        elif op == "contains":
            ok = _text(want) in _text(value)
        elif op == "not_contains":
            ok = _text(want) not in _text(value)
        elif op == "starts_with":
            ok = _text(value).startswith(_text(want))
        elif op == "ends_with":
            ok = _text(value).endswith(_text(want))
        elif op == "in":
            ok = _text(value) in {_text(w) for w in (want or [])}
        else:
            ok = False
        results.append(ok)
    if not results:
        return True
    return all(results) if rule_tree.get("operator", "and") == "and" else any(results)


# -- after an SMTP attempt: what happens to the enrollment -----------------------------------
RETRY_BACKOFF = (timedelta(minutes=5), timedelta(minutes=15), timedelta(minutes=45), timedelta(hours=2),
                 timedelta(hours=6))


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimedEmail:
    """One claimed email, as its claim recorded it."""

    enrollment_id: str
    campaign_id: str
    contact_id: str
    email_id: str
    step: int
    sender_id: str
    message_id: str
    attempt: int
    claimed_at: datetime
    timezone: str
    domain: str | None = None  # the recipient's, counted against the per-domain limits


@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt:
    """What SMTP answered, as a value: ``sent``, ``deferred``, ``rejected``, ``uncertain``,
    ``auth_failed`` or ``connect_failed`` (see ``engine/delivery/outbound/smtp.py``)."""

    outcome: str
    code: int | None
    message: str
    enhanced_status: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NextStep:
    """The next step of the sequence, as the planner's ``follow_up`` computed it."""

    step: int
    due_at: datetime
    sender_id: str | None
    priority: int
    seq: int


def decide_outcome(claim: ClaimedEmail, attempt: Attempt, next_step: NextStep | None, now: datetime,
                   *, links: tuple[str, ...] | None = None, variant: str | None = None) -> list[Event]:
    """The events that record `attempt` of `claim`, and what the enrollment does next.

    sent or uncertain: the next step is scheduled (`next_step`) or the enrollment completes; an
    uncertain email is never sent again. rejected: a bounce; hard and block bounces stop the
    enrollment, a soft one lets the sequence go on. deferred, connect_failed, auth_failed: retried
    after the backoff (5 min, 15 min, 45 min, 2 h, 6 h), then failed (a login failure is the
    sender's fault: the email waits for its fix instead of failing). ``variant``: the step's A/B
    variant that was composed, recorded on the sent or bounced email for the per-variant stats.
    """
    base: dict[str, Any] = {"enrollment_id": claim.enrollment_id, "campaign_id": claim.campaign_id,
                            "contact_id": claim.contact_id, "email_id": claim.email_id, "step": claim.step}
    stop: dict[str, Any] = {"enrollment_id": claim.enrollment_id, "campaign_id": claim.campaign_id,
                            "contact_id": claim.contact_id}
    then = _continue(claim, next_step)
    if attempt.outcome == "sent":
        return [em.EmailSent(**base, sender_id=claim.sender_id, message_id=claim.message_id, smtp_code=attempt.code,
                             links=links or (), variant=variant), *then]
    if attempt.outcome == "uncertain":
        return [em.EmailUncertain(**base, sender_id=claim.sender_id, message=attempt.message), *then]
    if attempt.outcome == "rejected":
        kind = refusal_type(attempt.code, attempt.enhanced_status)
        bounced = em.EmailBounced(**base, sender_id=claim.sender_id, bounce_type=kind, reason=attempt.message[:500],
                                  status=attempt.enhanced_status, code=attempt.code, source="smtp",
                                  variant=variant)
        if kind == "soft":
            return [bounced, *then]
        return [bounced, en.EnrollmentStopped(**stop, reason="bounced", status="bounced")]
    if attempt.outcome == "unsendable":  # the sending path cannot carry it: fail it, never blame the address
        return [em.EmailFailed(**base, sender_id=claim.sender_id, code=attempt.code, message=attempt.message[:500]),
                en.EnrollmentStopped(**stop, reason="failed", status="failed")]
    if claim.attempt >= len(RETRY_BACKOFF) and attempt.outcome != "auth_failed":
        return [em.EmailFailed(**base, sender_id=claim.sender_id, code=attempt.code, message=attempt.message[:500]),
                en.EnrollmentStopped(**stop, reason="failed", status="failed")]
    wait = RETRY_BACKOFF[min(claim.attempt, len(RETRY_BACKOFF)) - 1]
    return [em.EmailDeferred(**base, sender_id=claim.sender_id, code=attempt.code, message=attempt.message[:500],
                             retry_at=now + wait, attempt=claim.attempt, claimed_at=claim.claimed_at,
                             timezone=claim.timezone, recipient_domain=claim.domain)]


def _continue(claim: ClaimedEmail, next_step: NextStep | None) -> list[Event]:
    if next_step is None:
        return [en.EnrollmentCompleted(enrollment_id=claim.enrollment_id, campaign_id=claim.campaign_id,
                                       contact_id=claim.contact_id)]
    return [schedule_step(claim.enrollment_id, claim.campaign_id, claim.contact_id, next_step.step,
                          next_step.due_at, next_step.sender_id, next_step.priority, next_step.seq)]


def decide_expired(claim: ClaimedEmail, next_step: NextStep | None, *, still_open: bool) -> list[Event]:
    """A claim whose lease ran out without an outcome (its worker died): uncertain, never re-sent.

    The sequence goes on from the claim's time unless the enrollment was stopped meanwhile;
    otherwise it would stay open forever and its campaign would never complete.
    """
    uncertain = em.EmailUncertain(enrollment_id=claim.enrollment_id, campaign_id=claim.campaign_id,
                                  contact_id=claim.contact_id, email_id=claim.email_id, step=claim.step,
                                  sender_id=claim.sender_id, message="claim expired without an SMTP outcome")
    return [uncertain, *(_continue(claim, next_step) if still_open else [])]


def decide_quarantined(claim: ClaimedEmail, deaths: int, *, still_open: bool) -> list[Event]:
    """A claim whose worker died ``deaths`` times while building it: set aside as a poison message.

    It was never handed to SMTP (the worker records when it starts sending), so nothing may have
    gone out; retrying it would only kill the next worker. The enrollment stops (reason
    ``quarantined``) rather than moving on: its later steps would follow an email never sent.
    """
    quarantined = em.EmailQuarantined(
        enrollment_id=claim.enrollment_id, campaign_id=claim.campaign_id, contact_id=claim.contact_id,
        email_id=claim.email_id, step=claim.step, sender_id=claim.sender_id, deaths=deaths,
        reason=f"the worker process died {deaths} times while building this email",
        claimed_at=claim.claimed_at, timezone=claim.timezone, recipient_domain=claim.domain)
    if not still_open:
        return [quarantined]
    return [quarantined, en.EnrollmentStopped(enrollment_id=claim.enrollment_id, campaign_id=claim.campaign_id,
                                              contact_id=claim.contact_id, reason="quarantined")]


def decide_worker_died(claim: ClaimedEmail, deaths: int, *, quarantine_after: int, still_open: bool) -> list[Event]:
    """A claim whose worker died before speaking SMTP for it: back to the queue, or quarantined.

    ``deaths`` counts the deaths while this very email was being built (0 when the worker died
    before reaching it). Below ``quarantine_after`` the email goes back (``email.released``, reason
    ``worker_died``: not sent, not uncertain, its claim uncounted); at it, it is a poison message.
    """
    if deaths >= quarantine_after:
        return decide_quarantined(claim, deaths, still_open=still_open)
    return [em.EmailReleased(enrollment_id=claim.enrollment_id, campaign_id=claim.campaign_id,
                             contact_id=claim.contact_id, email_id=claim.email_id, step=claim.step,
                             sender_id=claim.sender_id, reason="worker_died", claimed_at=claim.claimed_at,
                             timezone=claim.timezone, recipient_domain=claim.domain)]
