"""REST and the facade: which campaigns a tag selects, which contacts lists plus a filter enroll,
dispatch refused once the monthly limit is used up, throughput by the engine clock, and the
subject each step is sent with in ``stats/steps``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest

from engine import CampaignEngine, ManualClock, create_app
from tests.api.test_campaigns_api import campaign
from tests.api.test_management_api import err
from tests.conftest import SECRET, Api
from tests.delivery.smtp_server import SmtpSink
from tests.scenarios.test_sending import run_until, setup


@pytest.fixture
async def any_db_api(db_url: str, clock: ManualClock) -> AsyncIterator[Api]:
    """An API client over an engine on SQLite and on PostgreSQL: the tag match is per dialect."""
    async with CampaignEngine(db_url, clock=clock, secret_key=SECRET) as engine:
        app = create_app(engine)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            ws = await engine.create_workspace("acme")
            yield Api(client, ws.id, ws.api_key)


async def test_tag_filter_is_exact_and_paged_in_the_query(any_db_api: Api) -> None:
    api = any_db_api
    longer = (await api.post("/v1/campaigns", json={"name": "longer", "tags": ["q2"]})).json()["id"]
    exact = [(await api.post("/v1/campaigns", json={"name": f"exact {i}", "tags": ["x", "q"]})).json()["id"]
             for i in range(2)]
    quoted = (await api.post("/v1/campaigns", json={"name": "quoted", "tags": ['say "q"', "q%", "q_"]})).json()["id"]

    first = (await api.get("/v1/campaigns?tag=q&per_page=1&sort=name&order=asc")).json()
    assert [c["id"] for c in first["data"]] == [exact[0]]
    assert {k: v for k, v in first["pagination"].items() if k != "next_cursor"} == {
        "page": 1, "per_page": 1, "total": 2, "has_more": True}
    assert first["pagination"]["next_cursor"]  # a client may go on by cursor from here
    second = (await api.get("/v1/campaigns?tag=q&per_page=1&page=2&sort=name&order=asc")).json()
    assert [c["id"] for c in second["data"]] == [exact[1]]
    assert second["pagination"]["has_more"] is False
    assert [c["id"] for c in (await api.get("/v1/campaigns?tag=q2")).json()["data"]] == [longer]
    assert [c["id"] for c in (await api.get("/v1/campaigns", params={"tag": 'say "q"'})).json()["data"]] == [quoted]
    assert [c["id"] for c in (await api.get("/v1/campaigns", params={"tag": "q%"})).json()["data"]] == [quoted]
    assert (await api.get("/v1/campaigns", params={"tag": "%"})).json()["pagination"]["total"] == 0


async def test_lists_with_a_filter_enroll_the_members_that_match(api: Api) -> None:
    ids = [(await api.post("/v1/contacts", json={"email": f"m{i}@corp.io", "company": company})).json()["id"]
           for i, company in enumerate(["Acme", "Globex", "Acme"])]
    lst = (await api.post("/v1/lists", json={"name": "l"})).json()["id"]
    await api.post(f"/v1/lists/{lst}/contacts", json={"contact_ids": ids[:2]})
    c = await campaign(api)
    acme = {"operator": "and", "rules": [{"field": "company", "op": "eq", "value": "acme"}]}

    r = await api.post(f"/v1/campaigns/{c['id']}/enrollments", json={"list_ids": [lst], "filter": acme})
    assert r.status_code == 200, r.text
    assert r.json() == {"added": 1, "skipped": {}, "errors": [], "selection": ["list_ids_matching_filter"]}
    enrolled = (await api.get(f"/v1/campaigns/{c['id']}/enrollments")).json()["data"]
    assert [e["contact_id"] for e in enrolled] == [ids[0]]

    other = await campaign(api)
    r = await api.post(f"/v1/campaigns/{other['id']}/enrollments", json={"filter": acme, "contact_ids": [ids[1]]})
    assert r.json()["added"] == 3 and r.json()["selection"] == ["contact_ids", "filter"]


async def test_dispatch_refused_once_the_monthly_limit_is_used(engine: CampaignEngine, http: httpx.AsyncClient,
                                                               clock: ManualClock) -> None:
    ws = await engine.create_workspace("capped", monthly_limit=1)
    api = Api(http, ws.id, ws.api_key)
    with SmtpSink() as sink:
        sid = (await api.post("/v1/senders", json={"email": "rep@sales.io", "smtp": {
            "host": sink.host, "port": sink.port, "security": "none"}})).json()["id"]
        cid = (await api.post("/v1/campaigns", json={
            "name": "c", "sender_ids": [sid], "settings": {"manual_batches": True},
            "schedule": {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start_time": "00:00",
                         "end_time": "24:00"},
            "steps": [{"subject": "Hi", "body_html": "<p>Hi</p>"}]})).json()["id"]
        ids = [(await api.post("/v1/contacts", json={"email": f"d{i}@corp.io"})).json()["id"] for i in range(2)]
        for batch, contact in enumerate(ids, start=1):
            await api.post(f"/v1/campaigns/{cid}/enrollments", json={"contact_ids": [contact], "batch_number": batch})
        assert (await api.post(f"/v1/campaigns/{cid}/launch")).status_code == 200
        assert (await api.post(f"/v1/campaigns/{cid}/dispatch")).json()["released"] == 1
        clock.advance(timedelta(minutes=1))
        assert (await engine.tick()).sent == 1
        before = (await api.get(f"/v1/events?stream=campaign-{cid}")).json()["data"]

        r = await api.post(f"/v1/campaigns/{cid}/dispatch")
        assert r.status_code == 402 and err(r) == "plan_limit_reached"
        assert (await api.get(f"/v1/events?stream=campaign-{cid}")).json()["data"] == before
        pending = (await api.get(f"/v1/campaigns/{cid}/enrollments?batch_number=2")).json()["data"]
        assert pending[0]["next_send_at"] is None


async def test_throughput_counts_sends_of_the_past_hour_and_day(engine: CampaignEngine, clock: ManualClock) -> None:
    with SmtpSink() as sink:
        ws, cid, _ = await setup(engine, sink, contacts=12, steps=1, schedule={
            "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start_time": "00:00", "end_time": "24:00",
            "every_minutes": 20})
        await run_until(engine, clock, clock.now() + timedelta(hours=2))  # sends at 0, 20, ... 120 minutes
        assert len(sink.messages) == 7
        clock.advance(timedelta(minutes=10))  # 130 minutes after the first: 80, 100 and 120 in the last hour
        stats = await engine.campaign_stats(ws, cid)
        assert stats["throughput"] == {"last_hour": 3.0, "last_day": round(7 / 24, 2)}
        assert stats["senders"][0]["throughput"] == stats["throughput"]
        clock.advance(timedelta(days=1))
        assert (await engine.campaign_stats(ws, cid))["throughput"] == {"last_hour": 0.0, "last_day": 0.0}


async def test_step_stats_show_the_subject_each_step_is_sent_with(api: Api) -> None:
    c = await campaign(api, steps=[
        {"subject": "Hi {{first_name|there}}", "body_html": "<p>1</p>"},
        {"subject": "", "body_html": "<p>2</p>", "delay": {"days": 1}, "same_thread": True},
        {"subject": "", "body_html": "<p>3</p>", "delay": {"days": 1}, "same_thread": False},
        {"subject": "Own subject", "body_html": "<p>4</p>", "delay": {"days": 1}, "same_thread": True}])
    steps = (await api.get(f"/v1/campaigns/{c['id']}/stats/steps")).json()
    assert [s["subject"] for s in steps] == ["Hi {{first_name|there}}", "Re: Hi {{first_name|there}}", "",
                                             "Own subject"]
