"""Usage: buckets of what was sent, immutable record(), and the same result rebuilt from the log."""

from __future__ import annotations

from datetime import date, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.schedule import SendRecord, Usage
from tests.schedule.factories import by_id, campaign, utc

CAMPAIGNS = by_id(campaign("c1", timezone="America/New_York"), campaign("c2", timezone="Europe/Paris"))


def test_record_is_pure_and_counts_every_bucket() -> None:
    empty = Usage()
    at = utc(2026, 1, 6, 3, 30)  # Tuesday 03:30 UTC, Monday 22:30 in New York
    after = empty.record(campaign_id="c1", sender_id="s1", workspace_id="w1", at=at, timezone="America/New_York")
    assert empty == Usage()
    assert after.sent_by_sender_on("s1", date(2026, 1, 6)) == 1  # UTC day
    assert after.sent_by_campaign_on("c1", date(2026, 1, 5)) == 1  # New York day
    assert after.sent_by_campaign_in_hour("c1", utc(2026, 1, 6, 3)) == 1
    assert after.sent_by_workspace_in_month("w1", 2026, 1) == 1
    last = after.last_send("c1", "s1")
    assert last is not None and (last.at, last.local_date, last.seq) == (at, date(2026, 1, 5), 1)


def test_sequence_number_counts_within_the_campaigns_local_day() -> None:
    usage = Usage()
    times = [utc(2026, 1, 6, 3), utc(2026, 1, 6, 4), utc(2026, 1, 6, 5, 30)]  # 22:00, 23:00 Mon; 00:30 Tue NY
    for at in times:
        usage = usage.record(campaign_id="c1", sender_id="s1", workspace_id="w1", at=at, timezone="America/New_York")
    last = usage.last_send("c1", "s1")
    assert last is not None and (last.local_date, last.seq) == (date(2026, 1, 6), 1)
    assert usage.sent_by_sender_on("s1", date(2026, 1, 6)) == 3


def test_the_repeated_fall_back_hour_is_its_own_hour_bucket() -> None:
    usage = Usage()
    first, second = utc(2026, 10, 25, 0, 15), utc(2026, 10, 25, 1, 15)  # 02:15 CEST, then 02:15 CET
    for at in (first, second):
        usage = usage.record(campaign_id="c2", sender_id="s1", workspace_id="w1", at=at, timezone="Europe/Paris")
    assert usage.sent_by_campaign_in_hour("c2", utc(2026, 10, 25, 0)) == 1
    assert usage.sent_by_campaign_in_hour("c2", utc(2026, 10, 25, 1)) == 1
    assert usage.sent_by_campaign_on("c2", date(2026, 10, 25)) == 2


def test_from_sends_counts_unknown_campaigns_in_utc() -> None:
    usage = Usage.from_sends([SendRecord("gone", "s1", "w1", utc(2026, 1, 6, 23, 30))], CAMPAIGNS)
    assert usage.sent_by_campaign_on("gone", date(2026, 1, 6)) == 1
    assert usage.sent_by_sender_on("s1", date(2026, 1, 6)) == 1


def test_from_sends_accepts_rows_and_tuples() -> None:
    at = utc(2026, 1, 6, 10)
    record = SendRecord("c1", "s1", "w1", at)
    assert Usage.from_sends([("c1", "s1", "w1", at)], CAMPAIGNS) == Usage.from_sends([record], CAMPAIGNS)


sends_strategy = st.lists(
    st.builds(
        SendRecord,
        campaign_id=st.sampled_from(["c1", "c2"]),
        sender_id=st.sampled_from(["s1", "s2"]),
        workspace_id=st.sampled_from(["w1", "w2"]),
        sent_at=st.integers(0, 6 * 24 * 60).map(lambda m: utc(2026, 10, 23) + timedelta(minutes=m)),
    ),
    max_size=30,
)


@settings(max_examples=50, deadline=None)
@given(sends_strategy)
def test_from_sends_equals_recording_each_send_in_time_order(sends: list[SendRecord]) -> None:
    usage = Usage()
    ordered = sorted(sends, key=lambda s: s.sent_at)  # stable: sends of one instant keep log order
    for send in ordered:
        tz = CAMPAIGNS[send.campaign_id].schedule.timezone
        usage = usage.record(
            campaign_id=send.campaign_id,
            sender_id=send.sender_id,
            workspace_id=send.workspace_id,
            at=send.sent_at,
            timezone=tz,
        )
    assert Usage.from_sends(sends, CAMPAIGNS) == usage
    # Any order of the input gives the same counts; only the latest sender of an instant shared by
    # several sends depends on which was recorded last.
    shuffled = Usage.from_sends(reversed(sends), CAMPAIGNS)
    assert (shuffled.sender_days, shuffled.campaign_days, shuffled.campaign_hours, shuffled.workspace_months) == (
        usage.sender_days, usage.campaign_days, usage.campaign_hours, usage.workspace_months)
    assert sum(usage.sender_days.values()) == len(sends)
