"""Bulk import and enroll: the batch's email check gives single checks' answers, and chunk
boundaries (import transactions, enroll transactions, fact look-ups, filter batches) change
nothing a client sees. Chunk sizes are made tiny here so that a few contacts cross every boundary."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from engine import CampaignEngine, ManualClock
from engine.domain.models import check_email
from engine.service import campaigns, management
from engine.service.contact_import import BatchEmails
from events import schema
from tests.api.test_campaigns_api import campaign
from tests.conftest import SECRET, Api

ADDRESSES = [
    "ann@acme.io", "Ann.Lee+tag@ACME.IO", "ann@acme.io.", "o'brien@acme.io", "a.b-c_d~e@sub.acme.io",
    "Postmaster@acme.io", "INFO@acme.io", "ann@bücher.de", "ann@xn--bcher-kva.de", "jörg@acme.io",
    '"quoted local"@acme.io', "Ann <ann@acme.io>", " ann@acme.io", "ann@acme.io ", "ann@@acme.io",
    "ann@", "@acme.io", "ann", "a..b@acme.io", ".ann@acme.io", "ann.@acme.io", "ann@localhost",
    "ann@printer.local", "ann@acme.test", "ann@acme.123", "ann@-acme.io", "ann@acme_corp.io",
    "ann@[192.168.0.1]", "x" * 64 + "@acme.io", "x" * 65 + "@acme.io",
    "x" * 64 + "@" + ".".join(["d" * 60] * 3) + ".io", "x" * 60 + "@" + ".".join(["d" * 60] * 3) + ".io",
    "x" * 64 + "@" + ".".join(["d" * 60] * 3) + "." + "e" * 14 + ".io",  # each part fine, the whole too long
    "ann@a\u0301cme.io", "ann@ACME.io",
]


@pytest.fixture
async def engine(db_url: str, clock: ManualClock) -> AsyncIterator[CampaignEngine]:
    """The API tests here run on SQLite and on PostgreSQL: the set queries differ by dialect."""
    async with CampaignEngine(db_url, clock=clock, secret_key=SECRET) as opened:
        yield opened


def single(address: str) -> str:
    try:
        return "ok " + check_email(address)
    except ValueError as exc:
        return "error " + str(exc)


def batched(emails: BatchEmails, address: str) -> str:
    try:
        return "ok " + emails.check(address)
    except ValueError as exc:
        return "error " + str(exc)


def test_batch_email_check_answers_as_the_single_check() -> None:
    emails = BatchEmails()
    for _ in range(2):  # the second pass answers from the domains the first one checked
        assert [batched(emails, a) for a in ADDRESSES] == [single(a) for a in ADDRESSES]


async def events_of(engine: CampaignEngine, type_: str) -> list[Any]:
    async with engine.store.reading() as conn:
        return [row[0] for row in (await conn.execute(
            select(schema.events.c.stream).where(schema.events.c.type == type_))).all()]


async def test_import_across_transaction_chunks(api: Api, engine: CampaignEngine,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(management, "IMPORT_CHUNK", 2)
    await api.post("/v1/contacts", json={"email": "old@acme.io", "first_name": "Old"})
    lst = (await api.post("/v1/lists", json={"name": "file"})).json()["id"]
    rows = [{"email": "a@acme.io"}, {"email": "OLD@acme.io", "first_name": "New"}, {"email": "nope"},
            {"email": "b@acme.io", "plan": "pro"}, {"email": "a@acme.io", "first_name": "Again"},
            {"email": "c@acme.io"}, {"email": "old@acme.io", "first_name": "New"}]
    r = await api.post(f"/v1/contacts/import?list_id={lst}", json=rows)
    assert r.status_code == 200, r.text
    assert r.json() == {"created": 3, "updated": 1, "invalid": [{"row": 3, "error": r.json()["invalid"][0]["error"]}],
                        "list_id": lst, "added_to_list": 4}
    assert len(await events_of(engine, "contact.created")) == 4  # old@ and the three new ones
    assert len(await events_of(engine, "contact.updated")) == 1
    assert len(await events_of(engine, "list.contacts_added")) == 2  # one per chunk of two contacts
    listed = (await api.get(f"/v1/contacts?list_id={lst}")).json()["data"]
    assert sorted(c["email"] for c in listed) == ["a@acme.io", "b@acme.io", "c@acme.io", "old@acme.io"]
    a = (await api.get("/v1/contacts?q=a@acme.io")).json()["data"][0]
    assert a["first_name"] == "Again"  # a repeated address: the last row wins, as in one chunk


async def test_enroll_across_chunks_with_every_look_up_split(api: Api, engine: CampaignEngine,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ENROLL_CHUNK", "FACTS_CHUNK", "FILTER_BATCH"):
        monkeypatch.setattr(campaigns, name, 2)
    ids = [(await api.post("/v1/contacts", json={"email": email, "company": company})).json()["id"]
           for email, company in [("a@acme.io", "Acme"), ("b@blocked.io", "Acme"), ("c@acme.io", "Other"),
                                  ("d@acme.io", "Acme"), ("e@acme.io", "Acme"), ("f@blocked.io", "Acme"),
                                  ("g@acme.io", "Acme")]]
    await api.post("/v1/suppressions", json={"domain": "blocked.io"})
    await api.post("/v1/suppressions", json={"email": "e@acme.io"})
    first = await campaign(api, outreach_id="o-1")
    assert (await api.post(f"/v1/campaigns/{first['id']}/enrollments",
                           json={"contact_ids": [ids[6]]})).json()["added"] == 1
    c = await campaign(api, outreach_id="o-1")
    r = await api.post(f"/v1/campaigns/{c['id']}/enrollments", json={
        "filter": {"operator": "and", "rules": [{"field": "company", "op": "eq", "value": "acme"}]},
        "contact_ids": [ids[0], ids[3], ids[0]]})
    assert r.status_code == 200, r.text
    # picks a, d, a (again) then the filter's a, b, d, e, f, g in creation order
    assert r.json()["added"] == 2
    assert r.json()["skipped"] == {"already_enrolled": 3, "suppressed": 3, "duplicate_elsewhere": 1}
    rows = (await api.get(f"/v1/campaigns/{c['id']}/enrollments")).json()["data"]
    assert [e["contact_id"] for e in rows] == [ids[0], ids[3]]
    assert len(await events_of(engine, "enrollment.skipped")) == 7
