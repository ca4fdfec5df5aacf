"""The look-back CLI on a real engine: replay (in place and into the past), audit verify against
tampering, events export / tail, and a contact's history.

The CLI runs ``asyncio.run`` itself, so each invocation runs in a worker thread while the test's
own engine (same database) lives on the test's loop.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import typer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine
from typer.testing import CliRunner, Result

from engine import CampaignEngine, ManualClock
from engine.cli_audit import register
from engine.service import audit
from events.catalog import email as em
from events.chain import GENESIS, event_hash, verify_rows
from projections import tables as t
from tests.conftest import SECRET

ENV = {"CAMPAIGN_ENGINE_SECRET_KEY": SECRET, "COLUMNS": "400", "CAMPAIGN_ENGINE_DB": None}


@pytest.fixture(autouse=True)
def _secret_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The audit tools read the key as an operator's shell would: from the environment."""
    monkeypatch.setenv("CAMPAIGN_ENGINE_SECRET_KEY", SECRET)


def make_app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


async def cli(*args: str) -> Result:
    """Invoke the CLI in a thread (it calls asyncio.run, which cannot nest in the test's loop)."""
    return await asyncio.to_thread(CliRunner().invoke, make_app(), list(args), env=ENV)


@dataclass
class Scenario:
    ws: str
    sender: str
    campaign: str
    ann: str
    bob: str
    ann_enrollment: str
    draft_position: int  # the last position before the launch: the campaign is still a draft there
    launch_position: int


async def populate(engine: CampaignEngine, clock: ManualClock) -> Scenario:
    ws = (await engine.create_workspace("acme", monthly_limit=1000)).id
    snd = (await engine.create_sender(ws, {"email": "out@acme.io", "smtp": {
        "host": "127.0.0.1", "port": 25, "security": "none", "username": "u", "password": "hunter2"}}))["id"]
    ann = (await engine.create_contact(ws, {"email": "ann@example.com", "first_name": "Ann",
                                            "company": "Initech"}))["id"]
    bob = (await engine.create_contact(ws, {"email": "bob@example.com", "first_name": "Bob"}))["id"]
    cmp = (await engine.create_campaign(ws, {"name": "Spring", "sender_ids": [snd], "steps": [
        {"subject": "Hi {{first_name|there}}", "body_html": "<p>hello</p>"}]}))["id"]
    clock.advance(timedelta(minutes=10))
    await engine.update_campaign(ws, cmp, {"name": "Spring push"})
    await engine.enroll(ws, cmp, {"contact_ids": [ann, bob]})
    draft = await engine.store.last_position()
    clock.advance(timedelta(hours=1))
    await engine.launch_campaign(ws, cmp)
    launch = draft + 1
    async with engine.store.reading() as conn:
        enr = (await conn.execute(select(t.enrollments.c.id).where(t.enrollments.c.contact_id == ann))).scalar_one()
    clock.advance(timedelta(hours=1))
    # What the sender does for step 1 (claim, then the SMTP outcome), appended as the runtime would.
    ids = {"enrollment_id": enr, "campaign_id": cmp, "contact_id": ann, "email_id": f"{enr}.1", "step": 1}
    await engine.store.append(f"enrollment-{enr}", [
        em.EmailClaimed(**ids, sender_id=snd, message_id="<m1@acme.io>", lease_until=clock.now()),
        em.EmailSent(**ids, sender_id=snd, message_id="<m1@acme.io>", smtp_code=250),
    ], None, workspace_id=ws)
    return Scenario(ws, snd, cmp, ann, bob, enr, draft, launch)


async def snapshot(engine: CampaignEngine, url: str | None = None) -> dict[str, list[tuple[Any, ...]]]:
    target = create_async_engine(url) if url else engine.store.read_engine
    out = {}
    try:
        async with target.connect() as conn:
            for p in engine.projector.projections:
                for table in p.tables:
                    rows = (await conn.execute(select(table).order_by(*table.primary_key.columns))).all()
                    out[table.name] = [tuple(r) for r in rows]
    finally:
        if url:
            await target.dispose()
    return out


def db_path(url: str) -> str:
    return url.split(":///", 1)[1]


