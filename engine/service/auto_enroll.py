"""``settings.auto_enroll``: active campaigns take contacts as contact commands bring them in.

A campaign's auto-enrol selection is the same as an enroll request's: members of one of its
``list_ids`` (when it has any) that match its ``filter`` (when it has one); with neither, nobody.
A contact command (create, update, import, add to a list) reads, in its own transaction, which
of the contacts it touches each active campaign selects before it appends
(:meth:`AutoEnroll.before`), and after its appends enrolls those that entered a selection
(:meth:`AutoEnroll.enroll_entrants`) through the campaign service's one enroll path, so the
skip rules and events are a manual enroll's. Entering, not being in, is what counts: a contact
that matched already is not enrolled (or skipped again) by each later edit, and launching a
campaign does not back-fill the contacts it already selects.

Everything is set-based: one read of the active campaigns, one of the touched contacts and one
of their memberships before, the same after, then one enroll per campaign with entrants,
whatever the number of contacts (an import chunk is one pass).
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from engine.domain import enrollment as ed
from engine.domain.definition import definition_from_json
from engine.service.base import Reads
from engine.service.campaigns import matches_row
from events.store import EventStore
from projections import tables as t

CHUNK = 400  # ids per IN (...) clause, under SQLite's bound-parameter limit with room to spare


class EnrollInTransaction(Protocol):
    """The campaign service's ``enroll_contacts``: enroll contacts inside the caller's transaction."""

    def __call__(self, conn: AsyncConnection, ws: str, cid: str, contact_ids: list[str], *,
                 batch_number: int | None = None, priority: int = 0) -> Awaitable[ed.EnrollDecision]: ...


@dataclass(frozen=True, slots=True)
class Rule:
    """One active campaign's auto-enrol selection."""

    campaign_id: str
    list_ids: frozenset[str]
    filter: dict[str, Any] | None

    def selects(self, contact: Any, lists: set[str]) -> bool:
        """Whether a contact row, member of ``lists``, is in this campaign's selection."""
        if not self.list_ids and self.filter is None:
            return False
        if self.list_ids and not (self.list_ids & lists):
            return False
        return self.filter is None or matches_row(self.filter, contact)


@dataclass(slots=True)
class Snapshot:
    """What a command's contacts were before it: which campaign selected which of them."""

    contact_ids: list[str]
    rules: list[Rule]
    selected: dict[str, set[str]] = field(default_factory=dict)  # campaign id -> contact ids


@dataclass(frozen=True, slots=True)
class Outcome:
    """What auto-enrolment did after one command: enrollments added and skips by reason."""

    added: int = 0
    skipped: dict[str, int] = field(default_factory=dict)


class AutoEnroll:
    """Finds the contacts that entered an active campaign's auto-enrol selection and enrolls them."""

    def __init__(self, store: EventStore, *, enroll: EnrollInTransaction) -> None:
        self.store = store
        self.enroll = enroll
        self.reads = Reads(store)

    async def before(self, conn: AsyncConnection, ws: str, contact_ids: Sequence[str]) -> Snapshot:
        """Read, before a command appends, which of its contacts each active campaign selects.

        ``contact_ids`` are every contact the command touches, in its order, the ids of those it
        is about to create included: they do not exist yet, so no campaign selects them before."""
        ids = list(dict.fromkeys(contact_ids))
        rules = await self._rules(conn, ws)
        snapshot = Snapshot(ids, rules)
        if rules:
            snapshot.selected = await self._selected(conn, ws, ids, rules)
        return snapshot

    async def enroll_entrants(self, conn: AsyncConnection, ws: str, before: Snapshot) -> Outcome:
        """After the command's appends, in its transaction: enroll, campaign by campaign, the
        contacts of ``before`` that are now selected and were not, in the order the command
        named them."""
        if not before.rules:
            return Outcome()
        ids = before.contact_ids
        after = await self._selected(conn, ws, ids, before.rules)
        added = 0
        skipped: dict[str, int] = {}
        for rule in before.rules:
            was = before.selected.get(rule.campaign_id, set())
            now = after.get(rule.campaign_id, set())
            entrants = [cid for cid in ids if cid in now and cid not in was]
            if not entrants:
                continue
            decision = await self.enroll(conn, ws, rule.campaign_id, entrants)
            added += decision.added
            for reason, count in decision.skipped.items():
                skipped[reason] = skipped.get(reason, 0) + count
        return Outcome(added, skipped)

    async def _rules(self, conn: AsyncConnection, ws: str) -> list[Rule]:
        """The workspace's active campaigns that have ``settings.auto_enroll``."""
        c = t.campaigns.c
        rows = await self.reads.all(select(c.id, c.definition).where(
            c.workspace_id == ws, c.status == "active", c.deleted.is_(False)).order_by(c.created_at, c.id), conn)
        rules = []
        for row in rows:
            auto = definition_from_json(row["definition"]).settings.auto_enroll
            if auto is not None:
                rules.append(Rule(row["id"], frozenset(auto.list_ids), auto.filter))
        return rules

    async def _selected(self, conn: AsyncConnection, ws: str, ids: list[str], rules: list[Rule]
                        ) -> dict[str, set[str]]:
        """Campaign id -> the contacts among ``ids`` its rule selects now (read in ``conn``)."""
        c, lm = t.contacts.c, t.list_members.c
        wanted_lists = sorted(set().union(*(rule.list_ids for rule in rules)))
        selected: dict[str, set[str]] = {rule.campaign_id: set() for rule in rules}
        for start in range(0, len(ids), CHUNK):
            part = ids[start:start + CHUNK]
            contacts = await self.reads.all(select(t.contacts).where(
                c.workspace_id == ws, c.erased.is_(False), c.id.in_(part)), conn)
            memberships: dict[str, set[str]] = {}
            if wanted_lists:
                for row in await self.reads.all(select(lm.list_id, lm.contact_id).where(
                        lm.contact_id.in_(part), lm.list_id.in_(wanted_lists)), conn):
                    memberships.setdefault(row["contact_id"], set()).add(row["list_id"])
            for contact in contacts:
                for rule in rules:
                    if rule.selects(contact, memberships.get(contact["id"], set())):
                        selected[rule.campaign_id].add(contact["id"])
        return selected


__all__ = ["AutoEnroll", "EnrollInTransaction", "Outcome", "Rule", "Snapshot"]
