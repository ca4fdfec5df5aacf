"""Stopping open enrollments, with their waiting email cancelled: one routine for every reason.

A campaign cancelled or deleted, a contact erased, unsubscribed, bounced or replied, a colleague
who replied: each stops enrollments the same way (``email.cancelled`` for the step waiting to
go, then ``enrollment.stopped``), so the log always says why nothing more went.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from engine.service.base import Reads
from events.catalog import email as email_events
from events.catalog import enrollment as enrollment_events
from events.registry import Event
from events.store import AppendBatch, EventStore
from projections import tables

OPEN = ("pending", "in_progress")


def cancel_pending(row: Any, reason: str = "removed") -> list[Event]:
    """An ``email.cancelled`` for the step of an enrollment row waiting to go, if any."""
    if row["next_send_at"] is None:
        return []
    step = int(row["current_step"]) + 1
    return [email_events.EmailCancelled(enrollment_id=row["id"], campaign_id=row["campaign_id"],
                                        contact_id=row["contact_id"], email_id=f"{row['id']}.{step}", step=step,
                                        reason=reason)]


class EnrollmentStops:
    """Appends the stop of open enrollments inside the caller's transaction."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.reads = Reads(store)

    async def stop_rows(self, conn: AsyncConnection, ws: str, rows: Sequence[Any], reason: str,
                        status: str = "stopped") -> None:
        """Stop these enrollment rows (read by the caller, open ones) for ``reason``."""
        batches = [AppendBatch(f"enrollment-{row['id']}", [
            *cancel_pending(row, reason), enrollment_events.EnrollmentStopped(
                enrollment_id=row["id"], campaign_id=row["campaign_id"], contact_id=row["contact_id"], reason=reason,
                status=status)]) for row in rows]
        await self.store.append_many(batches, workspace_id=ws, conn=conn)

    async def stop_campaign(self, conn: AsyncConnection, ws: str, campaign_id: str, reason: str) -> None:
        """Every open enrollment of a campaign (cancelled, completed, deleted)."""
        enrolled = tables.enrollments.c
        rows = await self.reads.all(select(tables.enrollments).where(
            enrolled.campaign_id == campaign_id, enrolled.status.in_(OPEN)), conn)
        await self.stop_rows(conn, ws, rows, reason)

    async def stop_contact(self, conn: AsyncConnection, ws: str, contact_id: str, reason: str,
                           status: str = "stopped") -> int:
        """Every open enrollment of a contact in the workspace; returns how many."""
        enrolled = tables.enrollments.c
        rows = await self.reads.all(select(tables.enrollments).where(
            enrolled.contact_id == contact_id, enrolled.workspace_id == ws, enrolled.status.in_(OPEN)), conn)
        await self.stop_rows(conn, ws, rows, reason, status=status)
        return len(rows)


__all__ = ["OPEN", "EnrollmentStops", "cancel_pending"]
