"""Whole campaigns on a ManualClock against a real aiosmtpd sink: tick, forecast, outcomes."""

from __future__ import annotations

import socket
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from engine import CampaignEngine, ManualClock
from tests.conftest import SECRET
from tests.delivery.smtp_server import SinkBehaviour, SmtpSink

START = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)  # Monday


async def setup(engine: CampaignEngine, sink: SmtpSink, *, contacts: int = 10, senders: int = 1,
                schedule: dict[str, Any] | None = None, steps: int = 3, names: list[str] | None = None,
                settings: dict[str, Any] | None = None,
                variants: list[dict[str, Any]] | None = None) -> tuple[str, str, list[str]]:
    ws = (await engine.create_workspace("acme", monthly_limit=100_000)).id
    sids = [(await engine.create_sender(ws, {"email": f"rep{i}@sales.io", "from_name": f"Rep {i}", "daily_limit": 500,
                                             "smtp": {"host": sink.host, "port": sink.port, "security": "none"}}))["id"]
            for i in range(senders)]
    ids = []
    for i in range(contacts):
        name = names[i] if names else f"P{i}"
        ids.append((await engine.create_contact(ws, {"email": f"p{i}@corp{i % 3}.io", "first_name": name}))["id"])
    step_defs = [{"subject": "Hello {{first_name|there}}", "body_html": "<p>Hi {{first_name}}, step 1</p>",
                  "delay": {"days": 0}, **({"variants": variants} if variants else {})}]
    for n in range(2, steps + 1):
        step_defs.append({"subject": f"Step {n}", "body_html": f"<p>Follow-up {n}</p>", "delay": {"days": n - 1},
                          "same_thread": True})
    cmp = await engine.create_campaign(ws, {
        "name": "Week", "sender_ids": sids, "steps": step_defs, "settings": settings or {},
        "schedule": schedule or {"timezone": "Europe/Paris", "start_time": "09:00", "end_time": "17:00",
                                 "min_wait_seconds": 600, "max_wait_seconds": 1800}})
    await engine.enroll(ws, cmp["id"], {"contact_ids": ids})
    await engine.launch_campaign(ws, cmp["id"])
    return ws, cmp["id"], ids


async def run_until(engine: CampaignEngine, clock: ManualClock, end: datetime) -> list[Any]:
    reports = []
    while True:
        report = await engine.tick()
        reports.append(report)
        if report.next_due_at is None or report.next_due_at > end:
            return reports
        clock.set(report.next_due_at)


async def test_tick_sends_exactly_the_forecast(eng: CampaignEngine, clock: ManualClock, sink: SmtpSink) -> None:
    """Day by day, step by step, sender by sender and A/B variant by variant (step 1 has two,
    weighted 1:2), the engine sends what the forecast said."""
    ws, cid, _ = await setup(eng, sink, contacts=12, senders=2,
                             variants=[{"subject": "Alpha"}, {"subject": "Beta", "weight": 2}])
    forecast = await eng.forecast(ws, cid, days=7)
    assert forecast["total"] == 36
    await run_until(eng, clock, START + timedelta(days=8))
    tz = ZoneInfo("Europe/Paris")
    msgs = sink.messages
    assert len(msgs) == 36 and len({m.message_id for m in msgs}) == 36  # never twice
    actual: Counter[str] = Counter()
    by_step: Counter[tuple[str, str]] = Counter()
    by_sender: Counter[tuple[str, str]] = Counter()
    by_variant: Counter[tuple[str, str, str]] = Counter()
    events = (await eng.list_events(ws, limit=1000, type="email.sent"))["data"]
    for e in events:
        day = datetime.fromisoformat(e["recorded_at"].replace("Z", "+00:00")).astimezone(tz)
        assert day.weekday() < 5 and 9 <= day.hour < 17  # never outside the window
        actual[day.date().isoformat()] += 1
        by_step[(day.date().isoformat(), str(e["data"]["step"]))] += 1
        by_sender[(day.date().isoformat(), e["data"]["sender_id"])] += 1
        if e["data"]["variant"] is not None:
            by_variant[(day.date().isoformat(), str(e["data"]["step"]), e["data"]["variant"])] += 1
    predicted_variants = Counter({(d["date"], step, variant): n for d in forecast["days"]
                                  for step, counts in d["by_variant"].items() for variant, n in counts.items()})
    assert predicted_variants == by_variant  # which variant each email uses, per day
    # every step-1 email has one of its variants (ids drawn at random, so which mix is not fixed)
    assert {(step, variant) for _, step, variant in by_variant} <= {("1", "A"), ("1", "B")}
    assert sum(by_variant.values()) == 12
    for d in forecast["days"]:
        assert sum(d["by_variant"].get("1", {}).values()) == d["by_step"].get("1", 0)
        assert actual.get(d["date"], 0) == d["count"], d
        for step, n in d["by_step"].items():
            assert by_step[(d["date"], step)] == n
        for sender, n in d["by_sender"].items():
            assert by_sender[(d["date"], sender)] == n
    assert sum(by_sender.values()) == sum(sum(d["by_sender"].values()) for d in forecast["days"])
    stats = await eng.campaign_stats(ws, cid)
    assert stats["emails"]["sent"] == 36 and stats["contacts"]["completed"] == 12
    assert (await eng.get_campaign(ws, cid))["status"] == "completed"
    assert (await eng.get_account(ws))["sent_this_month"] == 36


