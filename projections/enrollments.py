"""The enrollments read model: each contact's progress through a campaign, and skips."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, update
from sqlalchemy.ext.asyncio import AsyncConnection

from events.store import StoredEvent
from projections import tables
from projections.base import (
    Projection,
    Statement,
    TimeTexts,
    event_of,
    insert_statement,
    lit,
)

# -- enrollments and skips --------------------------------------------------------------------
# Handlers find enrollments by id and skips by position (the primary keys): the indexes serve readers.
# Version 2: a deferral shows its retry time as the enrollment's next_send_at.
enrollments = Projection("enrollments", 2, [tables.enrollments, tables.skips], stream_local=True, defer_indexes=True)
_E = tables.enrollments


_ENR_INSERT = insert_statement(_E, status="pending", current_step=0, sender_id=None, stop_reason=None)
_ENR_SCHEDULE = Statement(lambda: update(_E).where(_E.c.id == bindparam("p_id")).values(
    next_send_at=bindparam("p_next"), updated_at=bindparam("p_at")), ["p_next", "p_at", "p_id"])


@enrollments.on("enrollment.created", "email.scheduled")
async def _enr_created_or_scheduled(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    """Both types in one run, because the engine appends each new enrollment with its first email.

    An ``email.scheduled`` whose enrollment was created earlier in the run is folded into the new
    row: its UPDATE would set ``next_send_at`` and ``updated_at`` of the row just inserted, so the
    row is inserted with those values (one INSERT per enrollment instead of an INSERT and an
    UPDATE). The other ``email.scheduled`` run first, in log order: no row they can reach is
    inserted by this run before them, so running them before the INSERTs changes nothing.
    """
    texts = TimeTexts()
    created: list[list[Any]] = []  # [event, workspace_id, enrolled_at, next_send_at, updated_at]
    by_id: dict[str, list[Any]] = {}
    scheduled: list[tuple[Any, ...]] = []
    for e in evs:
        d: Any = e.event
        if e.type == "enrollment.created":
            at = texts[e.recorded_at]
            row = [d, e.workspace_id, at, None, at]
            created.append(row)
            by_id[d.enrollment_id] = row
        else:
            new = by_id.get(d.enrollment_id)
            if new is None:
                scheduled.append((texts[d.due_at], texts[e.recorded_at], d.enrollment_id))
            else:
                new[3] = texts[d.due_at]
                new[4] = texts[e.recorded_at]
    await _ENR_SCHEDULE.run(conn, scheduled)
    await _ENR_INSERT.run(conn, [(d.enrollment_id, ws, d.campaign_id, d.contact_id, due, d.batch_number, d.priority,
                                  d.seq, enrolled, updated) for d, ws, enrolled, due, updated in created])


_SKIP_INSERT = insert_statement(tables.skips)
_ENR_SKIP = Statement(lambda: update(_E).where(_E.c.id == bindparam("p_id")).values(
    status=lit("skipped"), next_send_at=lit(None), stop_reason=bindparam("p_reason"), updated_at=bindparam("p_at")),
    ["p_reason", "p_at", "p_id"])


@enrollments.on("enrollment.skipped")
async def _enr_skipped(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    texts = TimeTexts()
    await _SKIP_INSERT.run(conn, [(e.position, e.workspace_id, d.campaign_id, d.contact_id, d.reason,
                                   texts[e.recorded_at]) for e in evs for d in [event_of(e)]])
    await _ENR_SKIP.run(conn, [(d.reason, texts[e.recorded_at], d.enrollment_id)
                               for e in evs for d in [event_of(e)] if d.enrollment_id])


_ENR_SENT = Statement(lambda: update(_E).where(_E.c.id == bindparam("p_id")).values(
    status=lit("in_progress"), current_step=bindparam("p_step"), next_send_at=lit(None),
    sender_id=bindparam("p_sender"), updated_at=bindparam("p_at")), ["p_step", "p_sender", "p_at", "p_id"])


@enrollments.on("email.deferred")
async def _enr_deferred(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    """The email waits for its retry: the enrollment says when (an outage is visible, not hidden)."""
    texts = TimeTexts()
    await _ENR_SCHEDULE.run(conn, [(texts[d.retry_at], texts[e.recorded_at], d.enrollment_id)
                                   for e in evs for d in [event_of(e)]])


@enrollments.on("email.sent")
async def _enr_sent(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    texts = TimeTexts()
    await _ENR_SENT.run(conn, [(d.step, d.sender_id, texts[e.recorded_at], d.enrollment_id)
                               for e in evs for d in [event_of(e)]])


_FINAL = {"enrollment.completed": "completed", "enrollment.removed": "stopped"}
_ENR_STOP = Statement(lambda: update(_E).where(_E.c.id == bindparam("p_id")).values(
    status=bindparam("p_status"), next_send_at=lit(None), stop_reason=bindparam("p_reason"),
    updated_at=bindparam("p_at")), ["p_status", "p_reason", "p_at", "p_id"])


@enrollments.on("enrollment.completed", "enrollment.removed")
async def _enr_final(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    texts = TimeTexts()
    await _ENR_STOP.run(conn, [(_FINAL[e.type], "removed" if e.type == "enrollment.removed" else None,
                                texts[e.recorded_at], event_of(e).enrollment_id) for e in evs])


@enrollments.on("enrollment.stopped")
async def _enr_stopped(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    texts = TimeTexts()
    await _ENR_STOP.run(conn, [(d.status, d.reason, texts[e.recorded_at], d.enrollment_id)
                               for e in evs for d in [event_of(e)]])
