"""Property: the listings' totals kept as counters equal a recount of the rows, and a rebuild gives the same rows.

Given a random history of contact, list, suppression and campaign commands in two workspaces,
with the odd events the log can hold too (a second erasure raced by another, a contact added to a
list after its erasure, an unsubscribe of an erased contact, a second unsubscribe), when the
totals are read from the counters (``projections/listing_totals.py``), then each equals the
COUNT(*) over the listing's rows that ``pagination.total`` used to be, every listing answers that
total, and a rebuild from position 0 gives the same counter rows.
"""

from __future__ import annotations

import asyncio
import tempfile
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from engine import CampaignEngine, ManualClock
from engine.errors import EngineError
from events.catalog import contact as ce
from projections import listing_totals as lt
from projections import tables as t
from tests.conftest import throwaway_database

KINDS = ["create", "create", "import", "import_to_list", "list", "add", "add", "remove", "erase", "unsubscribe",
         "raw_erase", "raw_add", "suppress", "unsuppress", "campaign", "launch", "pause", "cancel", "delete",
         "enroll", "enroll"]
EMAILS = 6  # contact i of a workspace has the address person<i>@corp<i % 3>.io
Op = tuple[str, int, int]  # (kind, workspace 0 or 1, a free parameter)



async def _scalar(engine: CampaignEngine, q: Any) -> int:
    async with engine.store.reading() as conn:
        return int((await conn.execute(q)).scalar() or 0)


async def recount(engine: CampaignEngine, workspaces: list[str], lists: list[str]) -> dict[tuple[str, str], int]:
    """Every counter as a COUNT(*) over the rows its listing answers (zeros left out, as the table does)."""
    contact, member, campaign, suppressed, enrolled = (t.contacts.c, t.list_members.c, t.campaigns.c,
                                                       t.suppressions.c, t.enrollments.c)
    found: dict[tuple[str, str], int] = {}
    async with engine.store.reading() as conn:
        for row in (await conn.execute(select(enrolled.campaign_id, enrolled.batch_number, func.count()).where(
                enrolled.workspace_id.in_(workspaces), enrolled.batch_number.is_not(None)).group_by(
                enrolled.campaign_id, enrolled.batch_number))).all():
            found[(row[0], lt.batch_name(row[1]))] = int(row[2])
    for ws in workspaces:
        found[(ws, lt.CONTACTS)] = await _scalar(engine, select(func.count()).where(
            contact.workspace_id == ws, contact.erased.is_(False)))
        for status in ("active", "unsubscribed", "erased"):
            found[(ws, lt.status_name(lt.CONTACTS, status))] = await _scalar(engine, select(func.count()).where(
                contact.workspace_id == ws, contact.erased.is_(False), contact.status == status))
        found[(ws, lt.CAMPAIGNS)] = await _scalar(engine, select(func.count()).where(
            campaign.workspace_id == ws, campaign.deleted.is_(False)))
        for status in ("draft", "scheduled", "active", "paused", "completed", "cancelled", "archived"):
            found[(ws, lt.status_name(lt.CAMPAIGNS, status))] = await _scalar(engine, select(func.count()).where(
                campaign.workspace_id == ws, campaign.deleted.is_(False), campaign.status == status))
        found[(ws, lt.SUPPRESSIONS)] = await _scalar(engine, select(func.count()).where(suppressed.workspace_id == ws))
    for lid in lists:
        found[(lid, lt.LIST_MEMBERS)] = await _scalar(engine, select(func.count()).select_from(t.list_members).join(
            t.contacts, contact.id == member.contact_id).where(member.list_id == lid, contact.erased.is_(False)))
    return {key: n for key, n in found.items() if n}


async def tables(engine: CampaignEngine) -> dict[str, list[tuple[Any, ...]]]:
    async with engine.store.reading() as conn:
        return {table.name: [tuple(row) for row in (await conn.execute(
            select(table).order_by(*table.primary_key.columns))).all()] for table in lt.listing_totals.tables}