def tamper(url: str, *sql: str) -> None:
    """Edit the log behind the engine's back, the way an attacker with file access would."""
    con = sqlite3.connect(db_path(url))
    try:
        con.execute("DROP TRIGGER IF EXISTS events_no_update")
        con.execute("DROP TRIGGER IF EXISTS events_no_delete")
        for statement in sql:
            con.execute(statement)
        con.commit()
    finally:
        con.close()


# -- replay -----------------------------------------------------------------------------------
async def test_replay_in_place_equals_the_inline_read_models(engine: CampaignEngine, clock: ManualClock,
                                                             sqlite_url: str) -> None:
    await populate(engine, clock)
    before = await snapshot(engine)
    result = await cli("replay", "--db", sqlite_url)
    assert result.exit_code == 0, result.output
    assert "in place" in result.output and "rm_campaigns" in result.output
    assert f"replayed {await engine.store.last_position()} events" in result.output
    assert await snapshot(engine) == before


async def test_replay_into_another_database_at_a_past_position(engine: CampaignEngine, clock: ManualClock,
                                                               sqlite_url: str, tmp_path: Path) -> None:
    s = await populate(engine, clock)
    past = f"sqlite+aiosqlite:///{tmp_path}/past.db"
    result = await cli("replay", "--db", sqlite_url, "--position", str(s.draft_position), "--into", past)
    assert result.exit_code == 0, result.output
    assert f"as of position {s.draft_position}" in result.output
    then, now = await snapshot(engine, past), await snapshot(engine)
    status = {r[0]: r for r in then["rm_campaigns"]}[s.campaign]
    assert status[2] == "Spring push" and status[3] == "draft"
    assert {r[0]: r for r in now["rm_campaigns"]}[s.campaign][3] == "active"
    assert then["rm_workspaces"] == now["rm_workspaces"] and then["rm_api_keys"] == now["rm_api_keys"]
    assert len(then["rm_enrollments"]) == 2 and all(r[6] is None for r in then["rm_enrollments"])  # no next_send_at

    # --until: the last event recorded at or before that moment (the launch came an hour later)
    at = clock.now() - timedelta(hours=1, minutes=30)
    result = await cli("replay", "--db", sqlite_url, "--until", at.isoformat(), "--into", past)
    assert result.exit_code == 0, result.output
    assert f"as of position {s.draft_position}" in result.output
    assert {r[0]: r for r in (await snapshot(engine, past))["rm_campaigns"]}[s.campaign][3] == "draft"
    not_a_log = await cli("events", "export", "--db", past)  # a replay target is read models only
    assert not_a_log.exit_code == 2 and "no event log" in not_a_log.output


async def test_replay_one_campaign_into_another_database(engine: CampaignEngine, clock: ManualClock,
                                                         sqlite_url: str, tmp_path: Path) -> None:
    s = await populate(engine, clock)
    other = (await engine.create_campaign(s.ws, {"name": "Other"}))["id"]
    past = f"sqlite+aiosqlite:///{tmp_path}/one.db"
    result = await cli("replay", "--db", sqlite_url, "--campaign", s.campaign, "--into", past)
    assert result.exit_code == 0, result.output
    assert f"campaign {s.campaign} only" in result.output
    models = await snapshot(engine, past)
    assert [r[0] for r in models["rm_campaigns"]] == [s.campaign]
    assert other in [r[0] for r in (await snapshot(engine))["rm_campaigns"]]
    assert len(models["rm_contacts"]) == 2 and len(models["rm_senders"]) == 1
    missing = await cli("replay", "--db", sqlite_url, "--campaign", "cmp_nope", "--into", past)
    assert missing.exit_code == 1 and "cmp_nope" in missing.output


