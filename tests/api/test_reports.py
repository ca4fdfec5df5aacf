"""Campaign reports over REST: per-step stats, a DST-correct timeline, activity paging, skips, replies.

One real campaign (Europe/Paris, every hour, day and night) runs against the aiosmtpd sink across
the spring-forward night of 2026-03-29 (02:00 CET -> 03:00 CEST, a 23-hour local day). Opens,
clicks, replies and a DSN bounce are appended to the enrollment streams the way the tracking and
inbound parts do, at chosen clock times, so every number below is known exactly.

Sends (UTC -> Paris), contacts A, B, C; D is suppressed and skipped at enrollment:
  A1 03-28 21:30 (22:30 CET)   B1 22:30 (23:30 CET)   C1 23:30 (00:30 CET, the 29th)
  A2 03-29 00:30 (01:30 CET)   B2 01:30 (03:30 CEST)  C2 02:30 (04:30 CEST)
  A3 03-29 20:30 (22:30 CEST)  B3 21:30 (23:30 CEST)  C3 22:30 (00:30 CEST, the 30th)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from engine import CampaignEngine, ManualClock, create_app
from engine.service.reports import buckets
from events.catalog import email as em
from events.catalog import enrollment as en
from tests.conftest import SECRET, Api
from tests.delivery.smtp_server import SmtpSink
from tests.scenarios.test_sending import run_until

START = datetime(2026, 3, 28, 21, 30, tzinfo=UTC)
PARIS = ZoneInfo("Europe/Paris")
ALL_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def utc(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


def z(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as s:
        yield s


@pytest.fixture
async def eng(db_url: str, clock: ManualClock) -> AsyncIterator[CampaignEngine]:
    async with CampaignEngine(db_url, clock=clock, secret_key=SECRET) as e:
        yield e


@pytest.fixture
async def client(eng: CampaignEngine) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(eng)), base_url="http://test") as c:
        yield c


@dataclass
class World:
    eng: CampaignEngine
    clock: ManualClock
    api: Api
    rival: Api
    cid: str
    contacts: list[str]  # A, B, C, D
    enrollments: dict[str, str]  # contact id -> enrollment id

    @property
    def ws(self) -> str:
        return self.api.ws_id

    def email_id(self, who: int, step: int) -> str:
        return f"{self.enrollments[self.contacts[who]]}.{step}"

    async def emit(self, at: datetime, who: int, step: int, cls: type[em.EmailEvent], **fields: Any) -> None:
        """Append an engagement event on the enrollment's stream, as tracking and inbound do."""
        self.clock.set(at)
        contact = self.contacts[who]
        enr = self.enrollments[contact]
        event = cls(enrollment_id=enr, campaign_id=self.cid, contact_id=contact,
                    email_id=f"{enr}.{step}", step=step, **fields)
        await self.eng.store.append(f"enrollment-{enr}", [event], None, workspace_id=self.ws)

    async def get(self, path: str, **params: Any) -> Any:
        r = await self.api.get(f"/v1/campaigns/{self.cid}{path}", params=params)
        assert r.status_code == 200, r.text
        return r.json()


