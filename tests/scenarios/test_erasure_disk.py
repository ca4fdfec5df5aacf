"""Erasure on disk: after ``DELETE /v1/contacts/{id}`` no erased value is left in the database files.

The API-level erasure test (``test_erasure.py``) reads the files after the engine closed, when
SQLite has already folded its WAL into the main file on the last close. Here the files are read
while the engine is still running, as a process that never stops would leave them: the ``-wal``
file then still holds every page the contact's rows were on, in clear, unless the erasure
checkpoints and truncates it. Each test first shows the values on disk (or in SQL) before the
erasure, so that it fails when they are not looked for in the right place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from engine import CampaignEngine, ManualClock, create_app
from tests.conftest import SECRET
from tests.delivery.smtp_server import SmtpSink

PERSON = {"email": "wilhelmina.shredded@erasure-test.io", "first_name": "Wilhelmina", "last_name": "Ozymandias",
          "company": "Shredworks Unlimited", "custom_fields": {"favourite": "Quokkaberry"}}
NEEDLES = ["wilhelmina.shredded", "Wilhelmina", "Ozymandias", "Shredworks Unlimited", "Quokkaberry"]


def sqlite_files(url: str) -> list[Path]:
    """The main database file and its WAL (which must exist: the engine runs in WAL mode)."""
    main = Path(url.split(":///", 1)[1])
    return [main, main.with_name(main.name + "-wal")]


def found_in_files(paths: list[Path]) -> dict[str, list[str]]:
    """Each file's erased values readable as plain bytes."""
    hits = {}
    for path in paths:
        raw = path.read_bytes() if path.exists() else b""
        found = [needle for needle in NEEDLES if needle.encode() in raw]
        if found:
            hits[path.name] = found
    return hits


async def found_in_tables(eng: CampaignEngine) -> dict[str, list[str]]:
    """Each PostgreSQL table's erased values readable through SQL (every row as text)."""
    hits: dict[str, list[str]] = {}
    async with eng.store.reading() as conn:
        tables = [row[0] for row in await conn.execute(text(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))]
        for table in tables:
            rows = (await conn.execute(text(f'SELECT t::text FROM "{table}" t'))).scalars().all()
            found = [needle for needle in NEEDLES if any(needle in row for row in rows)]
            if found:
                hits[table] = found
    return hits


async def send_then_erase(eng: CampaignEngine, sink: SmtpSink, before_erasure: Any) -> None:
    """A contact with distinctive values gets one email through the real SMTP sink; ``before_erasure``
    runs (and asserts) before the contact is erased through the API."""
    workspace = await eng.create_workspace("disk")
    app = create_app(eng)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        headers = {"Authorization": f"Bearer {workspace.api_key}"}
        created = await client.post("/v1/contacts", json=PERSON, headers=headers)
        assert created.status_code == 201, created.text
        contact_id = created.json()["id"]
        sender = await eng.create_sender(workspace.id, {
            "email": "rep@sales.io", "smtp": {"host": sink.host, "port": sink.port, "security": "none"}})
        campaign = await eng.create_campaign(workspace.id, {
            "name": "disk", "sender_ids": [sender["id"]], "settings": {"track_clicks": True},
            "schedule": {"start_time": "00:00", "end_time": "24:00"},
            "steps": [{"subject": "Hi {{first_name}} {{last_name}} at {{company}}",
                       "body_html": '<a href="https://x.io/?n={{first_name}}">x</a>'},
                      {"subject": "later", "body_html": "later", "delay": {"days": 1}}]})
        await eng.enroll(workspace.id, campaign["id"], {"contact_ids": [contact_id]})
        await eng.launch_campaign(workspace.id, campaign["id"])
        await eng.tick()
        assert len(sink.messages) == 1
        assert b"Ozymandias" in sink.messages[0].data  # the values really went through the send path
        await before_erasure()
        erased = await client.delete(f"/v1/contacts/{contact_id}", headers=headers)
        assert erased.status_code == 200, erased.text


async def test_sqlite_main_file_and_wal_hold_no_erased_value(sqlite_url: str, clock: ManualClock) -> None:
    files = sqlite_files(sqlite_url)

    async def values_are_on_disk() -> None:
        hits = found_in_files(files)
        assert sorted({needle for found in hits.values() for needle in found}) == sorted(NEEDLES), hits

    with SmtpSink() as sink:
        async with CampaignEngine(sqlite_url, clock=clock, secret_key=SECRET) as eng:
            await send_then_erase(eng, sink, values_are_on_disk)
            # Read while the engine still runs: nothing has closed the database and checkpointed it.
            assert files[1].exists()
            assert found_in_files(files) == {}
        assert found_in_files(files) == {}


@pytest.mark.postgres
async def test_postgres_read_models_hold_no_erased_value(pg_url: str, clock: ManualClock) -> None:
    held: dict[str, list[str]] = {}

    async def values_are_in_read_models() -> None:
        held.update(await found_in_tables(eng))
        assert {"rm_contacts", "rm_emails"} <= set(held), held  # the contact row and the rendered links

    with SmtpSink() as sink:
        async with CampaignEngine(pg_url, clock=clock, secret_key=SECRET) as eng:
            await send_then_erase(eng, sink, values_are_in_read_models)
            assert await found_in_tables(eng) == {}
