"""``settings.auto_enroll``: an active campaign takes the contacts that enter its selection.

Given a launched campaign whose settings select contacts by list and/or filter; when contacts are
created, updated into the filter, imported or added to a list, then they are enrolled (with a
manual enroll's skip rules and events) and ``tick()`` sends to them through the real SMTP sink.
A contact already in the selection is not enrolled again, a paused campaign takes nobody,
launching back-fills nobody, and another workspace's contacts never enter.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from engine import CampaignEngine, ManualClock, create_app
from tests.delivery.smtp_server import SmtpSink

PUBLIC = "https://track.example.com"
# Every day, all day, no wait between sends: one tick sends everything due.
NOW = {"timezone": "UTC", "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start_time": "00:00",
       "end_time": "24:00", "min_wait_seconds": 0, "max_wait_seconds": 0}
STEP = [{"subject": "Hello {{first_name|there}}", "body_html": "<p>Hi</p>"}]
ACME = {"rules": [{"field": "company", "op": "eq", "value": "Acme"}]}
GOLD = {"rules": [{"field": "custom.tier", "op": "eq", "value": "gold"}]}


@dataclass
class World:
    """One workspace with a sender on the sink and a list; ``http`` speaks for it over REST."""

    ws: str
    sender_id: str
    list_id: str
    http: httpx.AsyncClient


@pytest.fixture
async def world(eng: CampaignEngine, sink: SmtpSink) -> AsyncIterator[World]:
    ws = await eng.create_workspace("w")
    sid = (await eng.create_sender(ws.id, {"email": "rep@sales.io", "smtp": {
        "host": sink.host, "port": sink.port, "security": "none"}}))["id"]
    lid = (await eng.create_list(ws.id, {"name": "inbound leads"}))["id"]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(eng)), base_url=PUBLIC,
                                 headers={"Authorization": f"Bearer {ws.api_key}"}) as http:
        yield World(ws.id, sid, lid, http)


async def launched(world: World, auto_enroll: dict[str, Any] | None, *, evergreen: bool = True) -> str:
    """A campaign created and launched over REST with this ``settings.auto_enroll``."""
    created = await world.http.post("/v1/campaigns", json={
        "name": "auto", "sender_ids": [world.sender_id], "schedule": NOW, "steps": STEP,
        "settings": {"evergreen": evergreen, "auto_enroll": auto_enroll}})
    assert created.status_code == 201, created.text
    assert created.json()["settings"]["auto_enroll"] is not None or auto_enroll is None
    cid = str(created.json()["id"])
    launch = await world.http.post(f"/v1/campaigns/{cid}/launch")
    assert launch.status_code == 200 and launch.json()["status"] == "active", launch.text
    return cid


async def contact(eng: CampaignEngine, world: World, email: str, **fields: Any) -> str:
    return str((await eng.create_contact(world.ws, {"email": email, **fields}))["id"])


async def enrolled(eng: CampaignEngine, ws: str, cid: str) -> list[str]:
    return [e["email"] for e in (await eng.list_enrollments(ws, cid, per_page=200))["data"]]


def recipients(sink: SmtpSink) -> list[str]:
    return sorted(m.rcpt_tos[0] for m in sink.messages)


async def test_contacts_entering_the_selection_are_enrolled_and_sent(eng: CampaignEngine, clock: ManualClock,
                                                                     sink: SmtpSink, world: World) -> None:
    # given a campaign taking Acme contacts, and one taking the list's gold-tier members
    acme = await launched(world, {"list_ids": [], "filter": ACME})
    gold = await launched(world, {"list_ids": [world.list_id], "filter": GOLD})
    other = await contact(eng, world, "b@other.io", company="Other")

    # when a contact is created matching, one is updated into the filter, two are imported (one
    # matching), and the list gains a gold and a silver member, one of them by an import to the list
    await contact(eng, world, "a@acme.io", first_name="Ann", company="Acme")
    await eng.update_contact(world.ws, other, {"company": "Acme"})
    await eng.import_contacts(world.ws, [{"email": "c@acme.io", "company": "Acme"},
                                         {"email": "d@else.io", "company": "Else"}])
    silver = await contact(eng, world, "s@list.io", custom_fields={"tier": "silver"})
    golden = await contact(eng, world, "g@list.io", custom_fields={"tier": "gold"})
    added = await world.http.post(f"/v1/lists/{world.list_id}/contacts", json={"contact_ids": [silver, golden]})
    assert added.status_code == 200, added.text
    await eng.import_contacts(world.ws, [{"email": "h@list.io", "tier": "gold"}], list_id=world.list_id)

    # then each campaign enrolled exactly its entrants, and one tick sends to every one of them
    assert await enrolled(eng, world.ws, acme) == ["a@acme.io", "b@other.io", "c@acme.io"]
    assert await enrolled(eng, world.ws, gold) == ["g@list.io", "h@list.io"]
    await eng.tick()
    assert recipients(sink) == ["a@acme.io", "b@other.io", "c@acme.io", "g@list.io", "h@list.io"]
    ann = next(m for m in sink.messages if m.rcpt_tos[0] == "a@acme.io")
    assert str(ann.headers["Subject"]) == "Hello Ann"

    # when already selected contacts match again (an edit that keeps the filter, a second list add,
    # a re-import of the same row)
    await eng.update_contact(world.ws, other, {"first_name": "Bea"})
    await world.http.post(f"/v1/lists/{world.list_id}/contacts", json={"contact_ids": [golden]})
    await eng.import_contacts(world.ws, [{"email": "c@acme.io", "company": "Acme", "last_name": "Cole"}])
    # then nothing is enrolled or recorded again
    acme_stats = await eng.campaign_stats(world.ws, acme)
    assert acme_stats["contacts"]["total"] == 3 and acme_stats["skipped"]["already_enrolled"] == 0
    assert (await eng.campaign_stats(world.ws, gold))["contacts"]["total"] == 2

    # when a contact leaves the filter and comes back, it entered again: the enroll path skips it
    # as already enrolled, as a manual enroll would, and nothing more is sent
    await eng.update_contact(world.ws, other, {"company": "Gone"})
    await eng.update_contact(world.ws, other, {"company": "Acme"})
    acme_stats = await eng.campaign_stats(world.ws, acme)
    assert acme_stats["contacts"]["total"] == 3 and acme_stats["skipped"]["already_enrolled"] == 1
    await eng.tick()
    assert len(sink.messages) == 5


async def test_suppressed_and_unsubscribed_contacts_are_skipped_with_their_reason(
        eng: CampaignEngine, clock: ManualClock, sink: SmtpSink, world: World) -> None:
    # given a campaign taking Acme contacts, one taking the list's members, a suppressed address,
    # and an Acme contact who got the first campaign's email and unsubscribed with one click
    acme = await launched(world, {"list_ids": [], "filter": ACME})
    members = await launched(world, {"list_ids": [world.list_id], "filter": None})
    await eng.add_suppression(world.ws, {"email": "blocked@acme.io"})
    leaving = await contact(eng, world, "u@acme.io", company="Acme")
    await eng.tick()
    header = str(sink.messages[0].headers["List-Unsubscribe"])
    link = re.search(r"<(https://[^>]+)>", header)
    assert link is not None
    answer = await world.http.post(link.group(1), content=b"List-Unsubscribe=One-Click",
                                   headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 200

    # when the suppressed address is created matching, and the unsubscribed contact joins the list
    await contact(eng, world, "blocked@acme.io", company="Acme")
    await eng.add_list_contacts(world.ws, world.list_id, {"contact_ids": [leaving]})

    # then both are skipped with the most specific reason, recorded like a manual enroll's skips
    assert (await eng.campaign_stats(world.ws, acme))["skipped"]["suppressed"] == 1
    member_stats = await eng.campaign_stats(world.ws, members)
    assert member_stats["skipped"]["unsubscribed"] == 1 and member_stats["contacts"]["total"] == 0
    skips = (await world.http.get("/v1/events", params={"type": "enrollment.skipped"})).json()["data"]
    assert sorted((e["data"]["campaign_id"], e["data"]["reason"]) for e in skips) == sorted(
        [(acme, "suppressed"), (members, "unsubscribed")])
    await eng.tick()
    assert recipients(sink) == ["u@acme.io"]


async def test_only_an_active_campaign_enrolls_and_launching_backfills_nobody(
        eng: CampaignEngine, clock: ManualClock, sink: SmtpSink, world: World) -> None:
    # given an Acme contact created while the campaign is a draft
    created = await world.http.post("/v1/campaigns", json={
        "name": "later", "sender_ids": [world.sender_id], "schedule": NOW, "steps": STEP,
        "settings": {"evergreen": True, "auto_enroll": {"filter": ACME}}})
    cid = created.json()["id"]
    await contact(eng, world, "early@acme.io", company="Acme")
    # when the campaign is launched, then it has taken nobody (no back-fill)
    await world.http.post(f"/v1/campaigns/{cid}/launch")
    assert await enrolled(eng, world.ws, cid) == []

    # when it is paused, a matching contact comes and goes unenrolled, even after the resume
    assert (await world.http.post(f"/v1/campaigns/{cid}/pause")).json()["status"] == "paused"
    await contact(eng, world, "paused@acme.io", company="Acme")
    assert (await world.http.post(f"/v1/campaigns/{cid}/resume")).json()["status"] == "active"
    assert await enrolled(eng, world.ws, cid) == []
    # ... while one coming after the resume is enrolled and sent to
    await contact(eng, world, "resumed@acme.io", company="Acme")
    assert await enrolled(eng, world.ws, cid) == ["resumed@acme.io"]

    # when auto_enroll is set to null while active (a live edit), then it takes nobody more
    off = await world.http.patch(f"/v1/campaigns/{cid}", json={"settings": {"evergreen": True,
                                                                            "auto_enroll": None}})
    assert off.status_code == 200 and off.json()["settings"]["auto_enroll"] is None
    await contact(eng, world, "off@acme.io", company="Acme")
    await eng.tick()
    assert await enrolled(eng, world.ws, cid) == ["resumed@acme.io"]
    assert recipients(sink) == ["resumed@acme.io"]


async def test_another_workspace_never_enters_and_bad_settings_change_nothing(
        eng: CampaignEngine, clock: ManualClock, sink: SmtpSink, world: World) -> None:
    # given a campaign of this workspace on its list and the Acme filter, and another workspace
    # with its own list
    cid = await launched(world, {"list_ids": [world.list_id], "filter": ACME})
    foreign = await eng.create_workspace("other")
    foreign_list = (await eng.create_list(foreign.id, {"name": "theirs"}))["id"]

    # when the other workspace creates, imports and lists Acme contacts
    theirs = (await eng.create_contact(foreign.id, {"email": "x@acme.io", "company": "Acme"}))["id"]
    await eng.import_contacts(foreign.id, [{"email": "y@acme.io", "company": "Acme"}], list_id=foreign_list)
    await eng.add_list_contacts(foreign.id, foreign_list, {"contact_ids": [theirs]})
    # then this workspace's campaign takes none of them
    assert (await eng.campaign_stats(world.ws, cid))["contacts"]["total"] == 0

    # when settings name the other workspace's list, an unknown list or a bad filter rule
    before = (await world.http.get(f"/v1/campaigns/{cid}")).json()["settings"]
    for auto, field in [({"list_ids": [foreign_list]}, "settings.auto_enroll.list_ids"),
                        ({"list_ids": ["lst_nope"]}, "settings.auto_enroll.list_ids"),
                        ({"filter": {"rules": [{"field": "company", "op": "like", "value": "A"}]}},
                         "settings.auto_enroll.filter.rules.0.RuleIn.op"),
                        ({"lists": [world.list_id]}, "settings.auto_enroll.lists")]:
        answer = await world.http.patch(f"/v1/campaigns/{cid}", json={"settings": {"auto_enroll": auto}})
        # then each is a 422 naming the field, and the campaign keeps its settings
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"]["code"] == "validation_failed"
        assert field in [d["field"] for d in answer.json()["error"]["details"]["errors"]], answer.text
        bad_create = await world.http.post("/v1/campaigns", json={"name": "bad",
                                                                  "settings": {"auto_enroll": auto}})
        assert bad_create.status_code == 422
    assert (await world.http.get(f"/v1/campaigns/{cid}")).json()["settings"] == before
    assert (await world.http.get("/v1/campaigns")).json()["pagination"]["total"] == 1

    # and the OpenAPI schema documents the setting
    schema = (await world.http.get("/openapi.json")).json()
    assert "auto_enroll" in str(schema["components"]["schemas"]["SettingsIn"]["properties"])
