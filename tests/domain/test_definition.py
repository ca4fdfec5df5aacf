"""The typed campaign definition: every shape the API stores round-trips key for key, and older
shapes (fields missing, variants without ids) are upcast to the current one."""

from __future__ import annotations

import json
from typing import Any

import pytest

from engine.domain import models as m
from engine.domain.definition import CampaignDefinition, CampaignSettings, StepDefinition, definition_from_json
from engine.errors import ValidationFailed
from engine.schedule import ScheduleSpec, validate_schedule
from engine.service.campaigns import _definition

DEMO: dict[str, Any] = {  # the demo's campaign (engine/demo.py)
    "name": "Demo outreach", "sender_ids": ["snd_1", "snd_2"],
    "schedule": {"timezone": "Europe/Paris", "start_time": "09:00", "end_time": "17:00",
                 "min_wait_seconds": 300, "max_wait_seconds": 900, "holidays": "FR"},
    "settings": {"track_opens": True, "track_clicks": True, "stop_on_reply": True},
    "steps": [
        {"subject": "Quick question, {{first_name|there}}", "body_html": "<p>Hi</p>",
         "variants": [{"id": "A", "weight": 1}, {"id": "B", "subject": "{{company|Your team}}", "weight": 1}]},
        {"subject": "Following up", "body_html": "<p>Bump</p>", "delay": {"days": 2, "business_days": True}},
    ]}
FULL: dict[str, Any] = {
    "name": "Q2 launch", "description": "d", "emoji": "🚀", "folder": "Outbound", "tags": ["q2", "eu"],
    "goal": "lead_gen", "outreach_id": "out_1", "sender_ids": ["snd_1"],
    "schedule": {"timezone": "America/New_York", "days": ["FRI", "mon", "mon"], "start_time": "08:30",
                 "end_time": "24:00", "cron": "*/15 9-17 * * 1-5", "every_minutes": 5, "max_per_hour": 10,
                 "daily_limit": 100, "max_per_domain_per_hour": 2, "max_per_domain_per_day": 5,
                 "launch_at": "2026-05-04T12:30:00+02:00", "use_contact_timezone": True,
                 "skip_dates": ["2026-12-25", "2026-01-01", "2026-12-25"], "holidays": "us-ca"},
    "settings": {"stop_on_company_reply": True, "verify_mx": True, "bounce_rate_threshold": 5,
                 "complaint_rate_threshold": 0.1, "soft_bounce_limit": 2, "manual_batches": True, "evergreen": True,
                 "auto_enroll": {"list_ids": ["lst_1"], "filter": {"operator": "or", "rules": [
                     {"field": "company", "op": "eq", "value": "Acme"},
                     {"operator": "and", "rules": [{"field": "custom.plan", "op": "exists"}]}]}}},
    "steps": [
        {"subject": "Hi", "body_html": "<p>x</p>", "body_text": "x", "same_thread": False,
         "variants": [{"subject": "a"}, {"body_html": "<p>b</p>", "weight": 5}, {"id": "own", "body_text": "t"}],
         "winner": {"metric": "open_rate", "after_sends": 50}},
        {"subject": "", "body_html": "<p>y</p>", "delay": {"days": 1, "hours": 2, "minutes": 3},
         "track_opens": False, "track_clicks": True, "node_id": "n2"},
    ]}
WORKFLOW: dict[str, Any] = {
    "name": "graph",
    "workflow": {"nodes": [{"id": "s", "type": "start"}, {"id": "e1", "type": "email",
                                                          "data": {"subject": "Hi", "body": "<p>x</p>",
                                                                   "trackOpens": True}},
                           {"id": "d", "type": "delay", "data": {"days": 2, "businessDays": True}},
                           {"id": "e2", "type": "email", "data": {"subject": "", "body_html": "<p>y</p>"}},
                           {"id": "end", "type": "end"}],
                 "edges": [{"from": "s", "to": "e1"}, {"from": "e1", "to": "d"}, {"from": "d", "to": "e2"},
                           {"from": "e2", "to": "end"}]}}


def stored(body: dict[str, Any]) -> dict[str, Any]:
    """The definition the API stores for a create body (as JSON goes to the log and back)."""
    return json.loads(json.dumps(_definition(m.parse(m.CampaignIn, body))))


