"""Stops take effect at once: claims of a tick in flight go back when a stop is committed first.

Given a tick that claimed 20 emails and sends them one at a time to a slow SMTP server; when the
campaign is paused after two have gone (or the process shuts down); then no new SMTP transaction
starts: the claims not yet sent are released (``email.released``: neither sent nor uncertain) and
wait, and after a resume every email is sent exactly once.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from engine import CampaignEngine, ManualClock
from tests.conftest import SECRET
from tests.delivery.smtp_server import SinkBehaviour, SmtpSink

ALWAYS = {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start_time": "00:00", "end_time": "24:00",
          "min_wait_seconds": 0, "max_wait_seconds": 0}


async def launch(eng: CampaignEngine, sink: SmtpSink, contacts: int) -> tuple[str, str, list[str]]:
    ws = (await eng.create_workspace("w")).id
    sid = (await eng.create_sender(ws, {"email": "rep@sales.io", "daily_limit": 1000, "smtp": {
        "host": sink.host, "port": sink.port, "security": "none"}}))["id"]
    ids = [(await eng.create_contact(ws, {"email": f"p{i}@corp.io"}))["id"] for i in range(contacts)]
    cmp = await eng.create_campaign(ws, {"name": "c", "sender_ids": [sid], "schedule": ALWAYS,
                                         "steps": [{"subject": "s", "body_html": "b"}]})
    await eng.enroll(ws, cmp["id"], {"contact_ids": ids})
    await eng.launch_campaign(ws, cmp["id"])
    return ws, cmp["id"], ids


async def wait_for(condition: object, limit: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + limit
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def test_pause_mid_tick_starts_no_new_smtp_transaction(sqlite_url: str, clock: ManualClock) -> None:
    with SmtpSink(behaviour=SinkBehaviour(stall_at="mail", stall_seconds=0.15)) as sink:
        async with CampaignEngine(sqlite_url, clock=clock, secret_key=SECRET, max_concurrent_sends=1,
                                  max_connections_per_sender=1) as eng:
            ws, cid, _ = await launch(eng, sink, 20)
            tick = asyncio.create_task(eng.tick())
            await wait_for(lambda: len(sink.messages) >= 2)
            await eng.pause_campaign(ws, cid)
            report = await tick
            assert report.claimed == 20
            assert report.sent <= 3  # the two, and at most the one whose transaction had begun
            assert report.released == 20 - report.sent and report.uncertain == 0
            assert len(sink.messages) == report.sent
            stats = await eng.campaign_stats(ws, cid)
            assert stats["emails"]["scheduled"] == 20 - report.sent and stats["emails"]["uncertain"] == 0
            assert (await eng.tick()).sent == 0  # paused: nothing goes
            await eng.resume_campaign(ws, cid)
            for _ in range(10):
                clock.advance(timedelta(minutes=1))
                await eng.tick()
            received = [m.rcpt_tos[0] for m in sink.messages]
            assert sorted(received) == sorted(f"p{i}@corp.io" for i in range(20))  # each exactly once
            assert (await eng.campaign_stats(ws, cid))["emails"]["sent"] == 20


async def test_unsubscribe_mid_tick_cancels_that_contacts_claim(sqlite_url: str, clock: ManualClock) -> None:
    with SmtpSink(behaviour=SinkBehaviour(stall_at="mail", stall_seconds=0.1)) as sink:
        async with CampaignEngine(sqlite_url, clock=clock, secret_key=SECRET, max_concurrent_sends=1,
                                  max_connections_per_sender=1) as eng:
            ws, cid, ids = await launch(eng, sink, 6)
            tick = asyncio.create_task(eng.tick())
            await wait_for(lambda: len(sink.messages) >= 1)
            await eng.add_suppression(ws, {"email": "p5@corp.io"})
            report = await tick
            assert "p5@corp.io" not in [m.rcpt_tos[0] for m in sink.messages]
            assert report.released == 1 and report.sent == 5
            enrollments = {e["contact_id"]: e["status"] for e in (await eng.list_enrollments(ws, cid))["data"]}
            assert enrollments[ids[5]] == "stopped"
            assert (await eng.campaign_stats(ws, cid))["emails"]["cancelled"] == 1


async def test_shutdown_releases_claims_not_yet_sent(sqlite_url: str, clock: ManualClock) -> None:
    with SmtpSink(behaviour=SinkBehaviour(stall_at="mail", stall_seconds=0.1)) as sink:
        async with CampaignEngine(sqlite_url, clock=clock, secret_key=SECRET, max_concurrent_sends=1,
                                  max_connections_per_sender=1) as eng:
            ws, cid, _ = await launch(eng, sink, 10)
            tick = asyncio.create_task(eng.tick())
            await wait_for(lambda: len(sink.messages) >= 1)
            eng.drain_sends()
            report = await tick
            assert report.sent + report.released == 10 and report.released >= 7 and report.uncertain == 0
            assert (await eng.campaign_stats(ws, cid))["emails"]["scheduled"] == report.released