async def test_replay_refuses_what_would_make_the_live_models_lie(engine: CampaignEngine, clock: ManualClock,
                                                                  sqlite_url: str, tmp_path: Path) -> None:
    s = await populate(engine, clock)
    before = await snapshot(engine)
    for args in (["--position", str(s.draft_position)], ["--until", "2026-01-05T08:00:00Z"],
                 ["--campaign", s.campaign]):
        result = await cli("replay", "--db", sqlite_url, *args)
        assert result.exit_code == 2, result.output
        assert "needs --into" in result.output and "lie" in result.output
    past = tmp_path / "never.db"
    for args in (["--until", "yesterday-ish"], ["--position", "-1"],
                 ["--position", "1", "--until", "2026-01-05T08:00:00Z"]):
        result = await cli("replay", "--db", sqlite_url, *args, "--into", str(past))
        assert result.exit_code == 2, result.output
        assert "error" in result.output
    assert not past.exists()
    own = await cli("replay", "--db", sqlite_url, "--position", "2", "--into", db_path(sqlite_url))
    assert own.exit_code == 2 and "own database" in own.output
    missing = await cli("replay", "--db", f"sqlite+aiosqlite:///{tmp_path}/absent.db")
    assert missing.exit_code == 2 and "no database" in missing.output
    assert not (tmp_path / "absent.db").exists()
    assert await snapshot(engine) == before


# -- audit verify -----------------------------------------------------------------------------
async def test_verify_passes_then_names_an_updated_event(engine: CampaignEngine, clock: ManualClock,
                                                         sqlite_url: str) -> None:
    s = await populate(engine, clock)
    result = await cli("audit", "verify", "--db", sqlite_url)
    assert result.exit_code == 0, result.output
    total = await engine.store.last_position()
    assert f"{total} events checked" in result.output and "log sound" in result.output

    created = (await engine.store.read_stream(f"campaign-{s.campaign}"))[0]
    edit = "UPDATE events SET data = replace(data, 'Spring', 'Autumn') WHERE position = {}"
    tamper(sqlite_url, edit.format(created.position))
    result = await cli("audit", "verify", "--db", sqlite_url, "--batch-size", "3")
    assert result.exit_code == 1, result.output
    assert (f"first bad event: position {created.position}, stream campaign-{s.campaign}, version 1: "
            "hash mismatch") in result.output
    assert "trigger" in result.output  # the dropped triggers are reported too


async def test_verify_names_a_deleted_middle_event(engine: CampaignEngine, clock: ManualClock,
                                                   sqlite_url: str) -> None:
    s = await populate(engine, clock)
    updated = next(e for e in await engine.store.read_stream(f"campaign-{s.campaign}") if e.version == 2)
    assert updated.type == "campaign.updated"
    tamper(sqlite_url, f"DELETE FROM events WHERE position = {updated.position}")
    result = await cli("audit", "verify", "--db", sqlite_url)
    assert result.exit_code == 1, result.output
    assert (f"first bad event: position {updated.position}, stream campaign-{s.campaign}, version 2: "
            f"position {updated.position} missing") in result.output
    assert "version 3 where 2 was expected" in result.output


async def test_verify_names_deleted_last_events(engine: CampaignEngine, clock: ManualClock,
                                                sqlite_url: str) -> None:
    s = await populate(engine, clock)
    launched = next(e for e in await engine.store.read_stream(f"campaign-{s.campaign}") if e.version == 3)
    last = await engine.store.last_position()  # email.sent: the very end of the log
    tamper(sqlite_url, f"DELETE FROM events WHERE position = {last}")
    result = await cli("audit", "verify", "--db", sqlite_url)
    assert result.exit_code == 1, result.output
    assert (f"first bad event: position ?, stream enrollment-{s.ann_enrollment}, version 4: the stream ends at "
            "version 3 but 4 were appended") in result.output

    tamper(sqlite_url, f"DELETE FROM events WHERE position = {launched.position}")  # last of its stream
    result = await cli("audit", "verify", "--db", sqlite_url)
    assert result.exit_code == 1, result.output
    assert (f"first bad event: position {launched.position}, stream campaign-{s.campaign}, version 3: "
            f"position {launched.position} missing") in result.output


