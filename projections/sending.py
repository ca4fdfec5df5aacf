"""Sending read models: ``rm_emails`` (the send queue and every email's facts) and per-campaign stats.

One row per email (``<enrollment_id>.<step>``): scheduled rows form the queue the planner reads
(indexed on status and due time); claimed, sent, deferred, bounced... rows are what the sender
usage, the limits and the stats are counted from. Engagement flags are set once per email, so an
email opened twice counts once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Boolean, Column, Index, Integer, String, Table, Text, bindparam, case, func, update
from sqlalchemy.ext.asyncio import AsyncConnection

from events.store import StoredEvent
from projections.base import Handler, ReshapingProjection, Statement, TimeTexts, insert_statement, lit, metadata

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
    Column("variant", String(32)),  # the step's A/B variant sent (or refused); null without variants
    Index("ix_rm_emails_status_due", "status", "due_at"),
    # The tick's reads: per (campaign, pinned sender), the due emails and the earliest later one.
    Index("ix_rm_emails_queue", "campaign_id", "status", "sender_id", "due_at"),
    Index("ix_rm_emails_sender_claimed", "sender_id", "claimed_at"),
    Index("ix_rm_emails_ws_sent", "workspace_id", "sent_at"),
    Index("ix_rm_emails_message_id", "message_id"),
)

# Every handler updates the rows of its own enrollment's emails, except the two contact events,
# which reach across streams and so keep their place in the log order. Handlers find rows by
# email_id (the primary key) or contact_id (not indexed): the indexes serve the readers.
class _ReshapingQueue(ReshapingProjection):
    """The send queue rebuilt on a database made by older code recreates ``rm_emails`` (a new column).

    A rebuild on SQLite has dropped the deferred indexes before this clear and creates them after
    the load; a table recreated here comes with its indexes, so they are dropped again to keep
    that plan (and its one sort per index) true.
    """

    async def clear(self, conn: AsyncConnection) -> None:
        await super().clear(conn)
        if self.defer_indexes and conn.dialect.name == "sqlite":
            for table in self.tables:
                for index in table.indexes:
                    if not index.unique:
                        await conn.run_sync(index.drop, checkfirst=True)


# Version 5: emails record their A/B variant (``variant``).
send_queue = _ReshapingQueue("send_queue", 5, [emails], stream_local=True,
                             barriers=frozenset({"contact.erased", "contact.unsubscribed"}), defer_indexes=True)
E = emails.c


def _ev(ev: StoredEvent) -> Any:
    """The domain event, typed loosely: each handler knows which event types it receives."""
    return ev.event


def _update(params: Sequence[str], **values: Any) -> Statement:
    """UPDATE of one email (bound last, as ``p_eid``): ``values`` are :func:`lit` constants or
    ``bindparam("p_...")``; ``params`` lists the bound ones in the table's column order."""
    return Statement(lambda: update(emails).where(E.email_id == bindparam("p_eid")).values(**values),
                     [*params, "p_eid"])


_SCHEDULE = insert_statement(
    emails, status="scheduled", message_id=None, attempt=0, lease_until=None, claimed_at=None, sent_at=None,
    last_code=None, last_message=None, bounce_type=None, bounce_source=None, links=None, opened_at=None,
    clicked_at=None, replied_at=None, out_of_office=False, unsubscribed_at=None, complained_at=None, variant=None)