async def _world(eng: CampaignEngine, clock: ManualClock, client: httpx.AsyncClient, sink: SmtpSink) -> World:
    acme = await eng.create_workspace("acme", monthly_limit=10_000)
    rival = await eng.create_workspace("rival")
    ws = acme.id
    sid = (await eng.create_sender(ws, {"email": "rep@sales.io", "daily_limit": 500,
                                        "smtp": {"host": sink.host, "port": sink.port, "security": "none"}}))["id"]
    contacts = [(await eng.create_contact(ws, {"email": f"p{i}@corp{i}.io"}))["id"] for i in range(4)]
    await eng.add_suppression(ws, {"email": "p3@corp3.io"})
    cmp = await eng.create_campaign(ws, {"name": "DST", "sender_ids": [sid], "steps": [
        {"subject": "Hello", "body_html": "<p>1</p>"},
        {"subject": "Second", "body_html": "<p>2</p>", "delay": {"hours": 2}},
        {"subject": "Third", "body_html": "<p>3</p>", "delay": {"hours": 20}},
        {"subject": "Fourth", "body_html": "<p>4</p>", "delay": {"days": 30}}],
        "schedule": {"timezone": "Europe/Paris", "days": ALL_DAYS, "start_time": "00:00", "end_time": "24:00",
                     "every_minutes": 60}})
    assert (await eng.enroll(ws, cmp["id"], {"contact_ids": contacts}))["skipped"] == {"suppressed": 1}
    await eng.launch_campaign(ws, cmp["id"])
    enrollments = {e["contact_id"]: e["id"] for e in (await eng.list_enrollments(ws, cmp["id"]))["data"]}
    w = World(eng, clock, Api(client, ws, acme.api_key), Api(client, rival.id, rival.api_key), cmp["id"],
              contacts, enrollments)
    a, b, c = 0, 1, 2
    await run_until(eng, clock, utc(3, 29, 0, 45))  # A1, B1, C1, A2
    await w.emit(utc(3, 29, 0, 50), a, 1, em.EmailOpened)  # 01:50 CET
    await w.emit(utc(3, 29, 0, 50), b, 1, em.EmailOpened)
    await run_until(eng, clock, utc(3, 29, 1, 45))  # B2
    await w.emit(utc(3, 29, 1, 40), a, 1, em.EmailOpened)  # 03:40 CEST; a second open counts once
    await w.emit(utc(3, 29, 1, 40), b, 1, em.EmailClicked, url="https://example.com/pricing", link_index=0)
    await w.emit(utc(3, 29, 1, 40), c, 1, em.EmailOpened)
    await run_until(eng, clock, utc(3, 31, 0))  # C2, A3, B3, C3; step 4 waits 30 days
    sent = [(e["data"]["contact_id"], e["data"]["step"], e["recorded_at"])
            for e in (await eng.list_events(ws, limit=1000, type="email.sent"))["data"]]
    assert sent == [(contacts[who], step, z(at)) for who, step, at in [
        (a, 1, utc(3, 28, 21, 30)), (b, 1, utc(3, 28, 22, 30)), (c, 1, utc(3, 28, 23, 30)),
        (a, 2, utc(3, 29, 0, 30)), (b, 2, utc(3, 29, 1, 30)), (c, 2, utc(3, 29, 2, 30)),
        (a, 3, utc(3, 29, 20, 30)), (b, 3, utc(3, 29, 21, 30)), (c, 3, utc(3, 29, 22, 30))]]
    await w.emit(utc(3, 30, 6), a, 3, em.EmailReplied, out_of_office=False, message_id="<r1@corp0.io>")
    clock.set(utc(3, 30, 6, 30))
    assert (await eng.enroll(ws, w.cid, {"contact_ids": [contacts[a]]}))["skipped"] == {"already_enrolled": 1}
    await w.emit(utc(3, 30, 7, 15), b, 3, em.EmailReplied, out_of_office=True, message_id="<ooo@corp1.io>")
    await w.emit(utc(3, 30, 8), c, 3, em.EmailBounced, sender_id=sid, bounce_type="hard", reason="mailbox_unknown",
                 status="5.1.1", code=550, source="dsn")
    await w.emit(utc(3, 30, 9, 20), b, 3, em.EmailReplied, out_of_office=False, message_id="<r2@corp1.io>")
    await w.emit(utc(3, 30, 10), b, 2, em.EmailOpened)
    return w


@pytest.fixture
async def world(eng: CampaignEngine, clock: ManualClock, client: httpx.AsyncClient, sink: SmtpSink) -> World:
    return await _world(eng, clock, client, sink)


def _step(step: int, subject: str, sent: int, opened: int, clicked: int, replied: int, bounced: int,
          rates: tuple[float, float, float, float]) -> dict[str, Any]:
    return {"step": step, "subject": subject, "node_id": None, "sent": sent, "opened": opened, "clicked": clicked,
            "replied": replied, "bounced": bounced, "open_rate": rates[0], "click_rate": rates[1],
            "reply_rate": rates[2], "bounce_rate": rates[3], "variants": []}  # no A/B variants in these steps


