"""The usage counters the tick plans from agree with a recount of the claims, inline and after a rebuild.

Given campaigns in two timezones sharing senders, a greylisted address (deferred, then sent) and a
few days of sending; when the counters are read as the tick reads them; then they equal the usage
recounted from every claimed email in the read models (the history the tick used to rescan), cut
to the buckets that contain now, and a rebuild from position 0 gives the same rows.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from engine import CampaignEngine, ManualClock
from engine.schedule import SendRecord, Usage
from engine.service.planner_inputs import load_inputs, load_usage
from events.registry import parse_time
from projections import usage as usage_model
from projections.sending import emails
from tests.delivery.smtp_server import SinkBehaviour, SmtpSink
from tests.scenarios.test_sending import run_until
from tests.schedule.test_send_path import current_buckets


async def counter_rows(eng: CampaignEngine) -> list[tuple[object, ...]]:
    async with eng.store.reading() as conn:
        rows: list[tuple[object, ...]] = []
        for table in (usage_model.counts, usage_model.last_sends, usage_model.rotation):
            rows += [tuple(r) for r in (await conn.execute(select(table).order_by(*table.primary_key))).all()]
    return rows


async def test_counters_equal_a_recount_of_the_claims(eng: CampaignEngine, clock: ManualClock) -> None:
    behaviour = SinkBehaviour(rcpt_replies={"grey@corp.io": "451 4.7.1 greylisted, try later"})
    with SmtpSink(behaviour=behaviour) as sink:
        ws = (await eng.create_workspace("w")).id
        sids = [(await eng.create_sender(ws, {"email": f"rep{i}@sales.io", "daily_limit": 7, "smtp": {
            "host": sink.host, "port": sink.port, "security": "none"}}))["id"] for i in range(2)]
        contacts = [(await eng.create_contact(ws, {"email": f"p{i}@corp.io"}))["id"] for i in range(24)]
        contacts.append((await eng.create_contact(ws, {"email": "grey@corp.io"}))["id"])
        for n, zone in enumerate(("Europe/Paris", "America/New_York")):
            cmp = await eng.create_campaign(ws, {"name": zone, "sender_ids": sids, "schedule": {
                "timezone": zone, "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                "start_time": "07:00", "end_time": "20:00", "max_per_hour": 3, "min_wait_seconds": 60,
                "max_wait_seconds": 600}, "steps": [{"subject": "a", "body_html": "b"},
                                                      {"subject": "c", "body_html": "d", "delay": {"hours": 20}}]})
            await eng.enroll(ws, cmp["id"], {"contact_ids": contacts[n::2]})
            await eng.launch_campaign(ws, cmp["id"])
        start = clock.now()
        for day in range(1, 4):
            await run_until(eng, clock, start + timedelta(days=day))
            async with eng.store.reading() as conn:
                inputs = await load_inputs(conn, clock.now())
                counted = await load_usage(conn, clock.now(), inputs.campaigns, list(inputs.senders), [ws])
                claims = (await conn.execute(select(emails.c.campaign_id, emails.c.sender_id, emails.c.workspace_id,
                                                    emails.c.claimed_at).where(emails.c.claimed_at.is_not(None))
                                             .order_by(emails.c.claimed_at))).all()
            recount = Usage.from_sends([SendRecord(c, s, w, parse_time(at)) for c, s, w, at in claims],
                                       inputs.campaigns)
            scenario = {"start": clock.now(), "campaigns": inputs.campaigns}
            mine, theirs = current_buckets(counted, scenario), current_buckets(recount, scenario)
            assert (mine.sender_days, mine.campaign_days, mine.campaign_hours, mine.workspace_months) == (
                theirs.sender_days, theirs.campaign_days, theirs.campaign_hours, theirs.workspace_months)
            assert mine.sender_days  # something was counted today
            # A deferral stops counting against the limits, but the pair's spacing runs from the
            # attempt: its latest send may be a deferred attempt, later than the recount's.
            planned = {k: v for k, v in theirs.last_sends.items() if k[0] in inputs.campaigns}
            assert mine.last_sends.keys() == planned.keys()
            assert all(mine.last_sends[k].at >= planned[k].at for k in planned)
        assert not any("grey@corp.io" in m.rcpt_tos for m in sink.messages)  # greylisted: only deferred
        inline = await counter_rows(eng)
        await eng.rebuild_projections()
        assert await counter_rows(eng) == inline