async def run(history: list[Op], backend: str = "sqlite") -> dict[tuple[str, str], int]:
    async with throwaway_database(backend) as url:
        clock = ManualClock(datetime(2026, 1, 5, 8, tzinfo=UTC))
        async with CampaignEngine(url, clock=clock, secret_key="k" * 32) as engine:
            workspaces = [(await engine.create_workspace(f"w{number}")).id for number in range(2)]
            senders = [(await engine.create_sender(ws, {"email": f"rep@s{number}.io", "smtp": {
                "host": "127.0.0.1", "port": 9, "security": "none"}}))["id"] for number, ws in enumerate(workspaces)]
            contacts: list[dict[int, str]] = [{}, {}]  # per workspace: address number -> contact id
            lists: list[list[str]] = [[], []]
            campaigns: list[list[str]] = [[], []]

            async def contact_ids(at: int, param: int) -> list[str]:
                found = await engine.list_contacts(workspaces[at], per_page=200)
                return [item["id"] for item in found["data"]][param % 3::2]

            for kind, at, param in history:
                ws = workspaces[at]
                email = f"person{param % EMAILS}@corp{param % 3}.io"
                try:
                    if kind == "create":
                        contacts[at][param % EMAILS] = (await engine.create_contact(ws, {"email": email}))["id"]
                    elif kind in ("import", "import_to_list"):
                        list_id = lists[at][param % len(lists[at])] if kind == "import_to_list" and lists[at] else None
                        await engine.import_contacts(ws, [{"email": email}, {"email": f"x{param}@corp.io"}],
                                                     list_id=list_id)
                    elif kind == "list":
                        lists[at].append((await engine.create_list(ws, {"name": f"l{param}"}))["id"])
                    elif kind in ("add", "remove") and lists[at]:
                        ids = await contact_ids(at, param)
                        if ids:
                            action = engine.add_list_contacts if kind == "add" else engine.remove_list_contacts
                            await action(ws, lists[at][param % len(lists[at])], {"contact_ids": ids})
                    elif kind == "erase" and contacts[at]:
                        await engine.erase_contact(ws, sorted(contacts[at].values())[param % len(contacts[at])])
                    elif kind in ("unsubscribe", "raw_erase", "raw_add") and contacts[at]:
                        # Events the commands would not write in this order, but the log can hold.
                        cid = sorted(contacts[at].values())[param % len(contacts[at])]
                        if kind == "raw_add":
                            if lists[at]:
                                lid = lists[at][param % len(lists[at])]
                                await engine.store.append(f"list-{lid}", [ce.ListContactsAdded(
                                    list_id=lid, contact_ids=(cid, cid))], None, workspace_id=ws)
                        else:
                            event = (ce.ContactUnsubscribed(contact_id=cid, reason="link") if kind == "unsubscribe"
                                     else ce.ContactErased(contact_id=cid, email_hash=None))
                            await engine.store.append(f"contact-{cid}", [event], None, workspace_id=ws)
                    elif kind == "suppress":
                        body = {"email": email} if param % 2 else {"domain": f"corp{param % 3}.io"}
                        await engine.add_suppression(ws, body)
                    elif kind == "unsuppress":
                        await engine.delete_suppression(ws, email if param % 2 else f"corp{param % 3}.io")
                    elif kind == "campaign":
                        campaigns[at].append((await engine.create_campaign(ws, {
                            "name": f"c{param}", "sender_ids": [senders[at]],
                            "steps": [{"subject": "Hi", "body_html": "b"}]}))["id"])
                    elif kind == "enroll" and campaigns[at]:
                        ids = await contact_ids(at, param)
                        if ids:
                            await engine.enroll(ws, campaigns[at][param % len(campaigns[at])], {
                                "contact_ids": ids, "batch_number": param % 3 or None})
                    elif campaigns[at] and kind in ("launch", "pause", "cancel", "delete"):
                        cid = campaigns[at][param % len(campaigns[at])]
                        await getattr(engine, f"{kind}_campaign")(ws, cid)
                except EngineError:
                    pass  # refused (a conflict, an unknown or erased id): it appended nothing
                clock.advance(timedelta(seconds=7))
            all_lists = lists[0] + lists[1]
            expected = await recount(engine, workspaces, all_lists)
            async with engine.store.reading() as conn:
                rows = {(row.owner, row.name): row.total for row in (await conn.execute(select(lt.totals))).all()}
            assert rows == expected
            for at, ws in enumerate(workspaces):  # and each listing answers it
                for status in (None, "active", "unsubscribed"):
                    page = await engine.list_contacts(ws, status=status, per_page=1)
                    name = lt.status_name(lt.CONTACTS, status) if status else lt.CONTACTS
                    assert page["pagination"]["total"] == expected.get((ws, name), 0)
                for lid in lists[at]:
                    page = await engine.list_contacts(ws, list_id=lid, per_page=1)
                    assert page["pagination"]["total"] == expected.get((lid, lt.LIST_MEMBERS), 0)
                listed = await engine.list_lists(ws, per_page=200)
                assert {item["id"]: item["contact_count"] for item in listed["data"]} == {
                    lid: expected.get((lid, lt.LIST_MEMBERS), 0) for lid in lists[at]}
                for status in (None, "draft", "active", "paused"):
                    page = await engine.list_campaigns(ws, status=status, per_page=1)
                    name = lt.status_name(lt.CAMPAIGNS, status) if status else lt.CAMPAIGNS
                    assert page["pagination"]["total"] == expected.get((ws, name), 0)
                assert (await engine.list_suppressions(ws, per_page=1))["pagination"]["total"] == expected.get(
                    (ws, lt.SUPPRESSIONS), 0)
                for cid in campaigns[at]:
                    for batch in (1, 2):
                        try:
                            page = await engine.list_enrollments(ws, cid, batch_number=batch, per_page=1)
                        except EngineError:
                            continue  # a deleted campaign
                        assert page["pagination"]["total"] == expected.get((cid, lt.batch_name(batch)), 0)
            inline = await tables(engine)
            await engine.rebuild_projections()
            assert await tables(engine) == inline
            return expected