async def test_verify_agrees_with_chain_verify_rows(engine: CampaignEngine, clock: ManualClock,
                                                    sqlite_url: str) -> None:
    """The streaming scan finds what events.chain.verify_rows finds, tampering after tampering."""
    s = await populate(engine, clock)

    async def both() -> tuple[Any, audit.VerifyReport]:
        con = sqlite3.connect(db_path(sqlite_url))
        con.row_factory = sqlite3.Row
        rows = [dict(r) for r in con.execute("SELECT * FROM events ORDER BY stream, version")]
        heads = {r["stream"]: (r["version"], r["last_hash"]) for r in con.execute("SELECT * FROM streams")}
        con.close()
        async with audit.open_log(sqlite_url) as store:
            chain_key = store.vault.chain_key
            return verify_rows(rows, heads, key=chain_key), await audit.verify_log(store, batch_size=2)

    expected, report = await both()
    assert expected is None and report.ok
    streams = len({e.stream for e in await engine.store.read_all(0, 1000)})
    assert (report.streams, report.events) == (streams, await engine.store.last_position())
    last = await engine.store.last_position()
    for edit in ("UPDATE events SET data = replace(data, 'out@acme.io', 'evil@acme.io') WHERE position = 3",
                 f"DELETE FROM events WHERE stream = 'enrollment-{s.ann_enrollment}' AND version = 2",
                 f"DELETE FROM events WHERE position = {last}"):
        tamper(sqlite_url, edit)
        expected, report = await both()
        assert expected is not None and not report.ok
        assert (expected.position, expected.stream, expected.version) in {
            (p.position, p.stream, p.version) for p in report.problems}


async def test_verify_reports_subtler_tampering(engine: CampaignEngine, clock: ManualClock, sqlite_url: str) -> None:
    """A whole stream deleted with its head, a hash recomputed over edited data, a head removed."""
    s = await populate(engine, clock)
    bob = (await engine.store.read_stream(f"contact-{s.bob}"))[0]
    sender = (await engine.store.read_stream(f"sender-{s.sender}"))[0]
    con = sqlite3.connect(db_path(sqlite_url))
    con.row_factory = sqlite3.Row
    r = dict(con.execute("SELECT * FROM events WHERE position = ?", (sender.position,)).fetchone())
    con.close()
    forged = r["data"].replace("out@acme.io", "evil@acme.io")
    # an attacker who even holds the secret key (the chain is an HMAC under it) recomputes the hash
    forged_hash = event_hash(GENESIS, stream=r["stream"], version=1, type_name=r["type"],
                             type_version=r["type_version"], data=forged, metadata=r["metadata"],
                             recorded_at=r["recorded_at"], workspace_id=r["workspace_id"],
                             key=engine.vault.chain_key)
    tamper(sqlite_url,
           f"DELETE FROM events WHERE stream = 'contact-{s.bob}'",
           f"DELETE FROM streams WHERE stream = 'contact-{s.bob}'",
           f"UPDATE events SET data = '{forged}', hash = '{forged_hash}' WHERE position = {sender.position}",
           f"DELETE FROM streams WHERE stream = 'workspace-{s.ws}'")
    async with audit.open_log(sqlite_url) as store:
        report = await audit.verify_log(store)
    found = {(p.position, p.stream): p.problem for p in report.problems}
    assert "whole stream" in found[(bob.position, "?")]
    assert "differs from the recorded head" in found[(sender.position, f"sender-{s.sender}")]
    assert "no row in the streams table" in found[(2, f"workspace-{s.ws}")]
    assert report.first is not None and report.first.position == 2


@pytest.mark.postgres
async def test_verify_and_replay_on_postgresql(pg_url: str, clock: ManualClock, tmp_path: Path) -> None:
    async with CampaignEngine(pg_url, clock=clock, secret_key=SECRET) as engine:
        s = await populate(engine, clock)
        created, middle = (await engine.store.read_stream(f"campaign-{s.campaign}"))[:2]
    result = await cli("audit", "verify", "--db", pg_url)
    assert result.exit_code == 0, result.output
    assert "log sound" in result.output and "warning" not in result.output
    past = f"sqlite+aiosqlite:///{tmp_path}/past.db"
    result = await cli("replay", "--db", pg_url, "--position", str(s.draft_position), "--into", past)
    assert result.exit_code == 0, result.output
    async with CampaignEngine(pg_url, clock=clock, secret_key=SECRET) as engine:
        then = await snapshot(engine, past)
    assert {r[0]: r for r in then["rm_campaigns"]}[s.campaign][3] == "draft"
    con = await asyncpg.connect(pg_url.replace("+asyncpg", ""))
    try:
        await con.execute("ALTER TABLE events DISABLE TRIGGER USER")
        edit = "UPDATE events SET data = replace(data, $1, $2) WHERE position = $3"
        await con.execute(edit, "Spring", "Autumn", created.position)
        result = await cli("audit", "verify", "--db", pg_url)
        assert result.exit_code == 1, result.output
        assert f"first bad event: position {created.position}" in result.output and "hash mismatch" in result.output
        assert "disabled" in result.output
        await con.execute(edit, "Autumn", "Spring", created.position)
        await con.execute(f"DELETE FROM events WHERE position = {middle.position}")
    finally:
        await con.close()
    result = await cli("audit", "verify", "--db", pg_url)
    assert result.exit_code == 1, result.output
    assert (f"first bad event: position {middle.position}, stream campaign-{s.campaign}, version 2"
            in result.output)