async def test_step_stats_count_each_email_once_and_list_unsent_steps(world: World) -> None:
    assert await world.get("/stats/steps") == [
        _step(1, "Hello", 3, 3, 1, 0, 0, (100.0, 33.33, 0.0, 0.0)),
        _step(2, "Second", 3, 1, 0, 0, 0, (33.33, 0.0, 0.0, 0.0)),
        _step(3, "Third", 3, 0, 0, 2, 1, (0.0, 0.0, 66.67, 33.33)),
        _step(4, "Fourth", 0, 0, 0, 0, 0, (0.0, 0.0, 0.0, 0.0)),
    ]
    stats = await world.get("/stats")  # the totals agree with the per-step rows
    assert stats["engagement"] == {"opened": 4, "clicked": 1, "replied": 2, "unsubscribed": 0, "out_of_office": 1,
                                   "opens_total": 5}
    assert stats["emails"]["sent"] == 9 and stats["emails"]["bounced"] == 1


async def test_stats_additions_count_every_open_click_and_complaint(world: World) -> None:
    a, b, c = 0, 1, 2
    await world.emit(utc(3, 30, 10, 5), a, 2, em.EmailOpened, prefetch=True)  # a proxy: never counted
    await world.emit(utc(3, 30, 10, 10), c, 2, em.EmailComplained, feedback_type="abuse")
    await world.emit(utc(3, 30, 10, 15), b, 1, em.EmailClicked, url="https://example.com/pricing", link_index=0)
    await world.emit(utc(3, 30, 10, 20), a, 1, em.EmailClicked, url="https://example.com/pricing", link_index=0)
    await world.emit(utc(3, 30, 10, 25), a, 1, em.EmailClicked, url="https://example.com/docs", link_index=1)
    stats = await world.get("/stats")
    # 9 sent, one of them bounced later; step 4 of A, B and C was queued and is cancelled or waiting.
    assert stats["emails"]["delivered"] == 8 and stats["emails"]["complained"] == 1
    assert stats["emails"]["total"] == 12  # every email in any state: 9 sent + step 4 of A, B and C
    assert stats["contacts"]["contacted"] == 3
    assert stats["engagement"]["opened"] == 4 and stats["engagement"]["opens_total"] == 5
    assert stats["rates"]["complaint_rate"] == 11.11
    # The clock is at 10:25Z on the 30th: nothing sent in the last hour; A3, B3 and C3 (20:30Z to
    # 22:30Z on the 29th) in the last 24 hours.
    assert stats["throughput"] == {"last_hour": 0.0, "last_day": round(3 / 24, 2)}
    [sender] = stats["senders"]
    assert sender["complained"] == 1 and sender["complaint_rate"] == 11.11
    assert await world.get("/stats/links") == [
        {"url": "https://example.com/pricing", "clicks": 3, "unique_clicks": 2},
        {"url": "https://example.com/docs", "clicks": 1, "unique_clicks": 1},
    ]
    listed = (await world.api.get("/v1/campaigns")).json()["data"]
    assert [item["stats"] for item in listed] == [stats]


def _bucket(start: datetime, sent: int = 0, opened: int = 0, clicked: int = 0, replied: int = 0,
            bounced: int = 0) -> dict[str, Any]:
    return {"start": z(start), "sent": sent, "opened": opened, "clicked": clicked, "replied": replied,
            "bounced": bounced}


async def test_timeline_days_follow_paris_across_spring_forward(world: World) -> None:
    # Default range: the first send to now (10:00Z on the 30th). The 29th lasts 23 hours.
    assert await world.get("/stats/timeline") == await world.get("/stats/timeline", interval="day") == [
        _bucket(utc(3, 27, 23), sent=2),
        _bucket(utc(3, 28, 23), sent=6, opened=3, clicked=1),
        _bucket(utc(3, 29, 22), sent=1, opened=1, replied=2, bounced=1),
    ]
    # Every bucket in range is listed, empty ones too: the first is the whole local day holding
    # `from`, the last the one holding `to` (02:00 CEST on 2 April).
    days = await world.get("/stats/timeline", interval="day", **{"from": "2026-03-26T12:00:00Z",
                                                                 "to": "2026-04-02T00:00:00Z"})
    assert [d["start"] for d in days] == [z(utc(3, 25, 23)), z(utc(3, 26, 23)), z(utc(3, 27, 23)),
                                          z(utc(3, 28, 23)), z(utc(3, 29, 22)), z(utc(3, 30, 22)),
                                          z(utc(3, 31, 22)), z(utc(4, 1, 22))]
    assert [d["sent"] for d in days] == [0, 0, 2, 6, 1, 0, 0, 0]