ops = st.tuples(st.sampled_from(KINDS), st.integers(0, 1), st.integers(0, 11))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Erased twice (a raced erasure), then added to a list and unsubscribed after it: nothing moves.
@example([("list", 0, 0), ("create", 0, 1), ("add", 0, 0), ("erase", 0, 0), ("raw_erase", 0, 0), ("raw_add", 0, 0),
          ("unsubscribe", 0, 0)])
@given(st.lists(ops, min_size=1, max_size=30))
def test_totals_equal_a_recount_and_a_rebuild(history: list[Op]) -> None:
    asyncio.run(run(history))


@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, min_size=1, max_size=30))
def test_totals_equal_a_recount_and_a_rebuild_on_postgresql(history: list[Op]) -> None:
    """The same on PostgreSQL (its upserts and row-value IN are other statements), fewer examples."""
    asyncio.run(run(history, "postgres"))


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_property_reaches_every_counter(backend: str) -> None:
    """Guard against a vacuous property: a fixed history moves every kind of counter."""
    history = [("list", 0, 0), ("create", 0, 0), ("create", 0, 1), ("create", 0, 2), ("import_to_list", 0, 3),
               ("add", 0, 0), ("unsubscribe", 0, 1), ("unsubscribe", 0, 1), ("erase", 0, 2), ("suppress", 0, 1),
               ("suppress", 0, 1), ("suppress", 0, 2), ("campaign", 0, 0), ("campaign", 0, 1), ("launch", 0, 0),
               ("pause", 0, 0), ("delete", 0, 1), ("create", 1, 0), ("enroll", 0, 1), ("enroll", 0, 4)]
    found = asyncio.run(run(history, backend))
    by_name: dict[str, int] = {}
    for (_, name), n in found.items():
        by_name[name] = by_name.get(name, 0) + n
    assert by_name["contacts"] == 5 and by_name["contacts.unsubscribed"] == 1 and by_name["contacts.active"] == 4
    assert by_name["list_members"] >= 1 and by_name["suppressions"] == 2
    assert by_name["campaigns"] == 1 and by_name["campaigns.paused"] == 1
    assert by_name[lt.batch_name(1)] >= 1


