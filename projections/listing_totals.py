"""Listing totals as counters, kept as events land, so that ``pagination.total`` of a long listing is
one primary-key read instead of a COUNT over the listing's rows (which grows with the table, and
made a deep page of 100,000 contacts cost as much as a shallow one plus a scan).

``rm_listing_totals`` holds one row per (owner, name), the number of rows a listing (or one of its
filters) answers:

=========================  ==============  =====================================================
name                       owner           counts
=========================  ==============  =====================================================
``contacts``               workspace id    contacts not erased (``GET /v1/contacts``)
``contacts.<status>``      workspace id    of those, the ones in that status (``?status=``)
``list_members``           list id         the list's members not erased (``?list_id=``, and
                                           a list's ``contact_count``)
``campaigns``              workspace id    campaigns not deleted (``GET /v1/campaigns``)
``campaigns.<status>``     workspace id    of those, the ones in that status (``?status=``)
``suppressions``           workspace id    suppressed emails and domains
``enrollments.batch=<n>``  campaign id     the campaign's enrollments of batch n (``?batch_number=``)
=========================  ==============  =====================================================

Enrollments per campaign and status are counted by ``projections/campaign_stats.py`` already
(its ``enrollment`` rows), which the enrollment listing reads. An enrollment keeps its batch and
its row for good (a removal or a stop changes its status only), so a batch's counter only grows.

A counter moves only when a row enters or leaves what it counts, so the handlers keep what they
need to know about that, and only that, in small tables of their own (a read model may not read
another's tables: a rebuild of this one alone would read the others at the end of the log):
``rm_totals_contact_marks`` the contacts that left ``active`` (unsubscribed, erased: the few),
``rm_totals_list_members`` the lists' members, ``rm_totals_campaigns`` each campaign's status,
``rm_totals_suppressions`` the suppressed values. So a repeated event (a second unsubscribe, a
complaint after it, a contact added twice to a list, an erasure raced by another) moves nothing,
as it changes no row of the listing.

A counter row back at zero is deleted, so the rows do not depend on how the log was cut into
appends (inline) or batches (rebuild), and a missing row reads as zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Boolean, Column, Index, Integer, Select, String, Table, and_, bindparam, func, select, tuple_
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from events.store import StoredEvent
from projections.base import Projection, Statement, event_of, insert_statement, metadata

CONTACTS, LIST_MEMBERS, CAMPAIGNS, SUPPRESSIONS = "contacts", "list_members", "campaigns", "suppressions"
ACTIVE, UNSUBSCRIBED, ERASED = "active", "unsubscribed", "erased"

totals = Table(
    "rm_listing_totals", metadata,
    Column("owner", String(64), primary_key=True),
    Column("name", String(48), primary_key=True),
    Column("total", Integer, nullable=False),
)

# Contacts no longer ``active``: mark "unsubscribed" or "erased" (absent: active, or never created).
contact_marks = Table(
    "rm_totals_contact_marks", metadata,
    Column("contact_id", String(64), primary_key=True),
    Column("workspace_id", String(64), nullable=False),
    Column("mark", String(16), nullable=False),
)

list_members = Table(
    "rm_totals_list_members", metadata,
    Column("list_id", String(64), primary_key=True),
    Column("contact_id", String(64), primary_key=True),
    Index("ix_rm_totals_list_members_contact", "contact_id"),  # an erasure finds the contact's lists
)

campaign_facts = Table(
    "rm_totals_campaigns", metadata,
    Column("campaign_id", String(64), primary_key=True),
    Column("workspace_id", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("deleted", Boolean, nullable=False),
)

suppression_facts = Table(
    "rm_totals_suppressions", metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("kind", String(8), primary_key=True),
    Column("value_hash", String(64), primary_key=True),
)

# Version 2: enrollments per campaign and batch.
listing_totals = Projection("listing_totals", 2, [totals, contact_marks, list_members, campaign_facts,
                                                  suppression_facts])

# The campaigns read model's statuses by event (projections/campaigns.py); campaign.launched names its own.
_CAMPAIGN_STATUS = {
    "campaign.paused": "paused", "campaign.resumed": "active", "campaign.completed": "completed",
    "campaign.cancelled": "cancelled", "campaign.archived": "archived", "campaign.activated": "active",
}
_CONTACT_TYPES = ("contact.created", "contact.unsubscribed", "email.complained", "contact.erased")
_LIST_TYPES = ("list.contacts_added", "list.contacts_removed")
_CAMPAIGN_TYPES = ("campaign.created", "campaign.launched", "campaign.deleted", *_CAMPAIGN_STATUS)
_SUPPRESSION_TYPES = ("suppression.added", "suppression.removed")
_ENROLLMENT_TYPES = ("enrollment.created",)
_CHUNK = 500  # ids per IN (...) look-up, well under the bound-parameter limits

_MARK_INSERT = insert_statement(contact_marks)
_MEMBER_INSERT = insert_statement(list_members)
_CAMPAIGN_INSERT = insert_statement(campaign_facts)
_SUPPRESSION_INSERT = insert_statement(suppression_facts)
_MARK_UPDATE = Statement(lambda: contact_marks.update().where(contact_marks.c.contact_id == bindparam("p_id"))
                         .values(mark=bindparam("p_mark")), ["p_mark", "p_id"])
_CAMPAIGN_UPDATE = Statement(
    lambda: campaign_facts.update().where(campaign_facts.c.campaign_id == bindparam("p_id"))
    .values(status=bindparam("p_status"), deleted=bindparam("p_deleted")), ["p_status", "p_deleted", "p_id"])

Deltas = dict[tuple[str, str], int]  # (owner, name) -> change


def status_name(listing: str, status: str) -> str:
    """The counter of a listing's ``?status=`` filter: ``contacts.unsubscribed``, ``campaigns.active``."""
    return f"{listing}.{status}"