@send_queue.on("email.scheduled")
async def _scheduled(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    texts = TimeTexts()
    await _SCHEDULE.run(conn, [
        (d.email_id, e.workspace_id, d.campaign_id, d.enrollment_id, d.contact_id, d.step, texts[d.due_at],
         d.priority, d.seq, d.sender_id, texts[e.recorded_at]) for e in evs for d in [_ev(e)]])


_CLAIM = _update(["p_sender", "p_mid", "p_attempt", "p_lease", "p_claimed", "p_at"],
                 status=lit("claimed"), sender_id=bindparam("p_sender"), message_id=bindparam("p_mid"),
                 attempt=bindparam("p_attempt"), lease_until=bindparam("p_lease"), claimed_at=bindparam("p_claimed"),
                 updated_at=bindparam("p_at"))


@send_queue.on("email.claimed")
async def _claimed(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    texts = TimeTexts()
    rows = []
    for e in evs:
        d = _ev(e)
        at = texts[e.recorded_at]
        rows.append((d.sender_id, d.message_id, d.attempt, texts[d.lease_until], at, at, d.email_id))
    await _CLAIM.run(conn, rows)


_SENT = _update(["p_at", "p_code", "p_links", "p_updated", "p_variant"],
                status=lit("sent"), sent_at=bindparam("p_at"), last_code=bindparam("p_code"),
                links=bindparam("p_links"), lease_until=lit(None), updated_at=bindparam("p_updated"),
                variant=bindparam("p_variant"))


@send_queue.on("email.sent")
async def _sent(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    texts = TimeTexts()
    rows = []
    for e in evs:
        d = _ev(e)
        at = texts[e.recorded_at]
        rows.append((at, d.smtp_code, json.dumps(list(d.links)) if d.links is not None else None, at, d.variant,
                     d.email_id))
    await _SENT.run(conn, rows)


_DEFER = _update(["p_due", "p_code", "p_msg", "p_at"],
                 status=lit("scheduled"), due_at=bindparam("p_due"), last_code=bindparam("p_code"),
                 sender_id=case((E.step == lit(1), lit(None)), else_=E.sender_id),  # a first step may change sender
                 last_message=bindparam("p_msg"), lease_until=lit(None), claimed_at=lit(None),
                 updated_at=bindparam("p_at"))


@send_queue.on("email.deferred")
async def _deferred(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    texts = TimeTexts()
    await _DEFER.run(conn, [(texts[d.retry_at], d.code, d.message, texts[e.recorded_at], d.email_id)
                            for e in evs for d in [_ev(e)]])


_RELEASE = _update(["p_at"], status=lit("scheduled"),
                   sender_id=case((E.step == lit(1), lit(None)), else_=E.sender_id),  # as after a deferral
                   attempt=case((E.attempt > lit(0), E.attempt - lit(1)), else_=E.attempt),  # no attempt made
                   lease_until=lit(None), claimed_at=lit(None), updated_at=bindparam("p_at"))


@send_queue.on("email.released")
async def _released(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    texts = TimeTexts()
    await _RELEASE.run(conn, [(texts[e.recorded_at], _ev(e).email_id) for e in evs])


_FAIL = _update(["p_status", "p_msg", "p_at"], status=bindparam("p_status"), last_message=bindparam("p_msg"),
                lease_until=lit(None), updated_at=bindparam("p_at"))


@send_queue.on("email.failed", "email.uncertain")
async def _failed(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    texts = TimeTexts()
    await _FAIL.run(conn, [(e.type.split(".")[1], _ev(e).message, texts[e.recorded_at], _ev(e).email_id)
                           for e in evs])


# A poison message set aside: never sent, never claimed again (the planner reads only "scheduled").
_QUARANTINE = _update(["p_msg", "p_at"], status=lit("quarantined"), last_message=bindparam("p_msg"),
                      lease_until=lit(None), updated_at=bindparam("p_at"))


@send_queue.on("email.quarantined")
async def _quarantined(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    texts = TimeTexts()
    await _QUARANTINE.run(conn, [(_ev(e).reason, texts[e.recorded_at], _ev(e).email_id) for e in evs])


_CANCEL = _update(["p_at"], status=lit("cancelled"), lease_until=lit(None), updated_at=bindparam("p_at"))


@send_queue.on("email.cancelled")
async def _cancelled(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    texts = TimeTexts()
    await _CANCEL.run(conn, [(texts[e.recorded_at], _ev(e).email_id) for e in evs])


_BOUNCE = _update(["p_code", "p_type", "p_source", "p_at", "p_variant"],
                  status=lit("bounced"), last_code=bindparam("p_code"), bounce_type=bindparam("p_type"),
                  bounce_source=bindparam("p_source"), lease_until=lit(None), updated_at=bindparam("p_at"),
                  # a DSN names no variant: the one recorded when the email was sent stays
                  variant=func.coalesce(bindparam("p_variant", type_=String), E.variant))


@send_queue.on("email.bounced")
async def _bounced(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    texts = TimeTexts()
    await _BOUNCE.run(conn, [(d.code, d.bounce_type, d.source, texts[e.recorded_at], d.variant, d.email_id)
                             for e in evs for d in [_ev(e)]])


_OUT_OF_OFFICE = _update([], out_of_office=lit(True))


def _flag(column: str) -> Handler:
    """Sets ``column`` once per email (the first time wins). An out-of-office reply only sets
    ``out_of_office``: the two statements touch different columns, so running all flags, then all
    out-of-office marks, gives what one statement per event in log order gives."""
    first = Statement(lambda: update(emails).where(E.email_id == bindparam("p_eid"), getattr(E, column).is_(None))
                      .values({column: bindparam("p_at")}), ["p_at", "p_eid"])

    async def handler(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
        texts = TimeTexts()
        flags: list[tuple[Any, ...]] = []
        away: list[tuple[Any, ...]] = []
        for e in evs:
            d = _ev(e)
            if getattr(d, "prefetch", False):
                continue  # a proxy fetched the pixel, not a person
            if getattr(d, "out_of_office", False):
                away.append((d.email_id,))
            else:
                flags.append((texts[e.recorded_at], d.email_id))
        await first.run(conn, flags)
        await _OUT_OF_OFFICE.run(conn, away)

    return handler


send_queue.on("email.opened")(_flag("opened_at"))
send_queue.on("email.clicked")(_flag("clicked_at"))
send_queue.on("email.replied")(_flag("replied_at"))
send_queue.on("email.complained")(_flag("complained_at"))

_ERASE_LINKS = Statement(lambda: update(emails).where(E.contact_id == bindparam("p_contact")).values(links=lit(None)),
                         ["p_contact"])


@send_queue.on("contact.erased")
async def _erased(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    """Rendered links may hold merge-tag values: they go with the person."""
    await _ERASE_LINKS.run(conn, [(_ev(e).contact_id,) for e in evs])


_UNSUBSCRIBED = Statement(lambda: update(emails).where(E.email_id == bindparam("p_eid"), E.unsubscribed_at.is_(None))
                          .values(unsubscribed_at=bindparam("p_at")), ["p_at", "p_eid"])


@send_queue.on("contact.unsubscribed")
async def _unsubscribed(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    texts = TimeTexts()
    rows = []
    for e in evs:
        email_id = getattr(e.event, "email_id", None)
        if email_id:
            rows.append((texts[e.recorded_at], email_id))
    await _UNSUBSCRIBED.run(conn, rows)
