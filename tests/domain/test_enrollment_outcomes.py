"""The enrollment decider after an SMTP attempt: given a claim, when SMTP answers, then these events.

Pure: no database, no SMTP. The tick turns a mailer result into an :class:`Attempt` and appends
what :func:`decide_outcome` returns; a lease that ran out goes through :func:`decide_expired`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from engine.domain.enrollment import (
    RETRY_BACKOFF,
    Attempt,
    ClaimedEmail,
    NextStep,
    decide_expired,
    decide_outcome,
    decide_quarantined,
    decide_worker_died,
    refusal_type,
)

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
NEXT = NextStep(step=2, due_at=NOW + timedelta(days=2), sender_id="snd_1", priority=0, seq=7)


def claim(attempt: int = 1) -> ClaimedEmail:
    return ClaimedEmail(enrollment_id="enr_1", campaign_id="cmp_1", contact_id="con_1", email_id="enr_1.1", step=1,
                        sender_id="snd_1", message_id="<enr_1.1@sales.io>", attempt=attempt, claimed_at=NOW,
                        timezone="Europe/Paris")


def types(events: list[object]) -> list[str]:
    return [e.TYPE for e in events]  # type: ignore[attr-defined]


def test_sent_schedules_the_next_step_or_completes() -> None:
    events = decide_outcome(claim(), Attempt(outcome="sent", code=250, message="ok"), NEXT, NOW, links=("https://a",))
    assert types(events) == ["email.sent", "email.scheduled"]
    assert events[1].due_at == NEXT.due_at and events[1].sender_id == "snd_1"  # type: ignore[attr-defined]
    last = decide_outcome(claim(), Attempt(outcome="sent", code=250, message="ok"), None, NOW)
    assert types(last) == ["email.sent", "enrollment.completed"]


def test_uncertain_is_never_resent_and_the_sequence_goes_on() -> None:
    events = decide_outcome(claim(), Attempt(outcome="uncertain", code=None, message="lost after DATA"), NEXT, NOW)
    assert types(events) == ["email.uncertain", "email.scheduled"]


@pytest.mark.parametrize(("status", "code", "kind", "then"), [
    ("5.1.1", 550, "hard", "enrollment.stopped"),
    ("5.7.1", 550, "block", "enrollment.stopped"),
    ("5.2.2", 552, "soft", "email.scheduled"),
    (None, 552, "soft", "email.scheduled"),
    (None, 550, "hard", "enrollment.stopped"),
])
def test_refusals_are_typed_by_their_status(status: str | None, code: int, kind: str, then: str) -> None:
    attempt = Attempt(outcome="rejected", code=code, message=f"{status or ''} refused", enhanced_status=status)
    events = decide_outcome(claim(), attempt, NEXT, NOW)
    assert types(events) == ["email.bounced", then]
    assert events[0].bounce_type == kind  # type: ignore[attr-defined]


def test_deferred_retries_with_backoff_then_fails() -> None:
    first = decide_outcome(claim(1), Attempt(outcome="deferred", code=451, message="try later"), None, NOW)
    assert types(first) == ["email.deferred"]
    assert first[0].retry_at == NOW + RETRY_BACKOFF[0]  # type: ignore[attr-defined]
    assert first[0].claimed_at == NOW and first[0].timezone == "Europe/Paris"  # type: ignore[attr-defined]
    last = decide_outcome(claim(len(RETRY_BACKOFF)), Attempt(outcome="connect_failed", code=None, message="down"),
                          None, NOW)
    assert types(last) == ["email.failed", "enrollment.stopped"]


def test_login_failure_waits_for_a_fix_instead_of_failing() -> None:
    events = decide_outcome(claim(len(RETRY_BACKOFF) + 3), Attempt(outcome="auth_failed", code=535, message="no"),
                            None, NOW)
    assert types(events) == ["email.deferred"]


def test_expired_claim_is_uncertain_and_goes_on_only_while_open() -> None:
    assert types(decide_expired(claim(), NEXT, still_open=True)) == ["email.uncertain", "email.scheduled"]
    assert types(decide_expired(claim(), NEXT, still_open=False)) == ["email.uncertain"]


def test_a_poison_claim_is_quarantined_and_stops_its_enrollment_without_going_on() -> None:
    events = decide_quarantined(claim(), 3, still_open=True)
    assert types(events) == ["email.quarantined", "enrollment.stopped"]
    assert events[0].deaths == 3 and "3 times" in events[0].reason  # type: ignore[attr-defined]
    assert events[0].claimed_at == NOW and events[0].timezone == "Europe/Paris"  # type: ignore[attr-defined]
    assert events[1].reason == "quarantined"  # type: ignore[attr-defined]
    assert types(decide_quarantined(claim(), 3, still_open=False)) == ["email.quarantined"]


def test_a_worker_death_before_smtp_releases_the_claim_until_it_is_the_third_while_building_it() -> None:
    given = claim()
    for deaths in (0, 1, 2):
        events = decide_worker_died(given, deaths, quarantine_after=3, still_open=True)
        assert types(events) == ["email.released"]
        assert events[0].reason == "worker_died" and events[0].timezone == "Europe/Paris"  # type: ignore[attr-defined]
    assert types(decide_worker_died(given, 3, quarantine_after=3, still_open=True)) == [
        "email.quarantined", "enrollment.stopped"]


def test_refusal_type_reads_rfc_3463() -> None:
    """The DSN classifier's reading (tests/delivery/test_refusal_type.py): 5.2.1 (mailbox disabled)
    is a filter's refusal, 5.2.3 (too big for the mailbox) an exceeded limit that may pass, 5.4.4
    (unable to route) a dead domain."""
    assert [refusal_type(550, s) for s in ("5.1.1", "5.1.8", "5.2.1", "5.2.3", "5.3.4", "5.4.4", "5.6.0")] == [
        "hard", "block", "block", "soft", "block", "hard", "block"]


def test_unsendable_fails_the_email_without_blaming_the_address() -> None:
    attempt = Attempt(outcome="unsendable", code=None, message="an address needs SMTPUTF8")
    assert types(decide_outcome(claim(), attempt, NEXT, NOW)) == ["email.failed", "enrollment.stopped"]
