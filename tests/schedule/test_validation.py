"""Schedule JSON: defaults, and one reported problem per bad field (validation never raises)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from engine.schedule import SCHEDULE_DEFAULTS, InvalidSchedule, ScheduleSpec, validate_schedule
from tests.schedule.factories import utc


def fields(d: Any) -> list[str]:
    return [field for field, _ in validate_schedule(d)]


def test_defaults_are_the_contracts() -> None:
    spec = ScheduleSpec.from_dict({})
    assert spec == ScheduleSpec()
    assert spec.timezone == "UTC"
    assert spec.days == ("mon", "tue", "wed", "thu", "fri")
    assert (spec.start_time, spec.end_time) == ("09:00", "17:00")
    assert (spec.min_wait_seconds, spec.max_wait_seconds) == (120, 420)
    assert spec.every_minutes is None and spec.cron is None
    assert spec.max_per_hour is None and spec.daily_limit is None
    assert spec.launch_at is None and spec.use_contact_timezone is False
    assert spec.to_dict() == dict(SCHEDULE_DEFAULTS)
    assert validate_schedule({}) == []
    assert validate_schedule(dict(SCHEDULE_DEFAULTS)) == []


def test_from_dict_normalises_and_round_trips() -> None:
    spec = ScheduleSpec.from_dict(
        {
            "timezone": "Europe/Paris",
            "days": ["FRI", "mon", "mon"],
            "end_time": "24:00",
            "launch_at": "2026-01-05T08:00:00Z",
            "cron": "*/15 * * * 1-5",
        }
    )
    assert spec.days == ("mon", "fri")
    assert spec.launch_at == utc(2026, 1, 5, 8)
    assert spec.end_minute == 1440
    again = ScheduleSpec.from_dict(spec.to_dict())
    assert again == spec
    assert spec.to_dict()["launch_at"] == "2026-01-05T08:00:00Z"


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"timezone": "europe/paris"}, "timezone"),
        ({"timezone": "localtime"}, "timezone"),
        ({"timezone": ""}, "timezone"),
        ({"timezone": 3}, "timezone"),
        ({"days": []}, "days"),
        ({"days": ["mon", "funday"]}, "days"),
        ({"days": "mon"}, "days"),
        ({"days": [1]}, "days"),
        ({"start_time": "9:00"}, "start_time"),
        ({"start_time": "24:00", "end_time": "24:00"}, "start_time"),
        ({"start_time": "12:60"}, "start_time"),
        ({"end_time": "25:00"}, "end_time"),
        ({"end_time": "24:01"}, "end_time"),
        ({"end_time": "09:00"}, "end_time"),
        ({"start_time": "18:00"}, "end_time"),
        ({"every_minutes": 0}, "every_minutes"),
        ({"every_minutes": 1441}, "every_minutes"),
        ({"every_minutes": True}, "every_minutes"),
        ({"every_minutes": "5"}, "every_minutes"),
        ({"cron": "* * * *"}, "cron"),
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "0 9 ? * *"}, "cron"),
        ({"cron": "0 9 * * 8"}, "cron"),
        ({"cron": "0 9 * * 5-1"}, "cron"),
        ({"cron": 5}, "cron"),
        ({"cron": "0 0 31 2 *"}, "cron"),  # never fires
        ({"cron": "0 20 * * *"}, "cron"),  # never inside 09:00-17:00
        ({"min_wait_seconds": -1}, "min_wait_seconds"),
        ({"min_wait_seconds": 1.5}, "min_wait_seconds"),
        ({"max_wait_seconds": 86_401}, "max_wait_seconds"),
        ({"min_wait_seconds": 500, "max_wait_seconds": 400}, "max_wait_seconds"),
        ({"max_per_hour": 0}, "max_per_hour"),
        ({"max_per_hour": False}, "max_per_hour"),
        ({"daily_limit": -3}, "daily_limit"),
        ({"launch_at": "tomorrow"}, "launch_at"),
        ({"launch_at": "2026-01-05T08:00:00"}, "launch_at"),
        ({"launch_at": 12}, "launch_at"),
        ({"use_contact_timezone": "yes"}, "use_contact_timezone"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_each_bad_field_is_reported(patch: dict[str, Any], field: str) -> None:
    assert fields(patch) == [field]
    with pytest.raises(InvalidSchedule) as raised:
        ScheduleSpec.from_dict(patch)
    assert raised.value.problems == validate_schedule(patch)


def test_every_problem_is_reported_at_once() -> None:
    problems = fields({"timezone": "Nope", "days": [], "every_minutes": 0, "daily_limit": 0, "x": 1})
    assert problems == ["x", "timezone", "days", "every_minutes", "daily_limit"]


def test_validation_never_raises_on_junk() -> None:
    junks: list[object] = [None, 3, "schedule", [], {"days": None}, {"start_time": None, "end_time": None}]
    for junk in junks:
        assert validate_schedule(junk)


def test_cron_weekday_numbers_are_standard_crontab() -> None:
    # 1-5 means Monday to Friday; 0 and 7 are Sunday. With mon-fri days these all fire in the window.
    assert validate_schedule({"cron": "0 10 * * 1-5"}) == []
    assert validate_schedule({"cron": "0 10 * * 0", "days": ["sun"]}) == []
    assert validate_schedule({"cron": "0 10 * * 7", "days": ["sun"]}) == []
    assert fields({"cron": "0 10 * * 6,0"}) == ["cron"]  # weekend only, window mon-fri


def test_constructing_an_invalid_spec_raises() -> None:
    with pytest.raises(InvalidSchedule):
        ScheduleSpec(days=())
    with pytest.raises(InvalidSchedule):
        ScheduleSpec(launch_at=datetime(2026, 1, 5, 8))  # naive
