"""The contacts read model: contacts, lists and their members, suppressions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from events.store import StoredEvent
from projections import tables
from projections.base import (
    Projection,
    TimeTexts,
    compact_json,
    event_of,
    insert_statement,
    recorded_at_text,
)

# -- contacts, lists, suppressions ------------------------------------------------------------
contacts = Projection("contacts", 1, [tables.contacts, tables.lists, tables.list_members, tables.suppressions])

_CONTACT_FIELDS = ("email", "first_name", "last_name", "company", "timezone")


_C = tables.contacts
_CONTACT_INSERT = insert_statement(tables.contacts, bounced=False, replied=False, unsubscribed=False)


@contacts.on("contact.created")
async def _contact_created(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    texts = TimeTexts()
    rows = []
    for e in evs:
        d: Any = e.event
        erased = d.email is None  # the key was destroyed before this rebuild
        at = texts[e.recorded_at]
        rows.append((d.contact_id, e.workspace_id, d.email, d.email_hash, d.email_domain, d.first_name, d.last_name,
                     d.company, d.timezone, compact_json(d.custom_fields) if d.custom_fields is not None else None,
                     "erased" if erased else "active", erased, at, at))
    await _CONTACT_INSERT.run(conn, rows)


@contacts.on("contact.updated")
async def _contact_updated(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    """One UPDATE per set of changed columns, run over all the events changing exactly those columns.

    A re-import updates thousands of contacts in one append, most changing the same columns: an
    UPDATE per event was most of its projection time. A contact met again under another set of
    columns first writes what was gathered, so each contact's changes still land in log order.
    """
    texts = TimeTexts()
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    group_of: dict[str, tuple[str, ...]] = {}  # contact id -> the group holding its last change
    for e in evs:
        d = event_of(e)
        values: dict[str, Any] = {"updated_at": texts[e.recorded_at]}
        for key, value in (d.changes or {}).items():
            if key in _CONTACT_FIELDS or key in ("email_hash", "email_domain"):
                values[key] = value
            elif key == "custom_fields":
                values[key] = compact_json(value) if value is not None else None
        columns = tuple(sorted(values))
        if group_of.get(d.contact_id, columns) != columns:
            await _update_contacts(conn, groups)
            groups.clear()
            group_of.clear()
        groups.setdefault(columns, []).append({"contact": d.contact_id, **{f"v_{k}": v for k, v in values.items()}})
        group_of[d.contact_id] = columns
    await _update_contacts(conn, groups)


async def _update_contacts(conn: AsyncConnection, groups: dict[tuple[str, ...], list[dict[str, Any]]]) -> None:
    """Each group's rows in one executemany of the UPDATE setting its columns."""
    for columns, rows in groups.items():
        await conn.execute(update(_C).where(_C.c.id == bindparam("contact"))
                           .values({name: bindparam(f"v_{name}") for name in columns}), rows)


@contacts.on("contact.erased")
async def _contact_erased(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    for e in evs:
        cid = event_of(e).contact_id
        await conn.execute(update(tables.contacts).where(tables.contacts.c.id == cid).values(
            email=None, first_name=None, last_name=None, company=None, custom_fields=None, timezone=None,
            status="erased", erased=True, updated_at=recorded_at_text(e)))
        await conn.execute(delete(tables.list_members).where(tables.list_members.c.contact_id == cid))
        if event_of(e).email_hash:  # the suppression stays (as a keyed hash); its readable value goes
            await conn.execute(update(tables.suppressions).where(
                tables.suppressions.c.workspace_id == e.workspace_id,
                tables.suppressions.c.value_hash == event_of(e).email_hash
            ).values(value=None))


@contacts.on("contact.unsubscribed", "email.complained")
async def _contact_unsubscribed(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    await conn.execute(update(_C).where(_C.c.id == bindparam("i")).values(
        unsubscribed=True, status="unsubscribed", updated_at=bindparam("u")),
        [{"i": event_of(e).contact_id, "u": recorded_at_text(e)} for e in evs])


@contacts.on("email.bounced")
async def _contact_bounced(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    rows = [{"i": event_of(e).contact_id, "u": recorded_at_text(e)} for e in evs if event_of(e).bounce_type == "hard"]
    if rows:
        await conn.execute(update(_C).where(_C.c.id == bindparam("i")).values(bounced=True, updated_at=bindparam("u")),
                           rows)


@contacts.on("email.replied")
async def _contact_replied(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    rows = [{"i": event_of(e).contact_id, "u": recorded_at_text(e)} for e in evs if not event_of(e).out_of_office]
    if rows:
        await conn.execute(update(_C).where(_C.c.id == bindparam("i")).values(replied=True, updated_at=bindparam("u")),
                           rows)


_LIST_INSERT = insert_statement(tables.lists)


@contacts.on("list.created")
async def _list_created(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    texts = TimeTexts()
    await _LIST_INSERT.run(conn, [(d.list_id, e.workspace_id, d.name, texts[e.recorded_at])
                                  for e in evs for d in [event_of(e)]])


@contacts.on("list.contacts_added")
async def _list_added(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    for e in evs:
        d = event_of(e)
        ids = list(dict.fromkeys(d.contact_ids))
        existing = set((await conn.execute(select(tables.list_members.c.contact_id).where(
            tables.list_members.c.list_id == d.list_id, tables.list_members.c.contact_id.in_(ids)))).scalars())
        rows = [{"list_id": d.list_id, "contact_id": c} for c in ids if c not in existing]
        if rows:
            await conn.execute(tables.list_members.insert(), rows)


@contacts.on("list.contacts_removed")
async def _list_removed(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    for e in evs:
        d = event_of(e)
        await conn.execute(delete(tables.list_members).where(
            tables.list_members.c.list_id == d.list_id, tables.list_members.c.contact_id.in_(list(d.contact_ids))))


@contacts.on("suppression.added")
async def _supp_added(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    for e in evs:
        d = event_of(e)
        s = tables.suppressions
        await conn.execute(delete(s).where(s.c.workspace_id == e.workspace_id, s.c.kind == d.kind,
                                           s.c.value_hash == d.value_hash))
        await conn.execute(s.insert().values(workspace_id=e.workspace_id, kind=d.kind, value_hash=d.value_hash,
                                             value=d.value, reason=d.reason, created_at=recorded_at_text(e)))


@contacts.on("suppression.removed")
async def _supp_removed(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    s = tables.suppressions
    await conn.execute(delete(s).where(s.c.workspace_id == bindparam("w"), s.c.kind == bindparam("k"),
                                       s.c.value_hash == bindparam("h")),
                       [{"w": e.workspace_id, "k": event_of(e).kind, "h": event_of(e).value_hash} for e in evs])