async def test_follow_ups_thread_and_keep_their_sender(eng: CampaignEngine, clock: ManualClock,
                                                       sink: SmtpSink) -> None:
    await setup(eng, sink, contacts=4, senders=2)
    await run_until(eng, clock, START + timedelta(days=8))
    by_rcpt: dict[str, list[Any]] = {}
    for m in sink.messages:
        by_rcpt.setdefault(m.rcpt_tos[0], []).append(m)
    for msgs in by_rcpt.values():
        assert len(msgs) == 3
        assert len({m.mail_from for m in msgs}) == 1  # one sender for all steps
        first, second, third = (m.headers for m in msgs)
        assert second["Subject"] == "Step 2"  # a follow-up with its own subject keeps it, threaded all the same
        assert second["In-Reply-To"] == first["Message-ID"]
        assert first["Message-ID"] in third["References"] and second["Message-ID"] in third["References"]
        assert first["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert "https://track.example.com/u/" in first["List-Unsubscribe"]


async def test_header_injection_through_contact_data(eng: CampaignEngine, clock: ManualClock,
                                                     sink: SmtpSink) -> None:
    await setup(eng, sink, contacts=1, steps=1, names=["X\r\nBcc: a@b.c"])
    await run_until(eng, clock, START + timedelta(days=2))
    [msg] = sink.messages
    assert msg.rcpt_tos == ("p0@corp0.io",)
    assert msg.headers["Bcc"] is None and b"\r\nBcc:" not in msg.data.split(b"\r\n\r\n")[0]


async def test_tick_is_idempotent_and_claims_before_sending(eng: CampaignEngine, clock: ManualClock,
                                                             sink: SmtpSink) -> None:
    ws, _cid, _ = await setup(eng, sink, contacts=3, steps=1)
    clock.set(datetime(2026, 1, 5, 8, 0, tzinfo=UTC))  # 09:00 Paris
    first = await eng.tick()
    second = await eng.tick()
    assert first.sent == 1 and second.sent == 0
    types = [e["type"] for e in (await eng.list_events(ws, limit=1000))["data"]]
    assert types.index("email.claimed") < types.index("email.sent")


async def test_downtime_never_bursts(eng: CampaignEngine, clock: ManualClock, sink: SmtpSink) -> None:
    await setup(eng, sink, contacts=20, steps=1, senders=2,
                schedule={"timezone": "UTC", "start_time": "08:00", "end_time": "18:00", "every_minutes": 15})
    await eng.tick()
    assert len(sink.messages) == 2
    clock.advance(timedelta(hours=6))  # no tick for six hours
    report = await eng.tick()
    assert report.sent == 2  # one per sender, not a backlog
    assert report.next_due_at == clock.now() + timedelta(minutes=15)


async def test_pause_sends_nothing_and_resume_continues_spaced(eng: CampaignEngine, clock: ManualClock,
                                                              sink: SmtpSink) -> None:
    ws, cid, _ = await setup(eng, sink, contacts=10, steps=1,
                             schedule={"timezone": "UTC", "start_time": "08:00", "end_time": "18:00",
                                       "every_minutes": 30})
    assert (await eng.tick()).sent == 1
    await eng.pause_campaign(ws, cid)
    clock.advance(timedelta(hours=2))
    assert (await eng.tick()).sent == 0
    await eng.resume_campaign(ws, cid)
    r = await eng.tick()
    assert r.sent == 1 and r.next_due_at == clock.now() + timedelta(minutes=30)


async def test_smtp_outcomes(eng: CampaignEngine, clock: ManualClock, sink: SmtpSink) -> None:
    ws, cid, ids = await setup(eng, sink, contacts=3, steps=2,
                               schedule={"timezone": "UTC", "start_time": "00:00", "end_time": "24:00",
                                         "every_minutes": 1})
    sink.behaviour = SinkBehaviour(rcpt_replies={"p0@corp0.io": "550 5.1.1 no such user",
                                                 "p1@corp1.io": "451 4.3.0 try later"})
    await eng.tick()
    clock.advance(timedelta(minutes=1))
    await eng.tick()
    clock.advance(timedelta(minutes=1))
    await eng.tick()
    enrollments = {e["contact_id"]: e for e in (await eng.list_enrollments(ws, cid))["data"]}
    assert enrollments[ids[0]]["status"] == "bounced"
    contact = await eng.get_contact(ws, ids[0])
    assert contact["bounced"] is True
    stats = await eng.campaign_stats(ws, cid)
    assert stats["emails"]["bounced"] == 1 and stats["emails"]["deferred"] == 1
    sink.behaviour = SinkBehaviour()
    await run_until(eng, clock, clock.now() + timedelta(days=3))
    delivered = Counter(m.rcpt_tos[0] for m in sink.messages)
    assert delivered == {"p1@corp1.io": 2, "p2@corp2.io": 2}


async def test_connection_lost_after_data_is_uncertain_and_never_resent(eng: CampaignEngine, clock: ManualClock,
                                                                        sink: SmtpSink) -> None:
    ws, cid, _ = await setup(eng, sink, contacts=1, steps=1,
                             schedule={"timezone": "UTC", "start_time": "00:00", "end_time": "24:00"})
    sink.behaviour = SinkBehaviour(drop_after_data=True)
    report = await eng.tick()
    assert report.uncertain == 1 and report.sent == 0
    sink.behaviour = SinkBehaviour()
    await run_until(eng, clock, clock.now() + timedelta(days=2))
    assert len(sink.messages) == 1  # the server got it once; the engine never retried
    assert (await eng.campaign_stats(ws, cid))["emails"]["uncertain"] == 1


async def test_auth_failure_disconnects_sender(sqlite_url: str, clock: ManualClock) -> None:
    """Given a wrong password; when five sends fail to log in; then the sender is disconnected (four
    are not enough), its emails wait with their retry time shown, and go once it is fixed."""
    with SmtpSink(users={"rep": "right"}) as sink:
        async with CampaignEngine(sqlite_url, clock=clock, secret_key=SECRET) as eng:
            ws = (await eng.create_workspace("w")).id
            sid = (await eng.create_sender(ws, {"email": "rep@sales.io", "smtp": {
                "host": sink.host, "port": sink.port, "username": "rep", "password": "wrong",
                "security": "none"}}))["id"]
            ids = [(await eng.create_contact(ws, {"email": f"a{i}@corp.io"}))["id"] for i in range(5)]
            cmp = await eng.create_campaign(ws, {"name": "c", "sender_ids": [sid], "steps": [
                {"subject": "s", "body_html": "b"}], "schedule": {"start_time": "00:00", "end_time": "24:00",
                                                                  "min_wait_seconds": 0, "max_wait_seconds": 0}})
            await eng.enroll(ws, cmp["id"], {"contact_ids": ids[:4]})
            await eng.launch_campaign(ws, cmp["id"])
            report = await eng.tick()
            assert report.deferred == 4 and report.sent == 0
            assert (await eng.get_sender(ws, sid))["status"] == "active"  # four failures are not five
            await eng.enroll(ws, cmp["id"], {"contact_ids": ids[4:]})
            report = await eng.tick()
            assert report.deferred == 1
            sender = await eng.get_sender(ws, sid)
            assert sender["status"] == "disconnected" and "5 connection or login failures" in sender["disabled_reason"]
            enrollments = (await eng.list_enrollments(ws, cmp["id"]))["data"]
            assert all(e["next_send_at"] is not None and e["next_send_at"] > clock.now().isoformat()[:19]
                       for e in enrollments)  # the retry time shows
            assert (await eng.campaign_stats(ws, cmp["id"]))["emails"]["deferred"] == 5
            assert (await eng.tick()).sent == 0  # waits while disconnected
            await eng.update_sender(ws, sid, {"smtp": {"host": sink.host, "port": sink.port, "username": "rep",
                                                       "password": "right", "security": "none"}})
            await eng.reenable_sender(ws, sid)
            clock.advance(timedelta(minutes=10))  # past the retry (5 min)
            assert (await eng.tick()).sent == 5


async def test_unreachable_server_defers_and_disconnects(sqlite_url: str, clock: ManualClock) -> None:
    """Given an SMTP server that is down; when sends fail to connect; then they count as deferred,
    and after five in a row the sender is disconnected with the reason."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: connections are refused
        async with CampaignEngine(sqlite_url, clock=clock, secret_key=SECRET) as eng:
            ws = (await eng.create_workspace("w")).id
            sid = (await eng.create_sender(ws, {"email": "rep@sales.io", "smtp": {
                "host": "127.0.0.1", "port": port, "security": "none"}}))["id"]
            ids = [(await eng.create_contact(ws, {"email": f"a{i}@corp.io"}))["id"] for i in range(6)]
            cmp = await eng.create_campaign(ws, {"name": "c", "sender_ids": [sid], "steps": [
                {"subject": "s", "body_html": "b"}], "schedule": {"start_time": "00:00", "end_time": "24:00",
                                                                  "min_wait_seconds": 0, "max_wait_seconds": 0}})
            await eng.enroll(ws, cmp["id"], {"contact_ids": ids})
            await eng.launch_campaign(ws, cmp["id"])
            report = await eng.tick()
            assert report.deferred == 6 and report.sent == 0
            assert (await eng.campaign_stats(ws, cmp["id"]))["emails"]["deferred"] == 6
            sender = await eng.get_sender(ws, sid)
            assert sender["status"] == "disconnected" and "connection" in sender["disabled_reason"]


async def test_follow_up_without_subject_replies_to_step_one(eng: CampaignEngine, clock: ManualClock,
                                                              sink: SmtpSink) -> None:
    """Given a same-thread step 2 with an empty subject, when it is sent, then its subject is
    ``Re: `` + step 1's rendered subject, and preview shows the very same subject."""
    ws = (await eng.create_workspace("w")).id
    sid = (await eng.create_sender(ws, {"email": "rep@sales.io", "smtp": {
        "host": sink.host, "port": sink.port, "security": "none"}}))["id"]
    con = (await eng.create_contact(ws, {"email": "ann@corp.io", "first_name": "Ann", "company": "Corp One"}))["id"]
    cmp = await eng.create_campaign(ws, {"name": "c", "sender_ids": [sid], "schedule": {
        "start_time": "00:00", "end_time": "24:00", "min_wait_seconds": 0, "max_wait_seconds": 0}, "steps": [
        {"subject": "Hi {{first_name|there}}", "body_html": "<p>one</p>"},
        {"subject": "", "body_html": "<p>two</p>", "delay": {"days": 1}}]})
    await eng.enroll(ws, cmp["id"], {"contact_ids": [con]})
    await eng.launch_campaign(ws, cmp["id"])
    await run_until(eng, clock, clock.now() + timedelta(days=2))
    subjects = [m.headers["Subject"] for m in sink.messages]
    assert subjects == ["Hi Ann", "Re: Hi Ann"]
    preview = await eng.preview(ws, cmp["id"], contact_id=con)
    assert [s["subject"] for s in preview["steps"]] == subjects


async def test_synchronous_soft_refusal_lets_the_sequence_go_on(sqlite_url: str, clock: ManualClock) -> None:
    """Given a mailbox that is full (552 5.2.2, soft by RFC 3463); when step 1 is refused; then the
    email is a soft bounce and step 2 is still scheduled, while a 550 5.1.1 stops its enrollment."""
    behaviour = SinkBehaviour(rcpt_replies={"full@corp.io": "552 5.2.2 mailbox full",
                                            "gone@corp.io": "550 5.1.1 no such user"})
    with SmtpSink(behaviour=behaviour) as sink:
        async with CampaignEngine(sqlite_url, clock=clock, secret_key=SECRET) as eng:
            ws = (await eng.create_workspace("w")).id
            sid = (await eng.create_sender(ws, {"email": "rep@sales.io", "smtp": {
                "host": sink.host, "port": sink.port, "security": "none"}}))["id"]
            full = (await eng.create_contact(ws, {"email": "full@corp.io"}))["id"]
            gone = (await eng.create_contact(ws, {"email": "gone@corp.io"}))["id"]
            cmp = await eng.create_campaign(ws, {"name": "c", "sender_ids": [sid], "schedule": {
                "start_time": "00:00", "end_time": "24:00", "min_wait_seconds": 0, "max_wait_seconds": 0}, "steps": [
                {"subject": "s", "body_html": "b"}, {"subject": "t", "body_html": "c", "delay": {"days": 1}}]})
            await eng.enroll(ws, cmp["id"], {"contact_ids": [full, gone]})
            await eng.launch_campaign(ws, cmp["id"])
            report = await eng.tick()
            assert report.bounced == 2
            status = {e["contact_id"]: e for e in (await eng.list_enrollments(ws, cmp["id"]))["data"]}
            assert status[gone]["status"] == "bounced"
            assert status[full]["status"] not in ("bounced", "completed", "stopped")
            assert status[full]["next_send_at"] is not None  # step 2 waits its delay
