"""Suppressions as the other services need them: is an address or domain suppressed, and the event
that suppresses one. Enrollment, sending, tracking, inbound and management all ask."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from engine.service.base import Reads
from events.catalog import contact as contact_events
from events.registry import Event
from events.store import EventStore
from events.vault import Vault
from projections import tables

LOOKUP_CHUNK = 400  # hashes per IN (...) list


def suppression_subject(value_hash: str) -> str:
    """The vault subject of an email suppression: erasing the contact erases it too."""
    return f"sup_{value_hash[:24]}"


class Suppressions:
    """Reads the workspace's suppression list (by keyed hash) and builds ``suppression.added``."""

    def __init__(self, store: EventStore, vault: Vault) -> None:
        self.vault = vault
        self.reads = Reads(store)

    async def suppressed(self, ws: str, emails_and_domains: list[str], conn: Any = None) -> set[str]:
        """The hashes among those given that are suppressed."""
        columns = tables.suppressions.c
        hashes = list({self.vault.lookup_hash(value) for value in emails_and_domains})
        found: set[str] = set()
        for start in range(0, len(hashes), LOOKUP_CHUNK):
            rows = await self.reads.all(select(columns.value_hash).where(
                columns.workspace_id == ws, columns.value_hash.in_(hashes[start:start + LOOKUP_CHUNK])), conn)
            found.update(row["value_hash"] for row in rows)
        return found

    def event(self, kind: str, value: str, reason: str, contact_id: str | None = None) -> Event:
        """``suppression.added`` for ``value``; its subject is the contact when known, so erasing
        the contact shreds the suppressed address too."""
        value_hash = self.vault.lookup_hash(value)
        subject = contact_id or suppression_subject(value_hash)
        return contact_events.SuppressionAdded(subject_id=subject, kind=kind, value=value, value_hash=value_hash,
                                               reason=reason)


__all__ = ["Suppressions", "suppression_subject"]
