"""Engagement counters: every open and every click, beside ``rm_emails``' first-time flags.

``rm_emails`` counts an email once per metric (first open, first click), which is what the rates
use. Two figures need every event instead: the total of opens (``engagement.opens_total``) and
the clicks per link (``stats/links``). They live here, in their own projection, so that the
send queue's table and handlers stay as they are. One row per email (opens) and per email and
link (clicks) keeps each handler on its own email's rows (stream-local), and a campaign's stats
read a grouped sum over an index on ``campaign_id``, never the log.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Column, Index, Integer, String, Table, Text, bindparam, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from events.store import StoredEvent
from projections.base import Projection, metadata

opens = Table(
    "rm_email_opens", metadata,
    Column("email_id", String(96), primary_key=True),
    Column("workspace_id", String(64), nullable=False),
    Column("campaign_id", String(64), nullable=False),
    Column("step", Integer, nullable=False),
    Column("opens", Integer, nullable=False),
    Index("ix_rm_email_opens_campaign", "campaign_id"),
)

link_clicks = Table(
    "rm_link_clicks", metadata,
    Column("email_id", String(96), primary_key=True),
    Column("link_index", Integer, primary_key=True),
    Column("workspace_id", String(64), nullable=False),
    Column("campaign_id", String(64), nullable=False),
    Column("contact_id", String(64), nullable=False),
    Column("step", Integer, nullable=False),
    # The rendered link: it may carry merge-tag values, so it is cleared when the contact is erased.
    Column("url", Text),
    Column("clicks", Integer, nullable=False),
    Index("ix_rm_link_clicks_campaign", "campaign_id"),
    Index("ix_rm_link_clicks_contact", "contact_id"),
)

# Version 2: a scanner's click (``prefetch``) is no longer counted.
engagement = Projection("engagement", 2, [opens, link_clicks], stream_local=True,
                        barriers=frozenset({"contact.erased"}))


def _upsert(conn: AsyncConnection, table: Table, counter: str) -> Any:
    """INSERT of a first count, adding to the stored count when the row exists (both dialects
    spell it ``ON CONFLICT ... DO UPDATE``)."""
    insert = postgresql_insert if conn.dialect.name == "postgresql" else sqlite_insert
    stmt = insert(table)
    keys = [c.name for c in table.primary_key.columns]
    return stmt.on_conflict_do_update(index_elements=keys,
                                      set_={counter: getattr(table.c, counter) + getattr(stmt.excluded, counter)})


@engagement.on("email.opened")
async def _opened(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    """Counts every open a person made: a proxy's prefetch of the pixel is not one."""
    rows: dict[str, dict[str, Any]] = {}
    for e in evs:
        d: Any = e.event
        if d.prefetch:
            continue
        row = rows.setdefault(d.email_id, {"email_id": d.email_id, "workspace_id": e.workspace_id,
                                           "campaign_id": d.campaign_id, "step": d.step, "opens": 0})
        row["opens"] += 1
    if rows:
        await conn.execute(_upsert(conn, opens, "opens"), list(rows.values()))


@engagement.on("email.clicked")
async def _clicked(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    """Counts every click a person made per link of an email; the first click's URL names the link.

    A link scanner's or a script's click (``prefetch``) is in the log for the activity, but it is
    no reader's interest in the link, so ``stats/links`` leaves it out.
    """
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for e in evs:
        d: Any = e.event
        if d.prefetch:
            continue
        row = rows.setdefault((d.email_id, d.link_index), {
            "email_id": d.email_id, "link_index": d.link_index, "workspace_id": e.workspace_id,
            "campaign_id": d.campaign_id, "contact_id": d.contact_id, "step": d.step, "url": d.url, "clicks": 0})
        row["clicks"] += 1
    if rows:
        await conn.execute(_upsert(conn, link_clicks, "clicks"), list(rows.values()))


@engagement.on("contact.erased")
async def _erased(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    """A rendered link may hold the person's data: it goes with them; the counts stay."""
    stmt = update(link_clicks).where(link_clicks.c.contact_id == bindparam("p_contact")).values(url=None)
    await conn.execute(stmt, [{"p_contact": e.event.contact_id} for e in evs])  # type: ignore[attr-defined]