# -- export and tail ---------------------------------------------------------------------------
def lines(result: Result) -> list[dict[str, Any]]:
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


async def test_export_decrypts_personal_data_and_drops_secrets(engine: CampaignEngine, clock: ManualClock,
                                                               sqlite_url: str) -> None:
    s = await populate(engine, clock)
    records = lines(await cli("events", "export", "--db", sqlite_url))
    assert [r["position"] for r in records] == list(range(1, await engine.store.last_position() + 1))
    keys = {"position", "stream", "version", "type", "type_version", "data", "metadata", "recorded_at",
            "workspace_id", "hash"}
    assert all(set(r) == keys for r in records)
    created = {r["data"]["contact_id"]: r for r in records if r["type"] == "contact.created"}
    assert created[s.ann]["data"]["email"] == "ann@example.com" and created[s.ann]["data"]["company"] == "Initech"
    sender = next(r for r in records if r["type"] == "sender.added")
    assert sender["data"]["smtp"]["username"] == "u" and "password_enc" not in sender["data"]["smtp"]
    assert "hunter2" not in json.dumps(records) and "enc:" not in json.dumps(records)

    only = lines(await cli("events", "export", "--db", sqlite_url, "--campaign", s.campaign))
    assert only and all(r["data"]["campaign_id"] == s.campaign for r in only)
    assert {"campaign.created", "enrollment.created", "email.sent"} <= {r["type"] for r in only}
    since = records[-3]["recorded_at"]
    recent = lines(await cli("events", "export", "--db", sqlite_url, "--since", since))
    assert recent and all(r["recorded_at"] >= since for r in recent) and recent[-1] == records[-1]
    bad = await cli("events", "export", "--db", sqlite_url, "--since", "soon")
    assert bad.exit_code == 2 and "ISO 8601" in bad.output

    await engine.erase_contact(s.ws, s.ann)
    after = lines(await cli("events", "export", "--db", sqlite_url))
    erased = {r["data"]["contact_id"]: r for r in after if r["type"] == "contact.created"}
    assert erased[s.ann]["data"]["email"] is None and erased[s.ann]["data"]["first_name"] is None
    assert erased[s.bob]["data"]["email"] == "bob@example.com"
    assert "ann@example.com" not in json.dumps(after)


async def test_tail_prints_existing_then_new_events(engine: CampaignEngine, clock: ManualClock,
                                                    sqlite_url: str) -> None:
    s = await populate(engine, clock)
    last = await engine.store.last_position()
    running = asyncio.create_task(cli("events", "tail", "--db", sqlite_url, "--after", str(last - 2),
                                      "--interval", "0.05", "--max-events", "3", "--idle-exit", "20"))
    await engine.create_contact(s.ws, {"email": "cy@example.com"})
    records = lines(await running)
    assert [r["position"] for r in records] == [last - 1, last, last + 1]
    assert records[-1]["data"]["email"] == "cy@example.com"
    idle = lines(await cli("events", "tail", "--db", sqlite_url, "--after", str(last), "--idle-exit", "0.2"))
    assert [r["position"] for r in idle] == [last + 1]