def test_the_counters_follow_the_read_models_rules() -> None:
    """The counters re-state two rules of other read models (they may not read those tables): the
    events that give a campaign its status (``projections/campaigns.py``) and those that make a
    contact ``unsubscribed`` (``projections/contacts.py``). A rule changed there must change here."""
    from projections import campaigns as campaign_model
    from projections import contacts as contact_model

    assert lt._CAMPAIGN_STATUS == campaign_model._STATUS_BY_TYPE
    assert {"campaign.created", "campaign.launched", "campaign.deleted"} <= set(campaign_model.campaigns.handlers)
    unsubscribing = contact_model.contacts.handlers["contact.unsubscribed"]
    assert {t for t, handler in contact_model.contacts.handlers.items() if handler is unsubscribing} == {
        "contact.unsubscribed", "email.complained"}
    assert set(lt.listing_totals.handlers) >= {"contact.unsubscribed", "email.complained", "contact.erased",
                                                 "contact.created", *campaign_model._STATUS_BY_TYPE}


def test_a_database_from_before_the_counters_gets_them_on_open() -> None:
    """Given a database whose history was written by code without the listing counters (their
    tables and projection_state row absent), when an engine opens it, then the projection is
    rebuilt from the log and every listing's total is what a recount says."""
    async def scenario() -> None:
        with tempfile.TemporaryDirectory() as d:
            url = f"sqlite+aiosqlite:///{d}/p.db"
            clock = ManualClock(datetime(2026, 1, 5, 8, tzinfo=UTC))
            async with CampaignEngine(url, clock=clock, secret_key="k" * 32) as engine:
                ws = (await engine.create_workspace("w")).id
                sender = (await engine.create_sender(ws, {"email": "rep@s.io", "smtp": {
                    "host": "127.0.0.1", "port": 9, "security": "none"}}))["id"]
                lid = (await engine.create_list(ws, {"name": "l"}))["id"]
                ids = [(await engine.create_contact(ws, {"email": f"p{number}@corp.io"}))["id"] for number in range(3)]
                await engine.add_list_contacts(ws, lid, {"contact_ids": ids[:2]})
                await engine.store.append(f"contact-{ids[1]}", [ce.ContactUnsubscribed(
                    contact_id=ids[1], reason="link")], None, workspace_id=ws)
                await engine.create_campaign(ws, {"name": "c", "sender_ids": [sender]})
                await engine.erase_contact(ws, ids[0])
                before = await recount(engine, [ws], [lid])
                assert before == {(ws, "contacts"): 2, (ws, "contacts.active"): 1, (ws, "contacts.unsubscribed"): 1,
                                  (lid, "list_members"): 1, (ws, "campaigns"): 1, (ws, "campaigns.draft"): 1}
                async with engine.store.write_engine.begin() as conn:
                    for table in lt.listing_totals.tables:
                        await conn.exec_driver_sql(f"DROP TABLE {table.name}")
                    await conn.exec_driver_sql("DELETE FROM projection_state WHERE name = 'listing_totals'")
            async with CampaignEngine(url, clock=clock, secret_key="k" * 32) as engine:
                assert (await engine.list_contacts(ws, per_page=1))["pagination"]["total"] == 2
                assert (await engine.list_contacts(ws, list_id=lid, per_page=1))["pagination"]["total"] == 1
                async with engine.store.reading() as conn:
                    rows = {(row.owner, row.name): row.total for row in (await conn.execute(select(lt.totals))).all()}
                assert rows == before

    asyncio.run(scenario())
