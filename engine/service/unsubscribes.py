"""Unsubscribing: the one routine behind every channel (one-click link, ``mailto:``, complaint).

The tracking endpoints (``POST /u/{token}``) and the inbound poller (a ``mailto:`` request, a
spam complaint) must do exactly the same thing, so both call this service: ``contact.unsubscribed``,
the address suppressed (the contact as subject, so erasure shreds it), and every open enrollment
of the contact stopped as ``unsubscribed`` with its waiting email cancelled.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from engine.delivery.content.tokens import read_unsubscribe
from engine.errors import NotFound
from engine.service.base import Reads
from engine.service.stops import EnrollmentStops
from engine.service.suppressions import Suppressions
from events.catalog import contact as contact_events
from events.store import AppendBatch, EventStore
from events.vault import Vault
from projections import tables
from projections.sending import emails

E = emails.c


class Unsubscribes:
    """Unsubscribes a contact inside the caller's transaction; each part is skipped when already true."""

    def __init__(self, store: EventStore, vault: Vault, stops: EnrollmentStops, suppressions: Suppressions) -> None:
        self.store = store
        self.vault = vault
        self.stops = stops
        self.suppressions = suppressions
        self.reads = Reads(store)

    async def token_contact(self, conn: AsyncConnection | None, token: str) -> tuple[Any, Any]:
        found = read_unsubscribe(self.vault.token_key, token)
        if found is None:
            raise NotFound("link", token)
        c = tables.contacts.c
        row = await self.reads.one(select(tables.contacts).where(c.id == found.contact_id,
                                                       c.workspace_id == found.workspace_id),
                              "contact", found.contact_id, conn)
        return found, row


    async def unsubscribe_by_token(self, conn: AsyncConnection, token: str, *, reason: str = "one_click",
                                   actor: str = "system:tracking", workspace_id: str | None = None) -> bool:
        """The one unsubscribe routine behind every channel that carries our unsubscribe token.

        The one-click POST and a ``mailto:`` request read by the inbound poller must do exactly the
        same thing, so both come here, inside the caller's transaction (the poller records the
        message as seen in the same one). ``reason`` and ``actor`` say which channel it was.
        ``workspace_id``, when given, must be the token's: a mailbox of one workspace never acts
        on another's contact (NotFound, as for a forged token). Returns ``True`` when anything
        was appended; NotFound for a bad token or an unknown contact.
        """
        found, contact = await self.token_contact(conn, token)
        if workspace_id is not None and found.workspace_id != workspace_id:
            raise NotFound("link", token)
        if contact["erased"]:
            return False
        ws, cid = found.workspace_id, found.contact_id
        email_row = (await conn.execute(select(E.campaign_id).where(
            E.email_id == found.email_id, E.contact_id == cid))).first()
        batches: list[AppendBatch] = []
        if not contact["unsubscribed"]:
            batches.append(AppendBatch(f"contact-{cid}", [contact_events.ContactUnsubscribed(
                contact_id=cid, reason=reason, campaign_id=email_row[0] if email_row else None,
                email_id=found.email_id)]))
        address = contact["email"]
        if address and not await self.suppressions.suppressed(ws, [address], conn):
            batches.append(AppendBatch(f"suppressions-{ws}", [self.suppressions.event(
                "email", address, "unsubscribed", contact_id=cid)]))
        await self.store.append_many(batches, workspace_id=ws, metadata={"actor": actor}, conn=conn)
        stopped = await self.stops.stop_contact(conn, ws, cid, "unsubscribed", status="unsubscribed")
        return bool(batches or stopped)


    async def unsubscribe_contact(self, conn: AsyncConnection, ws: str, contact_id: str, *, reason: str,
                                  campaign_id: str | None = None, email_id: str | None = None) -> bool:
        """Unsubscribe once: the event, every open enrollment stopped, the address suppressed."""
        contact = (await conn.execute(select(tables.contacts).where(
            tables.contacts.c.id == contact_id))).mappings().first()
        if contact is None or contact["erased"] or contact["unsubscribed"]:
            return False
        await self.store.append(f"contact-{contact_id}", [contact_events.ContactUnsubscribed(
            contact_id=contact_id, reason=reason, campaign_id=campaign_id, email_id=email_id)], None,
            workspace_id=ws, conn=conn)
        await self.stops.stop_contact(conn, ws, contact_id, "unsubscribed", status="unsubscribed")
        await self.store.append(f"suppressions-{ws}", [self.suppressions.event(
            "email", contact["email"], "unsubscribed", contact_id=contact_id)], None, workspace_id=ws, conn=conn)
        return True



__all__ = ["Unsubscribes"]
