"""Given events, when a command, then events: the campaign and enrollment deciders."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.domain import campaign as cd
from engine.domain import enrollment as ed
from engine.errors import CampaignInvalid, Conflict, InvalidState, PlanLimitReached, ValidationFailed
from events.catalog import campaign as ev
from events.catalog.email import EmailScheduled
from events.catalog.enrollment import EnrollmentCreated, EnrollmentSkipped
from events.registry import Event

NOW = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
DEF: dict[str, Any] = {"name": "c", "sender_ids": ["snd_1"], "steps": [{"subject": "Hi", "body_html": "<p>x</p>"}],
                       "schedule": {"launch_at": None}, "settings": {}}
FACTS = cd.LaunchFacts(active_sender_ids=frozenset({"snd_1"}), known_sender_ids=frozenset({"snd_1"}),
                       require_approval=False, plan_exhausted=False)


def given_(*events: Event) -> cd.CampaignState:
    state = cd.CampaignState()
    for e in events:
        state = cd.evolve(state, e)
    return state


CREATED = ev.CampaignCreated(campaign_id="cmp_1", definition=DEF)
LAUNCHED = ev.CampaignLaunched(campaign_id="cmp_1", status="active", launch_at=None)


def test_launch_draft_gives_launched_active() -> None:
    assert cd.decide_launch(given_(CREATED), FACTS, NOW) == [LAUNCHED]


def test_launch_with_future_launch_at_is_scheduled_then_activated() -> None:
    at = NOW + timedelta(days=1)
    created = ev.CampaignCreated(campaign_id="cmp_1", definition={**DEF, "schedule": {
        "launch_at": "2026-01-06T08:00:00.000000Z"}})
    [launched] = cd.decide_launch(given_(created), FACTS, NOW)
    assert launched == ev.CampaignLaunched(campaign_id="cmp_1", status="scheduled", launch_at=at)
    state = given_(created, launched)
    assert cd.decide_activate(state, NOW) == []
    assert cd.decide_activate(state, at) == [ev.CampaignActivated(campaign_id="cmp_1")]


@pytest.mark.parametrize(("history", "action", "allowed"), [
    ((), "pause", False), ((LAUNCHED,), "pause", True), ((LAUNCHED,), "resume", False),
    ((LAUNCHED, ev.CampaignPaused(campaign_id="cmp_1")), "resume", True), ((), "cancel", True),
    ((LAUNCHED,), "archive", False), ((LAUNCHED, ev.CampaignCompleted(campaign_id="cmp_1")), "archive", True),
    ((ev.CampaignCancelled(campaign_id="cmp_1"),), "cancel", False),
])
def test_transitions(history: tuple[Event, ...], action: str, allowed: bool) -> None:
    state = given_(CREATED, *history)
    if allowed:
        assert len(cd.decide_transition(state, action)) == 1
    else:
        with pytest.raises(InvalidState):
            cd.decide_transition(state, action)


def test_launch_refusals() -> None:
    with pytest.raises(InvalidState):
        cd.decide_launch(given_(CREATED, LAUNCHED), FACTS, NOW)
    with pytest.raises(Conflict) as exc:
        cd.decide_launch(given_(CREATED), cd.LaunchFacts(FACTS.active_sender_ids, FACTS.known_sender_ids, True,
                                                         False), NOW)
    assert exc.value.code == "approval_required"
    assert cd.decide_launch(given_(CREATED, ev.CampaignApproved(campaign_id="cmp_1")), cd.LaunchFacts(
        FACTS.active_sender_ids, FACTS.known_sender_ids, True, False), NOW) == [LAUNCHED]
    with pytest.raises(PlanLimitReached):
        cd.decide_launch(given_(CREATED), cd.LaunchFacts(FACTS.active_sender_ids, FACTS.known_sender_ids, False,
                                                         True), NOW)
    disabled = cd.LaunchFacts(frozenset(), frozenset({"snd_1"}), False, False)
    with pytest.raises(CampaignInvalid) as inv:
        cd.decide_launch(given_(CREATED), disabled, NOW)
    assert inv.value.problems == ["no active sender"]


def test_update_rules_per_status() -> None:
    assert cd.decide_update(given_(CREATED), {"name": "c"}) == []  # nothing changed: no event
    assert cd.decide_update(given_(CREATED, LAUNCHED), {"name": "n"}) == [
        ev.CampaignUpdated(campaign_id="cmp_1", changes={"name": "n"})]
    with pytest.raises(InvalidState):  # live edits cover schedule, settings, senders and unsent steps only
        cd.decide_update(given_(CREATED, LAUNCHED), {"outreach_id": "o"})
    assert cd.decide_update(given_(CREATED, LAUNCHED), {"steps": []})  # nothing sent yet: any step may change
    launched = given_(CREATED, LAUNCHED)
    with pytest.raises(ValidationFailed):  # step 1 went out: it stays as it was sent
        cd.decide_update(launched, {"steps": [{"subject": "other", "body_html": "b"}]}, sent_steps=1)
    assert cd.decide_update(given_(CREATED), {"schedule": {"timezone": "UTC"}}) == [
        ev.CampaignScheduleChanged(campaign_id="cmp_1", schedule={"timezone": "UTC"})]


@given(st.lists(st.sampled_from(["approve", "delete"]), min_size=1, max_size=6))
def test_repeated_idempotent_commands_add_nothing(actions: list[str]) -> None:
    state = given_(CREATED)
    done: set[str] = set()
    for action in actions:
        events = cd.decide_approve(state) if action == "approve" else cd.decide_delete(state)
        assert (events == []) == (action in done)  # a repeated command whose effect happened adds nothing
        done.add(action)
        for e in events:
            state = cd.evolve(state, e)


def facts(cid: str, **kw: Any) -> ed.ContactFacts:
    base = {"email_domain": "corp.io", "suppressed": False, "unsubscribed": False, "bounced": False,
            "replied": False, "enrolled_here": False, "enrolled_elsewhere": False, "same_outreach_elsewhere": False}
    return ed.ContactFacts(contact_id=cid, **{**base, **kw})


def test_enroll_skip_reasons_in_order() -> None:
    state = given_(ev.CampaignCreated(campaign_id="cmp_1", definition={**DEF, "settings": {
        "skip_previously_replied": True, "allow_free_email_domains": False, "skip_if_enrolled_elsewhere": True}}))
    given_facts = [facts("a"), facts("b", enrolled_here=True), facts("c", suppressed=True),
                   facts("d", unsubscribed=True), facts("e", bounced=True), facts("f", replied=True),
                   facts("g", email_domain="gmail.com"), facts("h", enrolled_elsewhere=True)]
    d = ed.decide_enroll(state, given_facts, new_ids=[f"enr_{x}" for x in "abcdefgh"], now=NOW,
                         batch_number=None, priority=0, first_seq=0)
    assert d.added == 1
    assert d.skipped == {"already_enrolled": 1, "suppressed": 1, "unsubscribed": 1, "previously_bounced": 1,
                         "previously_replied": 1, "free_email_domain": 1, "duplicate_elsewhere": 1}
    assert d.batches[0] == ("enrollment-enr_a", [EnrollmentCreated(
        enrollment_id="enr_a", campaign_id="cmp_1", contact_id="a", batch_number=None, priority=0, seq=1)])
    assert all(isinstance(e, EnrollmentSkipped) for e in d.batches[1][1])


def test_enroll_into_active_campaign_schedules_step_one() -> None:
    d = ed.decide_enroll(given_(CREATED, LAUNCHED), [facts("a")], new_ids=["enr_a"], now=NOW, batch_number=None,
                         priority=3, first_seq=10)
    assert d.batches[0][1][1] == EmailScheduled(enrollment_id="enr_a", campaign_id="cmp_1", contact_id="a",
                                                email_id="enr_a.1", step=1, due_at=NOW, sender_id=None, priority=3,
                                                seq=11)
    with pytest.raises(InvalidState):
        ed.decide_enroll(given_(CREATED, ev.CampaignCancelled(campaign_id="cmp_1")), [facts("a")],
                         new_ids=["x"], now=NOW, batch_number=None, priority=0, first_seq=0)


def test_rule_tree_filter() -> None:
    contact = {"email": "ann@acme.io", "company": "Acme", "custom_fields": {"plan": "pro"}}
    assert ed.matches({"operator": "and", "rules": [{"field": "custom.plan", "op": "in", "value": ["pro", "x"]},
                                                    {"field": "company", "op": "starts_with", "value": "ac"}]},
                      contact)
    assert not ed.matches({"rules": [{"field": "last_name", "op": "exists"}]}, contact)
    assert ed.matches({"operator": "or", "rules": [{"field": "email", "op": "not_contains", "value": "acme"},
                                                   {"rules": [{"field": "company", "op": "neq", "value": "x"}]}]},
                      contact)


def test_live_edit_of_an_old_sent_step_resent_with_new_empty_fields_is_no_change() -> None:
    launched = given_(CREATED, LAUNCHED)  # its step was stored before variants and winner existed
    resent = [{**DEF["steps"][0], "variants": None, "winner": None}, {"subject": "two", "body_html": "b"}]
    events = cd.decide_update(launched, {"steps": resent}, sent_steps=1)
    assert [type(e).__name__ for e in events] == ["CampaignUpdated"]
