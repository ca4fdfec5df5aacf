"""Erasure end to end: after DELETE /v1/contacts/{id} nothing anywhere shows the person in clear."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from engine import CampaignEngine, ManualClock, create_app
from tests.conftest import SECRET
from tests.delivery.smtp_server import SmtpSink
from tests.scenarios.test_audit_cli import cli

PERSON = {"email": "yolanda.erasable@persona.io", "first_name": "Yolanda", "last_name": "Quetzalcoatl",
          "company": "Erasable Widgets", "custom_fields": {"nickname": "Zanzibarista"}}
NEEDLES = ["yolanda.erasable", "Yolanda", "Quetzalcoatl", "Erasable Widgets", "Zanzibarista"]


async def story(eng: CampaignEngine, clock: ManualClock, sink: SmtpSink) -> tuple[str, str, str]:
    ws_obj = await eng.create_workspace("w")
    ws = ws_obj.id
    app = create_app(eng)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        h = {"Authorization": f"Bearer {ws_obj.api_key}"}
        cid = (await c.post("/v1/contacts", json=PERSON, headers={**h, "Idempotency-Key": "k1"})).json()["id"]
        sid = (await eng.create_sender(ws, {"email": "rep@sales.io", "smtp": {"host": sink.host, "port": sink.port,
                                                                              "security": "none"}}))["id"]
        cmp = await eng.create_campaign(ws, {"name": "c", "sender_ids": [sid], "settings": {"track_clicks": True},
                                             "schedule": {"start_time": "00:00", "end_time": "24:00"},
                                             "steps": [{"subject": "Hi {{first_name}} at {{company}}",
                                                        "body_html": '<a href="https://x.io/?n={{first_name}}">x</a>'},
                                                       {"subject": "b", "body_html": "c", "delay": {"days": 1}}]})
        await eng.enroll(ws, cmp["id"], {"contact_ids": [cid]})
        await eng.launch_campaign(ws, cmp["id"])
        await eng.tick()
        clock.advance(timedelta(hours=1))
        assert len(sink.messages) == 1
        assert (await c.delete(f"/v1/contacts/{cid}", headers=h)).status_code == 200
        responses = [await c.get(p, headers=h) for p in (
            "/v1/events?limit=1000", f"/v1/campaigns/{cmp['id']}/enrollments", "/v1/contacts",
            f"/v1/campaigns/{cmp['id']}", "/v1/suppressions")]
        for r in responses:
            assert not [n for n in NEEDLES if n in r.text], r.text[:300]
    await eng.tick()
    return ws, cid, cmp["id"]


async def test_erasure_on_sqlite(sqlite_url: str, clock: ManualClock, tmp_path: Path) -> None:
    with SmtpSink() as sink:
        async with CampaignEngine(sqlite_url, clock=clock, secret_key=SECRET) as eng:
            _ws, _cid, _cmp = await story(eng, clock, sink)
            await eng.rebuild_projections()
        assert len(sink.messages) == 1  # nothing more went to an erased contact
        export = await cli("events", "export", "--db", sqlite_url)
        history = await cli("history", "--contact", PERSON["email"], "--db", sqlite_url)
        into = f"sqlite+aiosqlite:///{tmp_path}/past.db"
        replay = await cli("replay", "--position", "5", "--into", into, "--db", sqlite_url)
        assert export.exit_code == 0 and replay.exit_code == 0
        for output in (export.output, history.output, replay.output):
            assert not [n for n in NEEDLES if n in output]
        for path in list(Path(sqlite_url.split(":///", 1)[1]).parent.glob("*.db*")):
            raw = path.read_bytes()
            assert not [n for n in NEEDLES if n.encode() in raw], path


@pytest.mark.postgres
async def test_erasure_on_postgres(pg_url: str, clock: ManualClock) -> None:
    with SmtpSink() as sink:
        async with CampaignEngine(pg_url, clock=clock, secret_key=SECRET) as eng:
            await story(eng, clock, sink)
            async with eng.store.reading() as conn:
                tables = [r[0] for r in await conn.execute(text(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))]
                found: dict[str, Any] = {}
                for table in tables:
                    rows = (await conn.execute(text(f'SELECT t::text FROM "{table}" t'))).scalars().all()
                    hits = [n for n in NEEDLES if any(n in r for r in rows)]
                    if hits:
                        found[table] = hits
            assert not found, json.dumps(found)
    await asyncio.sleep(0)
