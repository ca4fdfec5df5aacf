"""REST: account, senders, contacts, lists, suppressions, webhooks, events; errors and isolation."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from engine import CampaignEngine
from events import schema
from tests.conftest import Api

SENDER = {"email": "sales@acme.io", "from_name": "Sales",
          "smtp": {"host": "127.0.0.1", "port": 2525, "username": "u", "password": "s3cret-pw", "security": "none"}}


async def event_count(engine: CampaignEngine) -> int:
    async with engine.store.reading() as c:
        return int((await c.execute(select(func.count()).select_from(schema.events))).scalar() or 0)


def err(r: Any) -> str:
    return str(r.json()["error"]["code"])


async def test_auth_is_required_and_keys_are_hashed(api: Api, engine: CampaignEngine) -> None:
    r = await api.client.get("/v1/account")
    assert r.status_code == 401 and err(r) == "unauthorized"
    r = await api.client.get("/v1/account", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    r = await api.get("/v1/account")
    assert r.status_code == 200
    assert r.json() == {"id": api.ws_id, "name": "acme", "monthly_limit": 10_000, "sent_this_month": 0,
                        "require_approval": False}
    async with engine.store.reading() as c:
        raw = b"".join(str(row).encode() for row in await c.execute(select(schema.events.c.data)))
    assert api.key.encode() not in raw


async def test_sender_crud_never_returns_password(api: Api, engine: CampaignEngine) -> None:
    r = await api.post("/v1/senders", json=SENDER)
    assert r.status_code == 201, r.text
    s = r.json()
    assert s["id"].startswith("snd_") and s["status"] == "active" and s["daily_limit"] == 50
    assert s["smtp"] == {"host": "127.0.0.1", "port": 2525, "username": "u", "security": "none",
                         "has_password": True}
    assert "s3cret-pw" not in r.text
    async with engine.store.reading() as c:
        raw = " ".join(str(x) for x in (await c.execute(select(schema.events.c.data))).scalars())
    assert "s3cret-pw" not in raw
    r = await api.patch(f"/v1/senders/{s['id']}", json={"daily_limit": 80, "from_name": "Team"})
    assert r.json()["daily_limit"] == 80 and r.json()["from_name"] == "Team"
    assert r.json()["smtp"]["has_password"] is True
    assert (await api.get("/v1/senders")).json()["pagination"]["total"] == 1
    assert (await api.post(f"/v1/senders/{s['id']}/reenable")).status_code == 200
    r = await api.delete(f"/v1/senders/{s['id']}")
    assert r.json() == {"id": s["id"], "deleted": True}
    assert (await api.get(f"/v1/senders/{s['id']}")).status_code == 404


async def test_sender_in_use_by_active_campaign(api: Api) -> None:
    sid = (await api.post("/v1/senders", json=SENDER)).json()["id"]
    cid = (await api.post("/v1/campaigns", json={"name": "c", "sender_ids": [sid], "steps": [
        {"subject": "Hi", "body_html": "<p>x</p>"}]})).json()["id"]
    assert (await api.post(f"/v1/campaigns/{cid}/launch")).status_code == 200
    r = await api.delete(f"/v1/senders/{sid}")
    assert r.status_code == 409 and err(r) == "sender_in_use"


async def test_validation_errors_and_unknown_fields(api: Api, engine: CampaignEngine) -> None:
    before = await event_count(engine)
    r = await api.post("/v1/senders", json={**SENDER, "bogus": 1})
    assert r.status_code == 422 and err(r) == "validation_failed"
    assert {"field": "bogus", "message": "unknown field"} in r.json()["error"]["details"]["errors"]
    r = await api.post("/v1/contacts", json={"email": "not-an-email"})
    assert r.status_code == 422 and r.json()["error"]["details"]["errors"][0]["field"] == "email"
    r = await api.post("/v1/contacts", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and err(r) == "bad_request"
    r = await api.post("/v1/contacts", content=b"email=x", headers={"Content-Type": "text/plain"})
    assert r.status_code == 400
    r = await api.post("/v1/contacts", content=b'{"email": "' + b"a" * 70_000 + b'@x.io"}',
                       headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and err(r) == "payload_too_large"
    r = await api.get("/v1/contacts?per_page=500")
    assert r.status_code == 422
    assert await event_count(engine) == before  # a refused request appends nothing


async def test_contacts_crud_search_and_duplicates(api: Api) -> None:
    r = await api.post("/v1/contacts", json={"email": "ann@acme.io", "first_name": "Ann", "company": "Acme",
                                             "timezone": "Europe/Paris", "custom_fields": {"role": "cto"}})
    assert r.status_code == 201
    c = r.json()
    assert c["id"].startswith("con_") and c["custom_fields"] == {"role": "cto"}
    r = await api.post("/v1/contacts", json={"email": "ann@acme.io"})
    assert r.status_code == 409 and err(r) == "contact_exists"
    r = await api.post("/v1/contacts", json={"email": "x@acme.io", "timezone": "Mars/Olympus"})
    assert r.status_code == 422
    await api.post("/v1/contacts", json={"email": "bob@other.io", "first_name": "Bob"})
    found = (await api.get("/v1/contacts?q=acme")).json()
    assert [d["email"] for d in found["data"]] == ["ann@acme.io"]
    r = await api.patch(f"/v1/contacts/{c['id']}", json={"last_name": "Lee"})
    assert r.json()["last_name"] == "Lee" and r.json()["first_name"] == "Ann"
    r = await api.patch(f"/v1/contacts/{c['id']}", json={"email": "bob@other.io"})
    assert r.status_code == 409
    page = (await api.get("/v1/contacts?per_page=1&page=2")).json()
    assert page["pagination"] == {"page": 2, "per_page": 1, "total": 2, "has_more": False, "next_cursor": None}


async def test_import_csv_and_json_with_row_errors(api: Api) -> None:
    csv = "email,first_name,plan\nann@a.io,Ann,pro\nnot-an-email,X,free\nbob@b.io,Bob,\n"
    r = await api.post("/v1/contacts/import", content=csv.encode(), headers={"Content-Type": "text/csv"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["created"] == 2 and out["updated"] == 0
    assert [i["row"] for i in out["invalid"]] == [2]
    r = await api.post("/v1/contacts/import", json=[{"email": "ann@a.io", "first_name": "Annie"}, {"email": 5},
                                                    {"email": "cy@c.io", "team": "blue"}])
    assert r.json()["created"] == 1 and r.json()["updated"] == 1 and [i["row"] for i in r.json()["invalid"]] == [2]
    ann = (await api.get("/v1/contacts?q=ann@a.io")).json()["data"][0]
    assert ann["first_name"] == "Annie" and ann["custom_fields"] == {"plan": "pro"}


async def test_lists(api: Api) -> None:
    ids = [(await api.post("/v1/contacts", json={"email": f"p{i}@x.io"})).json()["id"] for i in range(3)]
    lst = (await api.post("/v1/lists", json={"name": "VIP"})).json()
    assert lst["id"].startswith("lst_")
    r = await api.post(f"/v1/lists/{lst['id']}/contacts", json={"contact_ids": ids})
    assert r.json()["added"] == 3
    r = await api.request("DELETE", f"/v1/lists/{lst['id']}/contacts", json={"contact_ids": ids[:1]})
    assert r.json()["removed"] == 1
    assert (await api.get("/v1/lists")).json()["data"][0]["contact_count"] == 2
    assert (await api.get(f"/v1/contacts?list_id={lst['id']}")).json()["pagination"]["total"] == 2
    r = await api.post(f"/v1/lists/{lst['id']}/contacts", json={"contact_ids": ["con_nope"]})
    assert r.status_code == 404 and err(r) == "contact_not_found"
    assert err(await api.post("/v1/lists/lst_nope/contacts", json={"contact_ids": ids})) == "list_not_found"


async def test_suppressions(api: Api) -> None:
    assert (await api.post("/v1/suppressions", json={"email": "no@x.io"})).status_code == 201
    assert (await api.post("/v1/suppressions", json={"domain": "spam.io"})).status_code == 201
    r = await api.post("/v1/suppressions", json={"email": "a@b.io", "domain": "b.io"})
    assert r.status_code == 422
    data = (await api.get("/v1/suppressions")).json()["data"]
    assert sorted(d["value"] for d in data) == ["no@x.io", "spam.io"]
    assert (await api.delete("/v1/suppressions/spam.io")).json()["deleted"] is True
    assert (await api.delete("/v1/suppressions/spam.io")).status_code == 404


async def test_idempotency_key(api: Api, engine: CampaignEngine) -> None:
    h = {"Idempotency-Key": "abc"}
    r1 = await api.post("/v1/contacts", json={"email": "i@x.io"}, headers=h)
    n = await event_count(engine)
    r2 = await api.post("/v1/contacts", json={"email": "i@x.io"}, headers=h)
    assert r2.status_code == 201 and r2.json() == r1.json() and await event_count(engine) == n
    r3 = await api.post("/v1/contacts", json={"email": "other@x.io"}, headers=h)
    assert r3.status_code == 409 and err(r3) == "idempotency_conflict"


async def test_other_workspace_ids_answer_404(api: Api, other_api: Api) -> None:
    sid = (await api.post("/v1/senders", json=SENDER)).json()["id"]
    cid = (await api.post("/v1/contacts", json={"email": "iso@x.io"})).json()["id"]
    lid = (await api.post("/v1/lists", json={"name": "l"})).json()["id"]
    camp = (await api.post("/v1/campaigns", json={"name": "mine"})).json()["id"]
    wh = (await api.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/h", "events": ["email.sent"]})).json()
    checks = [
        ("GET", f"/v1/senders/{sid}", "sender_not_found"), ("PATCH", f"/v1/senders/{sid}", "sender_not_found"),
        ("DELETE", f"/v1/senders/{sid}", "sender_not_found"), ("GET", f"/v1/contacts/{cid}", "contact_not_found"),
        ("DELETE", f"/v1/contacts/{cid}", "contact_not_found"), ("GET", f"/v1/campaigns/{camp}", "campaign_not_found"),
        ("POST", f"/v1/campaigns/{camp}/launch", "campaign_not_found"),
        ("DELETE", f"/v1/webhooks/{wh['id']}", "webhook_not_found"),
    ]
    for method, path, code in checks:
        body = {"daily_limit": 5} if method == "PATCH" else None
        r = await other_api.request(method, path, json=body)
        unknown = await other_api.request(method, path.replace(path.split("/")[3], "xyz_unknown"), json=body)
        assert r.status_code == 404 and err(r) == code, (path, r.text)
        assert unknown.status_code == 404 and err(unknown) == code
    r = await other_api.post(f"/v1/lists/{lid}/contacts", json={"contact_ids": [cid]})
    assert r.status_code == 404
    assert (await other_api.get("/v1/contacts")).json()["pagination"]["total"] == 0
    assert (await other_api.get("/v1/campaigns")).json()["data"] == []
    assert all(e["stream"].endswith(other_api.ws_id) for e in (await other_api.get("/v1/events")).json()["data"])


async def test_webhooks_and_events(api: Api) -> None:
    r = await api.post("/v1/webhooks", json={"url": "ftp://x", "events": ["email.sent"]})
    assert r.status_code == 422
    r = await api.post("/v1/webhooks", json={"url": "https://hooks.example.com/x", "events": ["email.nope"]})
    assert r.status_code == 422
    wh = (await api.post("/v1/webhooks", json={"url": "https://hooks.example.com/x", "events": ["email.sent"]})).json()
    assert wh["id"].startswith("whk_") and wh["secret"]
    assert (await api.get("/v1/webhooks")).json()["data"][0]["events"] == ["email.sent"]
    assert "secret" not in (await api.get("/v1/webhooks")).json()["data"][0]
    events = (await api.get("/v1/events?limit=2")).json()
    assert [e["type"] for e in events["data"]] == ["workspace.created", "api_key.created"]
    more = (await api.get(f"/v1/events?after={events['next_after']}&type=webhook.created")).json()
    assert [e["type"] for e in more["data"]] == ["webhook.created"]
    assert "secret_enc" not in str(more["data"][0]["data"])
    assert (await api.delete(f"/v1/webhooks/{wh['id']}")).json()["deleted"] is True


async def test_rate_limit(engine: CampaignEngine) -> None:
    import httpx

    from engine import create_app

    ws = await engine.create_workspace("tiny")
    app = create_app(engine, rate_limit_per_minute=3)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        codes = [(await c.get("/v1/account", headers={"Authorization": f"Bearer {ws.api_key}"})).status_code
                 for _ in range(4)]
    assert codes == [200, 200, 200, 429]


async def test_openapi(api: Api) -> None:
    r = await api.client.get("/openapi.json")
    assert r.status_code == 200 and "/v1/campaigns/{campaign_id}/launch" in r.json()["paths"]