async def test_timeline_weeks_start_monday_and_hours_skip_the_missing_one(world: World) -> None:
    assert await world.get("/stats/timeline", interval="week") == [
        _bucket(utc(3, 22, 23), sent=8, opened=3, clicked=1),  # Monday 23 March, 00:00 CET
        _bucket(utc(3, 29, 22), sent=1, opened=1, replied=2, bounced=1),  # Monday 30 March, 00:00 CEST
    ]
    # Times without an offset are read in the campaign's zone: 00:00 CET -> 05:00 CEST on the 29th,
    # four real hours, since 02:00-03:00 never happened.
    hours = await world.get("/stats/timeline", interval="hour", **{"from": "2026-03-29T00:00",
                                                                   "to": "2026-03-29T05:00"})
    assert hours == [
        _bucket(utc(3, 28, 23), sent=1),  # 00:00 CET: C1
        _bucket(utc(3, 29, 0), sent=1, opened=2),  # 01:00 CET: A2; A and B open
        _bucket(utc(3, 29, 1), sent=1, opened=1, clicked=1),  # 03:00 CEST: B2; C opens, B clicks, A re-opens
        _bucket(utc(3, 29, 2), sent=1),  # 04:00 CEST: C2
    ]


async def test_timeline_fall_back_day_has_25_hours(world: World) -> None:
    hours = await world.get("/stats/timeline", interval="hour", **{"from": "2026-10-25", "to": "2026-10-26"})
    assert len(hours) == 25 and hours[0]["start"] == z(utc(10, 24, 22)) and hours[-1]["start"] == z(utc(10, 25, 22))
    assert [h["start"] for h in hours[2:4]] == [z(utc(10, 25, 0)), z(utc(10, 25, 1))]  # 02:00 CEST, 02:00 CET
    assert all(h["sent"] == 0 for h in hours)
    days = await world.get("/stats/timeline", interval="day", **{"from": "2026-10-25T00:00:00+02:00",
                                                                 "to": "2026-10-25T23:59:00+01:00"})
    assert [d["start"] for d in days] == [z(utc(10, 24, 22))]
    fences = buckets(utc(10, 24, 22), utc(10, 25, 23), PARIS, "day")
    assert fences == [utc(10, 24, 22), utc(10, 25, 23)]  # one local day, 25 hours long


async def test_activity_pages_cover_every_event_once_in_log_order(world: World) -> None:
    raw = (await world.eng.list_events(world.ws, limit=1000))["data"]
    expected = [e for e in raw if e["type"].split(".")[0] in ("email", "enrollment")
                and e["data"].get("campaign_id") == world.cid]
    seen: list[Any] = []
    after = 0
    for _ in range(20):
        page = await world.get("/activity", after=after, limit=7)
        seen.extend(page["data"])
        assert len(page["data"]) <= 7
        if not page["has_more"]:
            break
        after = page["next_after"]
        assert after == page["data"][-1]["id"]
    assert [a["id"] for a in seen] == [e["position"] for e in expected]
    assert len(seen) > 14  # several pages were needed
    assert [a["type"] for a in seen] == [e["type"] for e in expected]
    last = await world.get("/activity", after=seen[-1]["id"])
    assert last == {"data": [], "next_after": seen[-1]["id"], "has_more": False,
                    "pagination": {"next_cursor": None, "has_more": False}}
    emails = {world.contacts[i]: f"p{i}@corp{i}.io" for i in range(4)}
    assert all(a["email"] == emails[a["contact_id"]] for a in seen)