@pytest.mark.parametrize("body", [{"name": "defaults"}, DEMO, FULL, WORKFLOW], ids=["defaults", "demo", "full",
                                                                                    "workflow"])
def test_every_stored_shape_round_trips_key_for_key(body: dict[str, Any]) -> None:
    data = stored(body)
    definition = CampaignDefinition.from_dict(data)
    assert definition.to_dict() == data
    assert list(definition.to_dict()) == list(data)  # the same key order: events keep their bytes
    assert json.dumps(definition.to_dict()) == json.dumps(data)
    assert CampaignDefinition.from_dict(definition.to_dict()) == definition


def test_edits_copies_and_winners_round_trip() -> None:
    data = stored(FULL)
    patch = m.parse(m.CampaignPatch, {"tags": None, "description": None, "sender_ids": [], "workflow": None,
                                      "settings": None, "steps": []})
    changes = {"tags": patch.tags, "description": patch.description, "sender_ids": [],
               "settings": m.SettingsIn().model_dump(), "steps": [], "workflow": None}
    edited = {**data, **changes, "variant_winners": {"1": "B", "3": "A"},
              "schedule": {**data["schedule"], "launch_at": None}}
    definition = CampaignDefinition.from_dict(data).with_changes(changes)
    assert definition.tags is None and definition.description is None and definition.steps == ()
    with_winners = CampaignDefinition.from_dict(edited)
    assert with_winners.to_dict() == edited
    assert with_winners.winners() == {1: "B", 3: "A"}


def test_typed_values_are_the_stored_ones() -> None:
    definition = CampaignDefinition.from_dict(stored(FULL))
    assert definition.schedule.days == ("mon", "fri") and definition.schedule.holidays == "US-CA"
    assert definition.to_dict()["schedule"]["launch_at"] == "2026-05-04T10:30:00.000000Z"
    assert definition.settings.bounce_rate_threshold == 5.0 and definition.settings.soft_bounce_limit == 2
    assert definition.settings.auto_enroll is not None and definition.settings.auto_enroll.list_ids == ("lst_1",)
    first, second = definition.steps
    assert first.variant_ids() == ["A", "B", "own"]
    assert first.with_variant("B").body_html == "<p>b</p>" and first.with_variant("B").subject == "Hi"
    assert first.with_variant("nope") is first and first.winner is not None and first.winner.after_sends == 50
    assert not first.follows_up(1) and second.follows_up(2)
    assert (second.delay.days, second.delay.hours, second.delay.minutes) == (1, 2, 3)
    assert second.track_clicks is True and second.track_opens is False and second.node_id == "n2"
    with pytest.raises(ValueError, match="step 3 does not exist"):
        definition.step(3)


def test_older_shapes_are_upcast_to_the_current_one() -> None:
    old = {"name": "c", "sender_ids": ["snd_1"], "steps": [{"subject": "Hi", "body_html": "<p>x</p>",
                                                            "variants": [{"subject": "a"}, {"subject": "b"}]}],
           "schedule": {"launch_at": None}, "settings": {"stop_on_reply": False}}
    definition = CampaignDefinition.from_dict(old)
    assert definition.settings == CampaignSettings(stop_on_reply=False)
    assert definition.schedule == ScheduleSpec()
    assert definition.steps[0].variant_ids() == ["A", "B"]
    current = stored({"name": "c", "sender_ids": ["snd_1"], "settings": {"stop_on_reply": False},
                      "steps": [{"subject": "Hi", "body_html": "<p>x</p>",
                                 "variants": [{"subject": "a"}, {"subject": "b"}]}]})
    assert definition.to_dict() == current
    assert CampaignDefinition.from_dict({"name": "bare"}).to_dict() == stored({"name": "bare"})


def test_nothing_stored_is_dropped_and_bad_kinds_are_refused() -> None:
    unknown = {**stored({"name": "x", "steps": [{"subject": "s"}]}), "future_field": {"a": [1]}}
    unknown["steps"][0]["future_step_field"] = 3
    unknown["settings"]["future_setting"] = True
    assert CampaignDefinition.from_dict(unknown).to_dict() == unknown
    with pytest.raises(ValueError):
        CampaignDefinition.from_dict({"name": "x", "steps": "not a list"})
    with pytest.raises(ValueError):
        CampaignDefinition.from_dict({"name": "x", "settings": ["no"]})


