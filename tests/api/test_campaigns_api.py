"""REST: campaigns (create, list, patch per status, schedule, copy, delete), lifecycle, enrollments."""

from __future__ import annotations

from typing import Any

from engine import CampaignEngine
from tests.api.test_management_api import SENDER, err, event_count
from tests.conftest import Api

STEP = {"subject": "Hi {{first_name|there}}", "body_html": "<p>Hello {{company}}</p>"}


async def sender(api: Api) -> str:
    return str((await api.post("/v1/senders", json=SENDER)).json()["id"])


async def campaign(api: Api, **extra: Any) -> dict[str, Any]:
    body = {"name": "Q2 launch", "sender_ids": [await sender(api)], "steps": [STEP], **extra}
    r = await api.post("/v1/campaigns", json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def test_create_applies_contract_defaults(api: Api) -> None:
    r = await api.post("/v1/campaigns", json={"name": "Only a name"})
    assert r.status_code == 201
    c = r.json()
    assert c["status"] == "draft" and c["id"].startswith("cmp_")
    assert c["schedule"]["timezone"] == "UTC" and c["schedule"]["days"] == ["mon", "tue", "wed", "thu", "fri"]
    assert c["schedule"]["min_wait_seconds"] == 120 and c["settings"]["stop_on_reply"] is True
    assert c["settings"]["unsubscribe_link"] is True and c["steps"] == []
    assert c["stats"]["contacts"]["total"] == 0


async def test_schedule_validation(api: Api, engine: CampaignEngine) -> None:
    before = await event_count(engine)
    bad = [{"timezone": "Nowhere/City"}, {"start_time": "9am"}, {"start_time": "10:00", "end_time": "09:00"},
           {"days": ["funday"]}, {"cron": "* * *"}, {"cron": "99 * * * *"}, {"min_wait_seconds": 500,
                                                                           "max_wait_seconds": 100},
           {"start_time": "24:00"}]
    for schedule in bad:
        r = await api.post("/v1/campaigns", json={"name": "x", "schedule": schedule})
        assert r.status_code == 422, schedule
    ok = await api.post("/v1/campaigns", json={"name": "x", "schedule": {"end_time": "24:00",
                                                                          "cron": "*/15 9-17 * * 1-5"}})
    assert ok.status_code == 201
    assert await event_count(engine) == before + 1


async def test_unknown_merge_tag_refused_at_create_and_update(api: Api) -> None:
    r = await api.post("/v1/campaigns", json={"name": "x", "steps": [{"subject": "Hi {{favourite_color}}"}]})
    assert r.status_code == 422 and r.json()["error"]["details"]["errors"][0]["field"].startswith("steps.0")
    c = await campaign(api)
    r = await api.patch(f"/v1/campaigns/{c['id']}", json={"steps": [{"subject": "{{__import__('os')}}"}]})
    assert r.status_code == 422
    r = await api.patch(f"/v1/campaigns/{c['id']}", json={"steps": [{"subject": "Re {{custom.plan|free}}",
                                                                     "body_html": "x"}]})
    assert r.status_code == 200


async def test_workflow_is_compiled_to_steps(api: Api) -> None:
    wf = {"nodes": [{"id": "s", "type": "start"}, {"id": "e1", "type": "email", "data": {"subject": "One",
                                                                                          "body_html": "1"}},
                    {"id": "d", "type": "delay", "data": {"days": 2}},
                    {"id": "e2", "type": "email", "data": {"subject": "Two", "body_html": "2"}},
                    {"id": "end", "type": "end"}],
          "edges": [{"from": "s", "to": "e1"}, {"from": "e1", "to": "d"}, {"from": "d", "to": "e2"},
                    {"from": "e2", "to": "end"}]}
    r = await api.post("/v1/campaigns", json={"name": "wf", "workflow": wf})
    assert r.status_code == 201, r.text
    steps = r.json()["steps"]
    assert [s["subject"] for s in steps] == ["One", "Two"] and steps[1]["delay"]["days"] == 2
    wf["edges"] = wf["edges"][:2]
    assert (await api.post("/v1/campaigns", json={"name": "wf", "workflow": wf})).status_code == 422


async def test_launch_validation_problems(api: Api, engine: CampaignEngine) -> None:
    c = (await api.post("/v1/campaigns", json={"name": "empty"})).json()
    before = await event_count(engine)
    r = await api.post(f"/v1/campaigns/{c['id']}/launch")
    assert r.status_code == 422 and err(r) == "campaign_invalid"
    problems = r.json()["error"]["details"]["problems"]
    assert "the campaign has no steps" in problems and "the campaign has no sender" in problems
    assert await event_count(engine) == before


async def test_lifecycle_transitions_and_invalid_state(api: Api) -> None:
    c = await campaign(api)
    cid = c["id"]
    r = await api.post(f"/v1/campaigns/{cid}/pause")
    assert r.status_code == 409 and err(r) == "invalid_state"
    assert r.json()["error"]["details"] == {"status": "draft", "action": "pause"}
    assert (await api.post(f"/v1/campaigns/{cid}/launch")).json()["status"] == "active"
    assert (await api.post(f"/v1/campaigns/{cid}/launch")).status_code == 409
    r = await api.patch(f"/v1/campaigns/{cid}", json={"steps": [STEP, STEP]})  # live edit: nothing sent yet
    assert r.status_code == 200 and len(r.json()["steps"]) == 2
    assert (await api.patch(f"/v1/campaigns/{cid}", json={"outreach_id": "x"})).status_code == 409
    renamed = await api.patch(f"/v1/campaigns/{cid}", json={"name": "Renamed", "tags": ["a"]})
    assert renamed.json()["name"] == "Renamed"
    live = await api.put(f"/v1/campaigns/{cid}/schedule", json={"timezone": "Europe/Paris"})
    assert live.status_code == 200 and live.json()["schedule"]["timezone"] == "Europe/Paris"
    assert (await api.post(f"/v1/campaigns/{cid}/pause")).json()["status"] == "paused"
    r = await api.put(f"/v1/campaigns/{cid}/schedule", json={"timezone": "Europe/Paris", "start_time": "08:00"})
    assert r.status_code == 200 and r.json()["schedule"]["timezone"] == "Europe/Paris"
    assert (await api.post(f"/v1/campaigns/{cid}/resume")).json()["status"] == "active"
    assert (await api.post(f"/v1/campaigns/{cid}/archive")).status_code == 409
    assert (await api.post(f"/v1/campaigns/{cid}/cancel")).json()["status"] == "cancelled"
    assert (await api.patch(f"/v1/campaigns/{cid}", json={"name": "x"})).status_code == 409
    assert (await api.post(f"/v1/campaigns/{cid}/archive")).json()["status"] == "archived"
    assert (await api.post(f"/v1/campaigns/{cid}/cancel")).status_code == 409


async def test_launch_at_in_future_is_scheduled(api: Api) -> None:
    c = await campaign(api, schedule={"launch_at": "2026-02-01T09:00:00Z"})
    assert (await api.post(f"/v1/campaigns/{c['id']}/launch")).json()["status"] == "scheduled"
    assert (await api.post(f"/v1/campaigns/{c['id']}/pause")).json()["status"] == "paused"


async def test_approval_required(engine: CampaignEngine, http: Any) -> None:
    ws = await engine.create_workspace("strict", require_approval=True)
    api = Api(http, ws.id, ws.api_key)
    c = await campaign(api)
    r = await api.post(f"/v1/campaigns/{c['id']}/launch")
    assert r.status_code == 409 and err(r) == "approval_required"
    a = (await api.post(f"/v1/campaigns/{c['id']}/approve")).json()
    assert a["approved_at"] is not None
    assert (await api.post(f"/v1/campaigns/{c['id']}/launch")).json()["status"] == "active"


async def test_plan_limit_blocks_launch(engine: CampaignEngine, http: Any) -> None:
    ws = await engine.create_workspace("zero", monthly_limit=0)
    api = Api(http, ws.id, ws.api_key)
    c = await campaign(api)
    r = await api.post(f"/v1/campaigns/{c['id']}/launch")
    assert r.status_code == 402 and err(r) == "plan_limit_reached"


async def test_list_filters_sort_copy_delete(api: Api) -> None:
    a = await campaign(api, folder="Outbound", tags=["q2"])
    b = (await api.post("/v1/campaigns", json={"name": "Alpha", "tags": ["q3"]})).json()
    names = [c["name"] for c in (await api.get("/v1/campaigns?sort=name&order=asc")).json()["data"]]
    assert names == ["Alpha", "Q2 launch"]
    assert [c["id"] for c in (await api.get("/v1/campaigns?folder=Outbound")).json()["data"]] == [a["id"]]
    assert [c["id"] for c in (await api.get("/v1/campaigns?tag=q3")).json()["data"]] == [b["id"]]
    assert [c["id"] for c in (await api.get("/v1/campaigns?q=alp")).json()["data"]] == [b["id"]]
    assert (await api.get("/v1/campaigns?sort=bogus")).status_code == 422
    await api.post(f"/v1/campaigns/{a['id']}/launch")
    assert [c["id"] for c in (await api.get("/v1/campaigns?status=active")).json()["data"]] == [a["id"]]
    cp = await api.post(f"/v1/campaigns/{a['id']}/copy")
    assert cp.status_code == 201
    copy = cp.json()
    assert copy["status"] == "draft" and copy["steps"] == a["steps"] and copy["sender_ids"] == a["sender_ids"]
    assert copy["schedule"]["launch_at"] is None and copy["stats"]["contacts"]["total"] == 0
    assert (await api.delete(f"/v1/campaigns/{b['id']}")).json() == {"id": b["id"], "deleted": True}
    assert (await api.get(f"/v1/campaigns/{b['id']}")).status_code == 404
    r = await api.post("/v1/campaigns/bulk_delete", json={"ids": [a["id"], b["id"], "cmp_nope"]})
    assert r.json() == {"deleted": [a["id"]], "not_found": [b["id"], "cmp_nope"]}


async def test_enrollment_with_skip_reasons(api: Api) -> None:
    def contact(email: str, **kw: Any) -> Any:
        return api.post("/v1/contacts", json={"email": email, **kw})

    ok = (await contact("ok@corp.io", first_name="Ok")).json()["id"]
    free = (await contact("free@gmail.com")).json()["id"]
    supp = (await contact("supp@corp.io")).json()["id"]
    dom = (await contact("x@blocked.io")).json()["id"]
    await api.post("/v1/suppressions", json={"email": "supp@corp.io"})
    await api.post("/v1/suppressions", json={"domain": "blocked.io"})
    c = await campaign(api, settings={"allow_free_email_domains": False}, outreach_id="o-1")
    r = await api.post(f"/v1/campaigns/{c['id']}/enrollments",
                       json={"contact_ids": [ok, free, supp, dom, ok, "con_missing"]})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["added"] == 1
    assert out["skipped"] == {"free_email_domain": 1, "suppressed": 2, "already_enrolled": 1}
    assert out["errors"] == [{"contact_id": "con_missing", "error": "contact_not_found"}]
    again = (await api.post(f"/v1/campaigns/{c['id']}/enrollments", json={"contact_ids": [ok]})).json()
    assert again["skipped"] == {"already_enrolled": 1}
    other = await campaign(api, outreach_id="o-1")
    dup = (await api.post(f"/v1/campaigns/{other['id']}/enrollments", json={"contact_ids": [ok]})).json()
    assert dup["skipped"] == {"duplicate_elsewhere": 1}
    stats = (await api.get(f"/v1/campaigns/{c['id']}/stats")).json()
    assert stats["contacts"]["pending"] == 1 and stats["skipped"]["suppressed"] == 2
    rows = (await api.get(f"/v1/campaigns/{c['id']}/enrollments")).json()["data"]
    assert [(e["contact_id"], e["email"], e["status"]) for e in rows] == [(ok, "ok@corp.io", "pending")]
    r = await api.request("DELETE", f"/v1/campaigns/{c['id']}/enrollments", json={"contact_ids": [ok]})
    assert r.json() == {"removed": 1}
    assert (await api.get(f"/v1/campaigns/{c['id']}/enrollments?status=stopped")).json()["pagination"]["total"] == 1


async def test_enroll_by_list_and_filter(api: Api) -> None:
    ids = []
    for i, (company, plan) in enumerate([("Acme", "pro"), ("Acme", "free"), ("Globex", "pro")]):
        ids.append((await api.post("/v1/contacts", json={"email": f"u{i}@c{i}.io", "company": company,
                                                         "custom_fields": {"plan": plan}})).json()["id"])
    lst = (await api.post("/v1/lists", json={"name": "l"})).json()["id"]
    await api.post(f"/v1/lists/{lst}/contacts", json={"contact_ids": ids[:2]})
    c1 = await campaign(api)
    assert (await api.post(f"/v1/campaigns/{c1['id']}/enrollments", json={"list_ids": [lst]})).json()["added"] == 2
    c2 = await campaign(api)
    flt = {"operator": "or", "rules": [
        {"operator": "and", "rules": [{"field": "company", "op": "eq", "value": "acme"},
                                      {"field": "custom.plan", "op": "eq", "value": "pro"}]},
        {"field": "email", "op": "ends_with", "value": "@c2.io"}]}
    r = await api.post(f"/v1/campaigns/{c2['id']}/enrollments", json={"filter": flt})
    assert r.json()["added"] == 2
    enrolled = {e["contact_id"] for e in (await api.get(f"/v1/campaigns/{c2['id']}/enrollments")).json()["data"]}
    assert enrolled == {ids[0], ids[2]}
    bad = await api.post(f"/v1/campaigns/{c2['id']}/enrollments", json={"filter": {"rules": [{"field": "x",
                                                                                                "op": "like"}]}})
    assert bad.status_code == 422
    assert (await api.post(f"/v1/campaigns/{c2['id']}/enrollments", json={})).status_code == 422
    assert err(await api.post(f"/v1/campaigns/{c2['id']}/enrollments", json={"list_ids": ["lst_x"]})) == \
        "list_not_found"


async def test_manual_batches_dispatch(api: Api) -> None:
    ids = [(await api.post("/v1/contacts", json={"email": f"b{i}@x.io"})).json()["id"] for i in range(3)]
    c = await campaign(api, settings={"manual_batches": True})
    await api.post(f"/v1/campaigns/{c['id']}/enrollments", json={"contact_ids": ids[:2], "batch_number": 1})
    await api.post(f"/v1/campaigns/{c['id']}/enrollments", json={"contact_ids": ids[2:], "batch_number": 2})
    await api.post(f"/v1/campaigns/{c['id']}/launch")
    rows = (await api.get(f"/v1/campaigns/{c['id']}/enrollments")).json()["data"]
    assert all(e["next_send_at"] is None for e in rows)
    r = await api.post(f"/v1/campaigns/{c['id']}/dispatch")
    assert r.json() == {"batch_number": 1, "released": 2}
    rows = (await api.get(f"/v1/campaigns/{c['id']}/enrollments?batch_number=1")).json()["data"]
    assert all(e["next_send_at"] is not None for e in rows)
    assert (await api.post(f"/v1/campaigns/{c['id']}/dispatch", json={"batch_number": 2})).json()["released"] == 1
    r = await api.post(f"/v1/campaigns/{c['id']}/dispatch")
    assert r.status_code == 422 and err(r) == "no_pending_enrollments"


async def test_erasure_leaves_no_personal_data(api: Api, engine: CampaignEngine, sqlite_url: str) -> None:
    cid = (await api.post("/v1/contacts", json={"email": "zed.erase@corp.io", "first_name": "Zedediah",
                                                "last_name": "Quixote", "company": "Erasco",
                                                "custom_fields": {"secret": "Xylophone"}},
                          headers={"Idempotency-Key": "k-erase"})).json()["id"]
    await api.post("/v1/suppressions", json={"email": "zed.erase@corp.io"})
    c = await campaign(api)
    await api.post(f"/v1/campaigns/{c['id']}/enrollments", json={"contact_ids": [cid]})
    assert (await api.delete(f"/v1/contacts/{cid}")).json() == {"id": cid, "deleted": True}
    assert (await api.get(f"/v1/contacts/{cid}")).status_code == 404
    await engine.rebuild_projections()
    needles = [b"zed.erase", b"Zedediah", b"Quixote", b"Erasco", b"Xylophone"]
    everything = (await api.get("/v1/events?limit=1000")).text + str(
        (await api.get(f"/v1/campaigns/{c['id']}/enrollments")).json())
    assert not any(n.decode() in everything for n in needles)
    await engine.close()
    path = sqlite_url.split(":///", 1)[1]
    import pathlib

    raw = b"".join(p.read_bytes() for p in pathlib.Path(path).parent.glob("engine.db*"))
    found = [n for n in needles if n in raw]
    assert not found, found
    await engine.open()
    r = await api.post("/v1/contacts", json={"email": "zed.erase@corp.io"})
    new_id = r.json()["id"]
    c2 = await campaign(api)
    out = (await api.post(f"/v1/campaigns/{c2['id']}/enrollments", json={"contact_ids": [new_id]})).json()
    assert out["skipped"] == {"suppressed": 1}