async def test_activity_filters_and_metadata(world: World) -> None:
    a, b, c, d = world.contacts
    opens = (await world.get("/activity", type="email.opened"))["data"]
    assert [(o["contact_id"], o["step"], o["at"]) for o in opens] == [
        (a, 1, z(utc(3, 29, 0, 50))), (b, 1, z(utc(3, 29, 0, 50))), (a, 1, z(utc(3, 29, 1, 40))),
        (c, 1, z(utc(3, 29, 1, 40))), (b, 2, z(utc(3, 30, 10)))]
    outcomes = (await world.get("/activity", type="email.replied,email.bounced,email.clicked"))["data"]
    assert [(o["type"], o["contact_id"], o["metadata"].get("out_of_office")) for o in outcomes] == [
        ("email.clicked", b, None), ("email.replied", a, False), ("email.replied", b, True),
        ("email.bounced", c, None), ("email.replied", b, False)]
    assert outcomes[0]["metadata"]["url"] == "https://example.com/pricing"
    assert outcomes[3]["metadata"]["bounce_type"] == "hard" and outcomes[3]["metadata"]["source"] == "dsn"
    sent = (await world.get("/activity", type="email.sent", contact_id=a))["data"]
    assert [s["step"] for s in sent] == [1, 2, 3]
    assert sent[0]["metadata"]["sender_id"].startswith("snd_") and sent[0]["metadata"]["message_id"]
    assert sent[0]["enrollment_id"] == world.enrollments[a] and sent[0]["email"] == "p0@corp0.io"
    mine = (await world.get("/activity", contact_id=a, limit=500))["data"]
    assert {m["contact_id"] for m in mine} == {a}
    assert {m["variant"] for m in mine} == {None}  # no A/B variants in these steps
    assert [m["type"] for m in mine if m["type"].startswith("enrollment.")] == [
        "enrollment.created", "enrollment.skipped"]  # the re-enrollment refused on the 30th
    skipped = (await world.get("/activity", type="enrollment.skipped"))["data"]
    assert [(s["contact_id"], s["metadata"]["reason"]) for s in skipped] == [(d, "suppressed"),
                                                                              (a, "already_enrolled")]
    late = (await world.get("/activity", **{"from": "2026-03-30T07:00:00Z", "to": "2026-03-30T09:20:00Z"}))["data"]
    assert [x["type"] for x in late] == ["email.replied", "email.bounced"]
    assert (await world.get("/activity", contact_id="con_unknown"))["data"] == []


async def test_skips_and_replies(world: World) -> None:
    a, b, c, d = world.contacts
    assert await world.get("/skips") == [
        {"contact_id": a, "email": "p0@corp0.io", "kind": "already_enrolled", "at": z(utc(3, 30, 6, 30))},
        {"contact_id": d, "email": "p3@corp3.io", "kind": "suppressed", "at": z(START)}]
    assert [s["contact_id"] for s in await world.get("/skips", kind="suppressed")] == [d]
    assert [s["contact_id"] for s in await world.get("/skips", limit=1)] == [a]
    replies = await world.get("/replies")
    assert [{k: r[k] for k in ("contact_id", "email", "step", "replied_at", "hours_to_reply", "out_of_office")}
            for r in replies] == [
        {"contact_id": b, "email": "p1@corp1.io", "step": 3, "replied_at": z(utc(3, 30, 9, 20)),
         "hours_to_reply": 11.83, "out_of_office": False},  # 21:30 -> 09:20
        {"contact_id": b, "email": "p1@corp1.io", "step": 3, "replied_at": z(utc(3, 30, 7, 15)),
         "hours_to_reply": 9.75, "out_of_office": True},
        {"contact_id": a, "email": "p0@corp0.io", "step": 3, "replied_at": z(utc(3, 30, 6)),
         "hours_to_reply": 9.5, "out_of_office": False}]
    assert len(await world.get("/replies", limit=2)) == 2
    # After erasure the contact's address is gone from every report; the events stay.
    await world.eng.erase_contact(world.ws, b)
    assert {r["email"] for r in await world.get("/replies") if r["contact_id"] == b} == {None}
    assert {x["email"] for x in (await world.get("/activity", contact_id=b, limit=500))["data"]} == {None}