def test_a_stored_schedule_the_planner_cannot_use_falls_back_field_by_field() -> None:
    """Before one validator, the API took a cron that never fires inside the window."""
    never = {"name": "x", "schedule": {"timezone": "Europe/Paris", "cron": "0 3 * * *", "start_time": "09:00"}}
    schedule = CampaignDefinition.from_dict(never).schedule
    assert schedule.cron is None and schedule.timezone == "Europe/Paris" and schedule.start_time == "09:00"


def test_parsed_once_per_text() -> None:
    text = json.dumps(stored(DEMO))
    assert definition_from_json(text) is definition_from_json(text)
    assert StepDefinition.from_dict({}).to_dict() == m.StepIn().model_dump()


@pytest.mark.parametrize(("schedule", "field"), [
    ({"timezone": "europe/paris"}, "schedule.timezone"),
    ({"days": ["mon", "funday"]}, "schedule.days"),
    ({"start_time": "12:60"}, "schedule.start_time"),
    ({"end_time": "24:01"}, "schedule.end_time"),
    ({"start_time": "18:00"}, "schedule"),  # end_time (default 17:00) before start_time
    ({"cron": "0 9 * * 5-1"}, "schedule.cron"),
    ({"cron": "0 0 31 2 *"}, "schedule.cron"),  # never fires
    ({"cron": "0 20 * * *"}, "schedule.cron"),  # never inside 09:00-17:00: the planner could not use it
    ({"cron": "0 10 * * 6,0"}, "schedule.cron"),  # standard weekday numbers: the weekend, outside mon-fri
    ({"min_wait_seconds": 500, "max_wait_seconds": 400}, "schedule"),
    ({"skip_dates": ["25/12/2026"]}, "schedule.skip_dates"),
    ({"holidays": "US-ZZ"}, "schedule.holidays"),
    ({"launch_at": "2026-01-05T08:00:00"}, "schedule.launch_at"),
])
def test_the_api_refuses_what_the_schedule_validator_refuses(schedule: dict[str, Any], field: str) -> None:
    """One validator: the request model reports validate_schedule's problems under the same fields."""
    assert validate_schedule(schedule)
    with pytest.raises(ValidationFailed) as refused:
        m.parse(m.CampaignIn, {"name": "x", "schedule": schedule})
    assert [error["field"] for error in refused.value.errors] == [field]


def test_every_schedule_the_api_takes_is_one_the_planner_takes() -> None:
    for schedule in ({}, {"cron": "0 10 * * 1-5"}, {"cron": "0 10 * * 7", "days": ["SUN"]},
                     {"every_minutes": "5", "end_time": "24:00"}, FULL["schedule"], DEMO["schedule"]):
        dumped = m.dump_schedule(m.parse(m.ScheduleIn, schedule))
        assert validate_schedule(dumped) == []
        assert ScheduleSpec.from_dict(dumped).to_dict()["days"] == dumped["days"]


def test_request_defaults_are_the_definitions() -> None:
    assert m.SettingsIn().model_dump() == CampaignSettings().to_dict()
    assert m.StepIn().model_dump() == StepDefinition().to_dict()
    assert m.dump_schedule(m.ScheduleIn()) == CampaignDefinition(name="x").to_dict()["schedule"]


@pytest.mark.parametrize("body", [{"name": "defaults"}, DEMO, FULL, WORKFLOW], ids=["defaults", "demo", "full",
                                                                                    "workflow"])
def test_the_campaign_view_shows_a_stored_definition_byte_for_byte(body: dict[str, Any]) -> None:
    from engine.service.views import campaign_view
    from projections.base import compact_json

    text = compact_json(stored(body))  # as the campaigns read model stores it
    row = {"id": "cmp_1", "definition": text, "status": "draft", "created_at": "t", "updated_at": "t",
           "launched_at": None, "completed_at": None, "approved_at": None, "paused_reason": None}
    shown = campaign_view(row)
    before = json.loads(text)  # what the view showed before the typed definition
    for key in ("schedule", "settings", "steps", "workflow", "tags", "sender_ids", "description"):
        assert json.dumps(shown[key]) == json.dumps(before[key]), key
