"""Sending read models: ``rm_emails`` (the send queue and every email's facts) and per-campaign stats.

One row per email (``<enrollment_id>.<step>``): scheduled rows form the queue the planner reads
(indexed on status and due time); claimed, sent, deferred, bounced... rows are what the sender
usage, the limits and the stats are counted from. Engagement flags are set once per email, so an
email opened twice counts once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Boolean, Column, Index, Integer, String, Table, Text, bindparam, case, update
from sqlalchemy.ext.asyncio import AsyncConnection

from events.registry import format_time
from events.store import StoredEvent
from projections.base import Projection, metadata

emails = Table(
    "rm_emails", metadata,
    Column("email_id", String(96), primary_key=True),
    Column("workspace_id", String(64), nullable=False),
    Column("campaign_id", String(64), nullable=False),
    Column("enrollment_id", String(64), nullable=False),
    Column("contact_id", String(64), nullable=False),
    Column("step", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("due_at", String(32), nullable=False),
    Column("priority", Integer, nullable=False),
    Column("seq", Integer, nullable=False),
    Column("sender_id", String(64)),
    Column("message_id", String(255)),
    Column("attempt", Integer, nullable=False),
    Column("lease_until", String(32)),
    Column("claimed_at", String(32)),
    Column("sent_at", String(32)),
    Column("last_code", Integer),
    Column("last_message", Text),
    Column("bounce_type", String(8)),
    Column("bounce_source", String(8)),
    Column("links", Text),
    Column("opened_at", String(32)),
    Column("clicked_at", String(32)),
    Column("replied_at", String(32)),
    Column("out_of_office", Boolean, nullable=False),
    Column("unsubscribed_at", String(32)),
    Column("complained_at", String(32)),
    Column("updated_at", String(32), nullable=False),
    Index("ix_rm_emails_status_due", "status", "due_at"),
    Index("ix_rm_emails_campaign", "campaign_id", "status"),
    Index("ix_rm_emails_sender_claimed", "sender_id", "claimed_at"),
    Index("ix_rm_emails_ws_sent", "workspace_id", "sent_at"),
    Index("ix_rm_emails_message_id", "message_id"),
)

# Every handler updates the rows of its own enrollment's emails, except the two contact events,
# which reach across streams and so keep their place in the log order.
send_queue = Projection("send_queue", 2, [emails], stream_local=True,
                        barriers=frozenset({"contact.erased", "contact.unsubscribed"}))
E = emails.c


def _ev(ev: StoredEvent) -> Any:
    """The domain event, typed loosely: each handler knows which event types it receives."""
    return ev.event


def _at(ev: StoredEvent) -> str:
    return format_time(ev.recorded_at)


async def _update(conn: AsyncConnection, rows: list[dict[str, Any]], **values: Any) -> None:
    if rows:
        await conn.execute(update(emails).where(E.email_id == bindparam("eid")).values(**values), rows)


@send_queue.on("email.scheduled")
async def _scheduled(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    await conn.execute(emails.insert(), [{
        "email_id": d.email_id, "workspace_id": e.workspace_id, "campaign_id": d.campaign_id,
        "enrollment_id": d.enrollment_id, "contact_id": d.contact_id, "step": d.step, "status": "scheduled",
        "due_at": format_time(d.due_at), "priority": d.priority, "seq": d.seq, "sender_id": d.sender_id,
        "message_id": None, "attempt": 0, "lease_until": None, "claimed_at": None, "sent_at": None,
        "last_code": None, "last_message": None, "bounce_type": None, "bounce_source": None, "links": None,
        "opened_at": None, "clicked_at": None, "replied_at": None, "out_of_office": False,
        "unsubscribed_at": None, "complained_at": None, "updated_at": _at(e)} for e in evs for d in [_ev(e)]])


@send_queue.on("email.claimed")
async def _claimed(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    await _update(conn, [{"eid": e.event.email_id, "snd": e.event.sender_id, "mid": e.event.message_id,  # type: ignore[attr-defined]
                          "lease": format_time(e.event.lease_until), "att": e.event.attempt,  # type: ignore[attr-defined]
                          "at": _at(e)} for e in evs],
                  status="claimed", sender_id=bindparam("snd"), message_id=bindparam("mid"),
                  lease_until=bindparam("lease"), attempt=bindparam("att"), claimed_at=bindparam("at"),
                  updated_at=bindparam("at"))


@send_queue.on("email.sent")
async def _sent(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    import json

    await _update(conn, [{"eid": e.event.email_id, "code": e.event.smtp_code, "at": _at(e),  # type: ignore[attr-defined]
                          "links": json.dumps(list(_ev(e).links)) if _ev(e).links is not None else None}
                         for e in evs],
                  status="sent", sent_at=bindparam("at"), last_code=bindparam("code"), links=bindparam("links"),
                  lease_until=None, updated_at=bindparam("at"))


@send_queue.on("email.deferred")
async def _deferred(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    await _update(conn, [{"eid": e.event.email_id, "code": e.event.code, "msg": e.event.message,  # type: ignore[attr-defined]
                          "due": format_time(e.event.retry_at), "at": _at(e)} for e in evs],  # type: ignore[attr-defined]
                  status="scheduled", due_at=bindparam("due"), last_code=bindparam("code"),
                  sender_id=case((E.step == 1, None), else_=E.sender_id),  # a first step may change sender
                  last_message=bindparam("msg"), lease_until=None, claimed_at=None, updated_at=bindparam("at"))


@send_queue.on("email.failed", "email.uncertain")
async def _failed(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    await _update(conn, [{"eid": e.event.email_id, "st": e.type.split(".")[1], "at": _at(e),  # type: ignore[attr-defined]
                          "msg": e.event.message} for e in evs],  # type: ignore[attr-defined]
                  status=bindparam("st"), last_message=bindparam("msg"), lease_until=None, updated_at=bindparam("at"))


@send_queue.on("email.cancelled")
async def _cancelled(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    await _update(conn, [{"eid": e.event.email_id, "at": _at(e)} for e in evs],  # type: ignore[attr-defined]
                  status="cancelled", lease_until=None, updated_at=bindparam("at"))


@send_queue.on("email.bounced")
async def _bounced(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    rows = [{"eid": e.event.email_id, "bt": e.event.bounce_type, "src": e.event.source,  # type: ignore[attr-defined]
             "code": e.event.code, "at": _at(e)} for e in evs]  # type: ignore[attr-defined]
    await _update(conn, rows, status="bounced", bounce_type=bindparam("bt"), bounce_source=bindparam("src"),
                  last_code=bindparam("code"), lease_until=None, updated_at=bindparam("at"))


def _flag(column: str) -> Any:
    async def handler(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
        for e in evs:
            email_id = e.event.email_id  # type: ignore[attr-defined]
            if getattr(e.event, "prefetch", False):
                continue  # a proxy fetched the pixel, not a person
            if getattr(e.event, "out_of_office", False):
                await conn.execute(update(emails).where(E.email_id == email_id).values(out_of_office=True))
                continue
            await conn.execute(update(emails).where(E.email_id == email_id, getattr(E, column).is_(None))
                               .values({column: _at(e)}))

    return handler


send_queue.on("email.opened")(_flag("opened_at"))
send_queue.on("email.clicked")(_flag("clicked_at"))
send_queue.on("email.replied")(_flag("replied_at"))
send_queue.on("email.complained")(_flag("complained_at"))


@send_queue.on("contact.erased")
async def _erased(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    """Rendered links may hold merge-tag values: they go with the person."""
    for e in evs:
        await conn.execute(update(emails).where(E.contact_id == _ev(e).contact_id).values(links=None))


@send_queue.on("contact.unsubscribed")
async def _unsubscribed(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    for e in evs:
        email_id = getattr(e.event, "email_id", None)
        if email_id:
            await conn.execute(update(emails).where(E.email_id == email_id, E.unsubscribed_at.is_(None))
                               .values(unsubscribed_at=_at(e)))