async def test_skips_include_enrollments_skipped_later(eng: CampaignEngine, client: httpx.AsyncClient,
                                                      clock: ManualClock) -> None:
    acme = await eng.create_workspace("acme")
    ws = acme.id
    api = Api(client, ws, acme.api_key)
    ids = [(await eng.create_contact(ws, {"email": f"q{i}@corp.io"}))["id"] for i in range(2)]
    cid = (await eng.create_campaign(ws, {"name": "draft", "steps": [{"subject": "s", "body_html": "b"}]}))["id"]
    await eng.enroll(ws, cid, {"contact_ids": ids})
    enr = {e["contact_id"]: e["id"] for e in (await eng.list_enrollments(ws, cid))["data"]}
    clock.advance(timedelta(hours=1))
    base = {"campaign_id": cid, "contact_id": ids[0], "enrollment_id": enr[ids[0]]}
    await eng.store.append(f"enrollment-{enr[ids[0]]}", [en.EnrollmentSkipped(reason="mx_invalid", **base)], None,
                           workspace_id=ws)
    clock.advance(timedelta(hours=1))
    base = {"campaign_id": cid, "contact_id": ids[1], "enrollment_id": enr[ids[1]]}
    await eng.store.append(f"enrollment-{enr[ids[1]]}", [en.EnrollmentStopped(
        reason="free_email_domain", status="skipped", **base)], None, workspace_id=ws)
    r = await api.get(f"/v1/campaigns/{cid}/skips")
    assert r.status_code == 200
    assert r.json() == [  # one entry each: the logged skip is not repeated by its enrollment row
        {"contact_id": ids[1], "email": "q1@corp.io", "kind": "free_email_domain", "at": z(START + timedelta(hours=2))},
        {"contact_id": ids[0], "email": "q0@corp.io", "kind": "mx_invalid", "at": z(START + timedelta(hours=1))}]
    assert (await api.get(f"/v1/campaigns/{cid}/stats/timeline")).json() == []  # nothing sent yet


REPORTS = ["/stats/steps", "/stats/timeline", "/activity", "/skips", "/replies"]


async def test_other_workspace_and_unknown_ids_are_404(world: World) -> None:
    for path in REPORTS:
        theirs = await world.rival.get(f"/v1/campaigns/{world.cid}{path}")
        unknown = await world.api.get(f"/v1/campaigns/cmp_nope{path}")
        assert theirs.status_code == unknown.status_code == 404
        assert theirs.json()["error"]["code"] == unknown.json()["error"]["code"] == "campaign_not_found"
        assert (await world.api.client.get(f"/v1/campaigns/{world.cid}{path}")).status_code == 401


BAD = [
    ("/stats/timeline", {"interval": "month"}, ["interval"]),
    ("/stats/timeline", {"from": "yesterday", "to": "2026-13-01T00:00:00Z"}, ["from", "to"]),
    ("/stats/timeline", {"from": "2026-03-30T00:00:00Z", "to": "2026-03-29T00:00:00Z"}, ["from"]),
    ("/stats/timeline", {"interval": "hour", "from": "2026-01-01T00:00:00Z", "to": "2026-12-31T00:00:00Z"},
     ["interval"]),
    ("/activity", {"limit": "0"}, ["limit"]),
    ("/activity", {"limit": "501", "after": "-1"}, ["after", "limit"]),
    ("/activity", {"limit": "ten"}, ["limit"]),
    ("/activity", {"type": "email.sent,email.teleported"}, ["type"]),
    ("/activity", {"from": "soon"}, ["from"]),
    ("/skips", {"kind": "bored"}, ["kind"]),
    ("/skips", {"limit": "1000"}, ["limit"]),
    ("/replies", {"limit": "-3"}, ["limit"]),
]


async def test_bad_parameters_are_422(world: World) -> None:
    for path, params, fields in BAD:
        r = await world.api.get(f"/v1/campaigns/{world.cid}{path}", params=params)
        assert r.status_code == 422, (path, params, r.text)
        body = r.json()["error"]
        assert body["code"] == "validation_failed"
        assert sorted(e["field"] for e in body["details"]["errors"]) == fields, (path, params)
        assert all(e["message"] for e in body["details"]["errors"])


async def test_timeline_caps_the_number_of_buckets_at_2000(world: World) -> None:
    last = (date(2025, 1, 1) + timedelta(days=2000)).isoformat()  # local midnights in Paris
    days = await world.get("/stats/timeline", interval="day", **{"from": "2025-01-01", "to": last})
    assert len(days) == 2000 and sum(d["sent"] for d in days) == 9
    r = await world.api.get(f"/v1/campaigns/{world.cid}/stats/timeline",
                            params={"interval": "day", "from": "2025-01-01", "to": f"{last}T00:01"})
    assert r.status_code == 422 and r.json()["error"]["details"]["errors"][0]["field"] == "interval"