async def test_follow_yields_events_appended_while_following(engine: CampaignEngine, clock: ManualClock) -> None:
    s = await populate(engine, clock)
    last = await engine.store.last_position()
    seen = []
    async for ev in audit.follow(engine.store, last - 1, poll_seconds=0.01, idle_exit=10):
        seen.append(ev.position)
        if ev.position == last:  # caught up: append while the follower waits
            await engine.create_contact(s.ws, {"email": "dee@example.com"})
        if len(seen) == 2:
            break
    assert seen == [last, last + 1]


# -- history -----------------------------------------------------------------------------------
async def test_history_tells_a_contacts_story_in_order(engine: CampaignEngine, clock: ManualClock,
                                                       sqlite_url: str) -> None:
    s = await populate(engine, clock)
    result = await cli("history", "--db", sqlite_url, "--contact", "ANN@example.com ")
    assert result.exit_code == 0, result.output
    text = result.output
    order = ["contact.created", "enrollment.created", "email.scheduled", "email.claimed", "email.sent"]
    assert [text.index(o) for o in order] == sorted(text.index(o) for o in order)
    assert "Message-ID <m1@acme.io>, sender out@acme.io" in text and "SMTP 250" in text
    assert "Spring push" in text and s.ann in text and "bob@example.com" not in text

    by_enrollment = await cli("history", "--db", sqlite_url, "--enrollment", s.ann_enrollment)
    assert by_enrollment.exit_code == 0 and "email.sent" in by_enrollment.output

    stories = await audit.contact_history(engine, email="ann@example.com")
    assert [e.type for e in stories[0].entries] == order
    assert [e.step for e in stories[0].entries] == [None, None, 1, 1, 1]

    await engine.erase_contact(s.ws, s.ann)
    erased = await audit.contact_history(engine, email="ann@example.com")
    assert erased[0].email is None and erased[0].entries[0].details == "personal data erased"
    assert erased[0].entries[-1].type == "contact.erased"

    for args in (["--contact", "nobody@example.com"], ["--enrollment", "enr_nope"]):
        result = await cli("history", "--db", sqlite_url, *args)
        assert result.exit_code == 1 and "no " in result.output
    both = await cli("history", "--db", sqlite_url)
    assert both.exit_code == 2 and "exactly one" in both.output


async def test_a_rewrite_without_the_secret_key_is_caught(engine: CampaignEngine, clock: ManualClock,
                                                          sqlite_url: str) -> None:
    """The chain is an HMAC under the secret key: recomputing plain SHA-256 hashes, even over the whole
    stream and its head, does not make an edit pass."""
    s = await populate(engine, clock)
    sender = (await engine.store.read_stream(f"sender-{s.sender}"))[0]
    con = sqlite3.connect(db_path(sqlite_url))
    con.row_factory = sqlite3.Row
    rows = [dict(r) for r in con.execute("SELECT * FROM events WHERE stream = ? ORDER BY version",
                                         (f"sender-{s.sender}",))]
    con.close()
    prev, statements = GENESIS, []
    for r in rows:
        data = r["data"].replace("out@acme.io", "evil@acme.io")
        prev = event_hash(prev, stream=r["stream"], version=r["version"], type_name=r["type"],
                          type_version=r["type_version"], data=data, metadata=r["metadata"],
                          recorded_at=r["recorded_at"], workspace_id=r["workspace_id"])
        statements.append(f"UPDATE events SET data = '{data}', hash = '{prev}' WHERE position = {r['position']}")
    statements.append(f"UPDATE streams SET last_hash = '{prev}' WHERE stream = 'sender-{s.sender}'")
    tamper(sqlite_url, *statements)
    async with audit.open_log(sqlite_url) as store:
        report = await audit.verify_log(store)
    assert not report.ok and report.first is not None
    assert report.first.position == sender.position and "altered" in report.first.problem


async def test_verify_needs_the_secret_key(engine: CampaignEngine, clock: ManualClock, sqlite_url: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    await populate(engine, clock)
    monkeypatch.delenv("CAMPAIGN_ENGINE_SECRET_KEY")
    result = await asyncio.to_thread(CliRunner().invoke, make_app(), ["audit", "verify", "--db", sqlite_url],
                                     env={"COLUMNS": "400"})
    assert result.exit_code != 0 and "secret key" in result.output
