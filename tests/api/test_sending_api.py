"""REST: forecast, preview, test_send and the sender login check, against real servers."""

from __future__ import annotations

from typing import Any

import httpx

from engine import CampaignEngine, create_app
from tests.api.test_management_api import err
from tests.conftest import Api
from tests.delivery.smtp_server import SmtpSink


async def make(api: Api, sink: SmtpSink, **extra: Any) -> tuple[str, str]:
    sid = (await api.post("/v1/senders", json={"email": "rep@sales.io", "smtp": {
        "host": sink.host, "port": sink.port, "security": "none"}})).json()["id"]
    cmp = (await api.post("/v1/campaigns", json={"name": "c", "sender_ids": [sid], "steps": [
        {"subject": "Hi {{first_name|there}}", "body_html": "<p>Hello <b>{{company}}</b></p>"},
        {"subject": "Again", "body_html": "<p>Bump</p>", "delay": {"days": 1}}], **extra})).json()
    return sid, cmp["id"]


async def test_preview_renders_for_a_contact(api: Api) -> None:
    with SmtpSink() as sink:
        _, cid = await make(api, sink)
        con = (await api.post("/v1/contacts", json={"email": "a@corp.io", "first_name": "Ann",
                                                    "company": "<Acme & Co>"})).json()["id"]
        r = await api.get(f"/v1/campaigns/{cid}/preview?contact_id={con}")
        steps = r.json()["steps"]
        assert steps[0]["subject"] == "Hi Ann" and "&lt;Acme &amp; Co&gt;" in steps[0]["body_html"]
        assert "Hello" in steps[0]["body_text"] and "<p>" not in steps[0]["body_text"]
        sample = (await api.get(f"/v1/campaigns/{cid}/preview?step=2")).json()["steps"]
        assert [s["step"] for s in sample] == [2]
        assert (await api.get(f"/v1/campaigns/{cid}/preview?step=9")).status_code == 422
        assert err(await api.get(f"/v1/campaigns/{cid}/preview?contact_id=con_x")) == "contact_not_found"


async def test_test_send_goes_out_and_is_not_counted(api: Api) -> None:
    with SmtpSink() as sink:
        _, cid = await make(api, sink)
        r = await api.post(f"/v1/campaigns/{cid}/test_send", json={"emails": ["qa@corp.io"]})
        assert r.status_code == 200, r.text
        assert [o["outcome"] for o in r.json()["sent"]["qa@corp.io"]] == ["sent", "sent"]
        assert len(sink.messages) == 2 and sink.messages[0].headers["Subject"].startswith("[TEST]")
        stats = (await api.get(f"/v1/campaigns/{cid}/stats")).json()
        assert stats["emails"]["sent"] == 0
        assert (await api.get("/v1/account")).json()["sent_this_month"] == 0
        assert (await api.post(f"/v1/campaigns/{cid}/test_send", json={"emails": ["nope"]})).status_code == 422


async def test_test_send_refused_past_monthly_limit(engine: CampaignEngine, http: httpx.AsyncClient) -> None:
    ws = await engine.create_workspace("capped", monthly_limit=1)
    api = Api(http, ws.id, ws.api_key)
    with SmtpSink() as sink:
        _, cid = await make(api, sink)
        r = await api.post(f"/v1/campaigns/{cid}/test_send", json={"emails": ["qa@corp.io"]})
        assert r.status_code == 402 and err(r) == "plan_limit_reached"
        assert sink.messages == []


async def test_forecast_endpoints(api: Api) -> None:
    with SmtpSink() as sink:
        _, cid = await make(api, sink, schedule={"timezone": "Europe/Paris", "every_minutes": 60})
        ids = [(await api.post("/v1/contacts", json={"email": f"f{i}@corp.io"})).json()["id"] for i in range(3)]
        await api.post(f"/v1/campaigns/{cid}/enrollments", json={"contact_ids": ids})
        draft = (await api.get(f"/v1/campaigns/{cid}/forecast?days=3")).json()
        assert draft["total"] == 0 and draft["timezone"] == "Europe/Paris" and len(draft["days"]) == 3
        await api.post(f"/v1/campaigns/{cid}/launch")
        f = (await api.get(f"/v1/campaigns/{cid}/forecast?days=3")).json()
        assert f["total"] == 6
        assert f["days"][0] == {"date": "2026-01-05", "count": 3, "by_step": {"1": 3},
                                "by_sender": f["days"][0]["by_sender"], "by_variant": {}}  # no A/B step
        assert sum(sum(d["by_step"].values()) for d in f["days"]) == 6
        ws_f = (await api.get("/v1/forecast?days=3")).json()
        assert ws_f["total"] == 6
        assert (await api.get(f"/v1/campaigns/{cid}/forecast?days=0")).status_code == 422


async def test_sender_check_logs_in_for_real(engine: CampaignEngine) -> None:
    ws = await engine.create_workspace("chk")
    app = create_app(engine)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        api = Api(c, ws.id, ws.api_key)
        with SmtpSink(users={"rep": "right"}) as sink:
            good = (await api.post("/v1/senders", json={"email": "rep@sales.io", "smtp": {
                "host": sink.host, "port": sink.port, "username": "rep", "password": "right",
                "security": "none"}})).json()["id"]
            bad = (await api.post("/v1/senders", json={"email": "rep2@sales.io", "smtp": {
                "host": sink.host, "port": sink.port, "username": "rep", "password": "wrong",
                "security": "none"}})).json()["id"]
            ok = (await api.post(f"/v1/senders/{good}/check")).json()
            assert ok == {"smtp_ok": True, "imap_ok": None, "error": None}
            ko = (await api.post(f"/v1/senders/{bad}/check")).json()
            assert ko["smtp_ok"] is False and ko["error"]