def batch_name(batch_number: int) -> str:
    """The counter of a campaign's enrollments of one batch (``?batch_number=``)."""
    return f"enrollments.batch={batch_number}"


def total_query(owner: str, name: str) -> Select[Any]:
    """The total a counter holds (0 when it has no row): one primary-key read."""
    return select(func.coalesce(func.sum(totals.c.total), 0)).where(totals.c.owner == owner, totals.c.name == name)


async def _in_chunks(conn: AsyncConnection, query: Any, column: Any, ids: Sequence[Any]) -> list[Any]:
    found: list[Any] = []
    for start in range(0, len(ids), _CHUNK):
        found.extend((await conn.execute(query.where(column.in_(ids[start:start + _CHUNK])))).all())
    return found


def _move(deltas: Deltas, owner: str, name: str, change: int) -> None:
    deltas[(owner, name)] = deltas.get((owner, name), 0) + change


@listing_totals.on(*_CONTACT_TYPES, *_LIST_TYPES, *_CAMPAIGN_TYPES, *_SUPPRESSION_TYPES, *_ENROLLMENT_TYPES)
async def _apply(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    """One call per batch: what the batch's events need to know is read once, the events are
    applied in log order in memory (a contact erased after joining a list in the same batch leaves
    it), and the facts and the counters' differences are written once."""
    deltas: Deltas = {}
    marks = await _Marks.load(conn, evs)
    members = await _Members.load(conn, evs, marks)
    campaigns = await _Campaigns.load(conn, evs)
    suppressions = await _Suppressions.load(conn, evs)
    for stored in evs:
        data: Any = stored.event
        type_ = stored.type
        if type_ in _CONTACT_TYPES:
            marks.apply(type_, data.contact_id, stored.workspace_id, deltas, members)
        elif type_ in _LIST_TYPES:
            members.apply(type_, data.list_id, data.contact_ids, marks, deltas)
        elif type_ in _SUPPRESSION_TYPES:
            suppressions.apply(type_, (stored.workspace_id, data.kind, data.value_hash), deltas)
        elif type_ in _ENROLLMENT_TYPES:
            if data.batch_number is not None:
                _move(deltas, data.campaign_id, batch_name(data.batch_number), 1)
        else:
            campaigns.apply(type_, data, stored.workspace_id, deltas)
    await marks.write(conn)
    await members.write(conn)
    await campaigns.write(conn)
    await suppressions.write(conn)
    await _add(conn, deltas)


class _Marks:
    """The contacts' marks a batch touches: absent (active), unsubscribed or erased."""

    def __init__(self, stored: dict[str, str]) -> None:
        self.stored = stored
        self.now: dict[str, str] = dict(stored)
        self.workspaces: dict[str, str] = {}

    @classmethod
    async def load(cls, conn: AsyncConnection, evs: Sequence[StoredEvent]) -> _Marks:
        # A created contact has no mark yet (its stream starts at version 0): nothing to read for it.
        # The contacts added to a list are read too: an erased contact joins no listing.
        wanted = {event_of(ev).contact_id for ev in evs if ev.type in _CONTACT_TYPES and ev.type != "contact.created"}
        for ev in evs:
            if ev.type == "list.contacts_added":
                wanted.update(event_of(ev).contact_ids)
        cols = contact_marks.c
        rows = await _in_chunks(conn, select(cols.contact_id, cols.mark), cols.contact_id, sorted(wanted))
        return cls({row[0]: row[1] for row in rows})

    def erased(self, contact_id: str) -> bool:
        return self.now.get(contact_id) == ERASED

    def apply(self, type_: str, contact_id: str, ws: str, deltas: Deltas, members: _Members) -> None:
        mark = self.now.get(contact_id)
        if type_ == "contact.created":
            # Created erased (its key destroyed before this rebuild): counted until its erasure
            # event, which always follows, as the contacts read model shows it until then.
            _move(deltas, ws, CONTACTS, 1)
            _move(deltas, ws, status_name(CONTACTS, ACTIVE), 1)
        elif type_ == "contact.erased":
            if mark == ERASED:
                return
            _move(deltas, ws, CONTACTS, -1)
            _move(deltas, ws, status_name(CONTACTS, mark or ACTIVE), -1)
            self.now[contact_id], self.workspaces[contact_id] = ERASED, ws
            members.leave_all(contact_id, deltas)
        elif mark is None:  # contact.unsubscribed or email.complained of an active contact
            _move(deltas, ws, status_name(CONTACTS, ACTIVE), -1)
            _move(deltas, ws, status_name(CONTACTS, UNSUBSCRIBED), 1)
            self.now[contact_id], self.workspaces[contact_id] = UNSUBSCRIBED, ws

    async def write(self, conn: AsyncConnection) -> None:
        changed = [(cid, mark) for cid, mark in self.now.items() if self.stored.get(cid) != mark]
        await _MARK_INSERT.run(conn, [(cid, self.workspaces[cid], mark) for cid, mark in changed
                                      if cid not in self.stored])
        await _MARK_UPDATE.run(conn, [(mark, cid) for cid, mark in changed if cid in self.stored])


class _Members:
    """The (list, contact) memberships a batch touches: the pairs its list events name, and every
    list of the contacts it erases."""

    def __init__(self, stored: set[tuple[str, str]]) -> None:
        self.stored = stored
        self.now = set(stored)
        self.by_contact: dict[str, set[str]] = {}
        for list_id, contact_id in stored:
            self.by_contact.setdefault(contact_id, set()).add(list_id)

    @classmethod
    async def load(cls, conn: AsyncConnection, evs: Sequence[StoredEvent], marks: _Marks) -> _Members:
        cols = list_members.c
        by_list: dict[str, set[str]] = {}
        erased: set[str] = set()
        for ev in evs:
            if ev.type in _LIST_TYPES:
                by_list.setdefault(event_of(ev).list_id, set()).update(event_of(ev).contact_ids)
            elif ev.type == "contact.erased":
                erased.add(event_of(ev).contact_id)
        stored: set[tuple[str, str]] = set()
        for list_id, contact_ids in by_list.items():
            rows = await _in_chunks(conn, select(cols.list_id, cols.contact_id).where(cols.list_id == list_id),
                                    cols.contact_id, sorted(contact_ids))
            stored.update((row[0], row[1]) for row in rows)
        rows = await _in_chunks(conn, select(cols.list_id, cols.contact_id), cols.contact_id, sorted(erased))
        stored.update((row[0], row[1]) for row in rows)
        return cls(stored)

    def apply(self, type_: str, list_id: str, contact_ids: Sequence[str], marks: _Marks, deltas: Deltas) -> None:
        for contact_id in dict.fromkeys(contact_ids):
            pair = (list_id, contact_id)
            if type_ == "list.contacts_added":
                if pair not in self.now and not marks.erased(contact_id):
                    self.now.add(pair)
                    self.by_contact.setdefault(contact_id, set()).add(list_id)
                    _move(deltas, list_id, LIST_MEMBERS, 1)
            elif pair in self.now:
                self._leave(pair, deltas)

    def leave_all(self, contact_id: str, deltas: Deltas) -> None:
        for list_id in sorted(self.by_contact.get(contact_id, ())):
            self._leave((list_id, contact_id), deltas)

    def _leave(self, pair: tuple[str, str], deltas: Deltas) -> None:
        self.now.discard(pair)
        self.by_contact.get(pair[1], set()).discard(pair[0])
        _move(deltas, pair[0], LIST_MEMBERS, -1)

    async def write(self, conn: AsyncConnection) -> None:
        await _MEMBER_INSERT.run(conn, sorted(self.now - self.stored))
        gone = sorted(self.stored - self.now)
        if gone:
            cols = list_members.c
            for start in range(0, len(gone), _CHUNK):
                await conn.execute(list_members.delete().where(
                    tuple_(cols.list_id, cols.contact_id).in_(gone[start:start + _CHUNK])))


class _Campaigns:
    """The status and deletion of the campaigns a batch touches."""

    def __init__(self, stored: dict[str, tuple[str, str, bool]]) -> None:
        self.stored = stored
        self.now = dict(stored)

    @classmethod
    async def load(cls, conn: AsyncConnection, evs: Sequence[StoredEvent]) -> _Campaigns:
        wanted = sorted({event_of(ev).campaign_id for ev in evs
                         if ev.type in _CAMPAIGN_TYPES and ev.type != "campaign.created"})
        cols = campaign_facts.c
        rows = await _in_chunks(conn, select(cols.campaign_id, cols.workspace_id, cols.status, cols.deleted),
                                cols.campaign_id, wanted)
        return cls({row[0]: (row[1], row[2], bool(row[3])) for row in rows})

    def apply(self, type_: str, data: Any, ws: str, deltas: Deltas) -> None:
        cid = data.campaign_id
        if type_ == "campaign.created":
            self.now[cid] = (ws, "draft", False)
            _move(deltas, ws, CAMPAIGNS, 1)
            _move(deltas, ws, status_name(CAMPAIGNS, "draft"), 1)
            return
        found = self.now.get(cid)
        if found is None:  # no such campaign: the read model's update changes no row either
            return
        owner, status, deleted = found
        if deleted:
            return
        if type_ == "campaign.deleted":
            self.now[cid] = (owner, status, True)
            _move(deltas, owner, CAMPAIGNS, -1)
            _move(deltas, owner, status_name(CAMPAIGNS, status), -1)
            return
        new = data.status if type_ == "campaign.launched" else _CAMPAIGN_STATUS[type_]
        if new != status:
            self.now[cid] = (owner, new, False)
            _move(deltas, owner, status_name(CAMPAIGNS, status), -1)
            _move(deltas, owner, status_name(CAMPAIGNS, new), 1)

    async def write(self, conn: AsyncConnection) -> None:
        changed = {cid: facts for cid, facts in self.now.items() if self.stored.get(cid) != facts}
        await _CAMPAIGN_INSERT.run(conn, [(cid, *facts) for cid, facts in changed.items() if cid not in self.stored])
        await _CAMPAIGN_UPDATE.run(conn, [(status, deleted, cid) for cid, (_, status, deleted) in changed.items()
                                          if cid in self.stored])


class _Suppressions:
    """Whether each (workspace, kind, value hash) a batch names is suppressed."""

    def __init__(self, stored: set[tuple[str, str, str]]) -> None:
        self.stored = stored
        self.now = set(stored)

    @classmethod
    async def load(cls, conn: AsyncConnection, evs: Sequence[StoredEvent]) -> _Suppressions:
        cols = suppression_facts.c
        stored: set[tuple[str, str, str]] = set()
        keys = sorted({(ev.workspace_id, event_of(ev).kind, event_of(ev).value_hash) for ev in evs
                       if ev.type in _SUPPRESSION_TYPES})
        for start in range(0, len(keys), _CHUNK):
            rows = (await conn.execute(select(cols.workspace_id, cols.kind, cols.value_hash).where(
                tuple_(cols.workspace_id, cols.kind, cols.value_hash).in_(keys[start:start + _CHUNK])))).all()
            stored.update((row[0], row[1], row[2]) for row in rows)
        return cls(stored)

    def apply(self, type_: str, key: tuple[str, str, str], deltas: Deltas) -> None:
        if type_ == "suppression.added" and key not in self.now:
            self.now.add(key)
            _move(deltas, key[0], SUPPRESSIONS, 1)
        elif type_ == "suppression.removed" and key in self.now:
            self.now.discard(key)
            _move(deltas, key[0], SUPPRESSIONS, -1)

    async def write(self, conn: AsyncConnection) -> None:
        await _SUPPRESSION_INSERT.run(conn, sorted(self.now - self.stored))
        gone = sorted(self.stored - self.now)
        cols = suppression_facts.c
        for start in range(0, len(gone), _CHUNK):
            await conn.execute(suppression_facts.delete().where(
                tuple_(cols.workspace_id, cols.kind, cols.value_hash).in_(gone[start:start + _CHUNK])))


async def _add(conn: AsyncConnection, deltas: Deltas) -> None:
    """Add the changes to the counters; delete the rows a decrease brought back to zero."""
    changes = [(owner, name, change) for (owner, name), change in sorted(deltas.items()) if change]
    if not changes:
        return
    insert = postgresql_insert if conn.dialect.name == "postgresql" else sqlite_insert
    stmt = insert(totals)
    await conn.execute(stmt.on_conflict_do_update(index_elements=["owner", "name"],
                                                  set_={"total": totals.c.total + stmt.excluded.total}),
                       [{"owner": owner, "name": name, "total": change} for owner, name, change in changes])
    lowered = [{"k_owner": owner, "k_name": name} for owner, name, change in changes if change < 0]
    if lowered:
        cols = totals.c
        await conn.execute(totals.delete().where(and_(cols.owner == bindparam("k_owner"),
                                                      cols.name == bindparam("k_name"), cols.total == 0)), lowered)
