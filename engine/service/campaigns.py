"""Campaigns and enrollments: lifecycle commands, enrollment with skip reasons, dispatch."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, cast, exists, false, func, or_, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection

from engine.clock import Clock
from engine.domain import campaign as cd
from engine.domain import enrollment as ed
from engine.domain import models as m
from engine.domain.definition import CampaignDefinition
from engine.errors import NotFound, PlanLimitReached, ValidationFailed
from engine.service import views
from engine.service.base import Page, Reads, new_id, retry
from engine.service.cursors import Listing, SortKey
from engine.service.signals import WorkSignal
from engine.service.stats import StatsService
from engine.service.stops import EnrollmentStops, cancel_pending
from engine.service.suppressions import Suppressions
from engine.service.usage import UsageCounts
from events.catalog import campaign as campaign_events
from events.catalog import enrollment as en
from events.store import AppendBatch, EventStore
from events.vault import Vault
from projections import campaign_stats as cs
from projections import listing_totals as totals
from projections import tables as t

SORTS = {"created_at", "updated_at", "name", "status"}
FACTS_CHUNK = 5000  # contacts per look-up of their facts: well under the bound-parameter limits (SQLite, asyncpg)
ENROLL_CHUNK = 5000  # contacts per enroll transaction: its multi-row inserts, without holding the log's lock long
FILTER_BATCH = 5000  # contacts read at a time when a filter selects from the whole workspace


def _definition(body: m.CampaignIn) -> dict[str, Any]:
    """The JSON a create body is stored as (a workflow is stored as steps too)."""
    data = body.model_dump(by_alias=True)
    data["schedule"] = m.dump_schedule(body.schedule)
    if body.workflow is not None:
        data["steps"] = [m.StepIn.model_validate(s).model_dump() for s in cd.compile_workflow(data["workflow"])]
    return data


def matches_row(tree: dict[str, Any], row: Any) -> bool:
    """Whether a contact row matches a filter rule tree (custom fields read from their JSON)."""
    contact = dict(row)
    contact["custom_fields"] = json.loads(row["custom_fields"]) if row["custom_fields"] else {}
    return ed.matches(tree, contact)


def _selection(data: m.EnrollIn) -> list[str]:
    """How an enrollment request chose its contacts, echoed in the answer so that a client can
    tell a narrowed list from a union: the enrolled contacts are the union of these parts, where
    ``list_ids_matching_filter`` is the members of the lists that match the filter."""
    parts = []
    if data.contact_ids is not None:
        parts.append("contact_ids")
    if data.list_ids is not None and data.filter is not None:
        parts.append("list_ids_matching_filter")
    elif data.list_ids is not None:
        parts.append("list_ids")
    elif data.filter is not None:
        parts.append("filter")
    return parts


class CampaignService:
    """Campaigns (create, edit, lifecycle, copy, stats) and their enrollments (enroll, remove, dispatch)."""

    def __init__(self, store: EventStore, clock: Clock, vault: Vault, *, stats: StatsService,
                 suppressions: Suppressions, stops: EnrollmentStops, usage: UsageCounts, work: WorkSignal) -> None:
        self.store = store
        self.clock = clock
        self.vault = vault
        self.stats = stats
        self.suppressions = suppressions
        self.stops = stops
        self.usage = usage
        self.work = work
        self.reads = Reads(store)

    # -- create, read, update -------------------------------------------------------------------
    async def create_campaign(self, ws: str, body: dict[str, Any]) -> dict[str, Any]:
        data: m.CampaignIn = m.parse(m.CampaignIn, body)
        definition = CampaignDefinition.from_dict(_definition(data))
        await self._check_senders(ws, definition.sender_ids)
        await self._check_auto_enroll(ws, data.settings)
        cid = new_id("cmp", self.clock.now())
        await self.store.append(f"campaign-{cid}", cd.decide_create(cid, definition), 0, workspace_id=ws)
        return await self.get_campaign(ws, cid)

    async def _check_senders(self, ws: str, sender_ids: Sequence[str]) -> None:
        if not sender_ids:
            return
        c = t.senders.c
        found = {r["id"] for r in await self.reads.all(select(c.id).where(c.workspace_id == ws, c.removed.is_(False),
                                                                          c.id.in_(list(sender_ids))))}
        missing = [s for s in sender_ids if s not in found]
        if missing:
            raise ValidationFailed([{"field": "sender_ids", "message": f"unknown sender {s}"} for s in missing])

    async def _check_auto_enroll(self, ws: str, settings: m.SettingsIn | None) -> None:
        """``settings.auto_enroll.list_ids`` must name lists of this workspace (its filter was
        checked by the model, the same one as an enroll request's), so that a typo is a 422 now
        rather than a campaign that silently never takes anyone."""
        if settings is None or settings.auto_enroll is None or not settings.auto_enroll.list_ids:
            return
        wanted = settings.auto_enroll.list_ids
        lc = t.lists.c
        found = {r["id"] for r in await self.reads.all(select(lc.id).where(lc.workspace_id == ws,
                                                                           lc.id.in_(list(set(wanted)))))}
        missing = [lid for lid in dict.fromkeys(wanted) if lid not in found]
        if missing:
            raise ValidationFailed([{"field": "settings.auto_enroll.list_ids", "message": f"unknown list {lid}"}
                                    for lid in missing])

    async def _campaign_row(self, ws: str, cid: str) -> Any:
        c = t.campaigns.c
        return await self.reads.one(select(t.campaigns).where(c.id == cid, c.workspace_id == ws, c.deleted.is_(False)),
                                    "campaign", cid)

    async def workspace_of_campaign(self, cid: str) -> str:
        """For operator tools (the CLI), which act on the whole database."""
        c = t.campaigns.c
        row = await self.reads.one(select(c.workspace_id).where(c.id == cid, c.deleted.is_(False)), "campaign", cid)
        return str(row["workspace_id"])

    async def get_campaign(self, ws: str, cid: str) -> dict[str, Any]:
        """The campaign and its stats, read on one connection: on PostgreSQL each checkout costs a
        ping, a BEGIN and a ROLLBACK besides the query, more than these primary-key reads."""
        c = t.campaigns.c
        async with self.store.reading() as conn:
            row = await self.reads.one(select(t.campaigns).where(c.id == cid, c.workspace_id == ws,
                                                                 c.deleted.is_(False)), "campaign", cid, conn)
            stats = (await self.campaign_stats_many(ws, [cid], conn))[cid]
        return views.campaign_view(row, stats)

    async def list_campaigns(self, ws: str, *, page: int = 1, per_page: int = 50, status: str | None = None,
                             folder: str | None = None, tag: str | None = None, q: str | None = None,
                             sort: str = "created_at", order: str = "desc", cursor: str | None = None
                             ) -> dict[str, Any]:
        """Campaigns by ``sort`` in ``order``, ties by ``id`` ascending; by page or after a cursor made
        for the same filters, sort and order."""
        paging = Page.of(page, per_page, cursor)
        errors = []
        if sort not in SORTS:
            errors.append({"field": "sort", "message": f"sort must be one of {', '.join(sorted(SORTS))}"})
        if order not in ("asc", "desc"):
            errors.append({"field": "order", "message": "order must be asc or desc"})
        if errors:
            raise ValidationFailed(errors)
        c = t.campaigns.c
        query = select(t.campaigns).where(c.workspace_id == ws, c.deleted.is_(False))
        if status:
            query = query.where(c.status == status)
        if folder:
            query = query.where(c.folder == folder)
        if tag:
            query = query.where(self._has_tag(tag))
        if q:
            query = query.where(func.lower(c.name).like(f"%{q.lower()}%"))
        listing = Listing("campaigns", ws, {"status": status or None, "folder": folder or None, "tag": tag or None,
                                            "q": q or None, "sort": sort, "order": order},
                          (SortKey(getattr(c, sort), sort, descending=order == "desc"), SortKey(c.id, "id")))
        # The workspace's campaigns, or those of one status, have a counter; other filters are counted.
        total = (None if folder or tag or q else
                 totals.total_query(ws, totals.status_name(totals.CAMPAIGNS, status) if status else totals.CAMPAIGNS))
        result = await self.reads.paged(query, paging, views.campaign_view, listing, total=total)
        stats = await self.campaign_stats_many(ws, [item["id"] for item in result["data"]])
        for item in result["data"]:
            item["stats"] = stats[item["id"]]
        return result

    def _has_tag(self, tag: str) -> Any:
        """Exact membership of ``tag`` in the campaign's JSON tag list, decided in SQL so that the
        count and the page agree (a substring match would take ``q`` for ``q2``, and filtering
        after the page would leave short or empty pages)."""
        c = t.campaigns.c
        if self.store.dialect == "postgresql":
            return cast(c.tags, JSONB).contains([tag])
        element = func.json_each(c.tags).table_valued("value")
        return select(element.c.value).where(element.c.value == tag).exists()

    async def update_campaign(self, ws: str, cid: str, body: dict[str, Any]) -> dict[str, Any]:
        patch: m.CampaignPatch = m.parse(m.CampaignPatch, body)
        changes: dict[str, Any] = {}
        for key in patch.model_fields_set:
            value = getattr(patch, key)
            if key == "schedule":
                changes[key] = m.dump_schedule(value) if value is not None else m.dump_schedule(m.ScheduleIn())
            elif key == "settings":
                await self._check_auto_enroll(ws, value)
                changes[key] = (value or m.SettingsIn()).model_dump()
            elif key == "steps":
                changes[key] = [s.model_dump() for s in value or []]
            elif key == "workflow":
                changes[key] = value.model_dump(by_alias=True) if value is not None else None
                if value is not None:
                    changes["steps"] = [m.StepIn.model_validate(s).model_dump()
                                        for s in cd.compile_workflow(changes[key])]
            elif key == "name" and value is None:
                raise ValidationFailed([{"field": "name", "message": "name cannot be null"}])
            else:
                changes[key] = value
        if "sender_ids" in changes:
            await self._check_senders(ws, changes["sender_ids"] or [])
            changes["sender_ids"] = changes["sender_ids"] or []

        async def attempt() -> None:
            state, version = await self.reads.campaign(ws, cid)
            sent = await self._steps_sent(cid) if state.status == "active" and "steps" in changes else 0
            events = cd.decide_update(state, changes, sent_steps=sent)
            if events:
                await self.store.append(f"campaign-{cid}", events, version, workspace_id=ws)
                self.work.notify()  # the runtime plans with the new values at once

        await retry(attempt)
        return await self.get_campaign(ws, cid)

    async def _steps_sent(self, cid: str) -> int:
        """The highest step claimed for any contact of the campaign (0 if none)."""
        from projections.sending import emails

        found = await self.reads.all(select(func.max(emails.c.step).label("step")).where(
            emails.c.campaign_id == cid, emails.c.claimed_at.is_not(None)))
        return int(found[0]["step"] or 0) if found else 0

    async def set_schedule(self, ws: str, cid: str, body: dict[str, Any]) -> dict[str, Any]:
        schedule: m.ScheduleIn = m.parse(m.ScheduleIn, body)

        async def attempt() -> None:
            state, version = await self.reads.campaign(ws, cid)
            events = cd.decide_schedule(state, m.dump_schedule(schedule))
            if events:
                await self.store.append(f"campaign-{cid}", events, version, workspace_id=ws)

        await retry(attempt)
        return await self.get_campaign(ws, cid)

    async def copy_campaign(self, ws: str, cid: str) -> dict[str, Any]:
        state, _ = await self.reads.campaign(ws, cid)
        definition = dataclasses.replace(state.definition, name=f"{state.definition.name} (copy)"[:255],
                                         schedule=dataclasses.replace(state.definition.schedule, launch_at=None))
        new = new_id("cmp", self.clock.now())
        await self.store.append(f"campaign-{new}", cd.decide_create(new, definition, copied_from=cid), 0,
                                workspace_id=ws)
        return await self.get_campaign(ws, new)

    # -- lifecycle ------------------------------------------------------------------------------
    async def approve_campaign(self, ws: str, cid: str) -> dict[str, Any]:
        return await self._lifecycle(ws, cid, lambda s: cd.decide_approve(s))

    async def launch_campaign(self, ws: str, cid: str) -> dict[str, Any]:
        async def attempt() -> None:
            async with self.store.transaction() as conn:
                state, version = await self.reads.campaign(ws, cid, conn)
                facts = await self._launch_facts(conn, ws)
                events = cd.decide_launch(state, facts, self.clock.now())
                await self.store.append(f"campaign-{cid}", events, version, workspace_id=ws, conn=conn)
                for e in events:
                    state = cd.evolve(state, e)
                await self._release(conn, ws, state, None)

        await retry(attempt)
        self.work.notify()
        return await self.get_campaign(ws, cid)

    async def _launch_facts(self, conn: AsyncConnection, ws: str) -> cd.LaunchFacts:
        c = t.senders.c
        rows = await self.reads.all(select(c.id, c.status).where(c.workspace_id == ws, c.removed.is_(False)), conn)
        w = (await self.reads.all(select(t.workspaces).where(t.workspaces.c.id == ws), conn))[0]
        return cd.LaunchFacts(active_sender_ids=frozenset(r["id"] for r in rows if r["status"] == "active"),
                              known_sender_ids=frozenset(r["id"] for r in rows),
                              require_approval=bool(w["require_approval"]),
                              plan_exhausted=await self._plan_exhausted(ws, conn))

    async def _plan_exhausted(self, ws: str, conn: AsyncConnection) -> bool:
        """Whether the workspace has used its monthly limit: launch and dispatch would only queue
        emails that cannot go this month, so both answer 402 instead."""
        w = (await self.reads.all(select(t.workspaces.c.monthly_limit).where(t.workspaces.c.id == ws), conn))[0]
        limit = w["monthly_limit"]
        return limit is not None and await self.usage.sent_this_month(ws) >= limit

    async def pause_campaign(self, ws: str, cid: str) -> dict[str, Any]:
        return await self._lifecycle(ws, cid, lambda s: cd.decide_transition(s, "pause"))

    async def resume_campaign(self, ws: str, cid: str) -> dict[str, Any]:
        result = await self._lifecycle(ws, cid, lambda s: cd.decide_transition(s, "resume"))
        self.work.notify()
        return result

    async def complete_campaign(self, ws: str, cid: str) -> dict[str, Any]:
        """End an active campaign now (the way an evergreen campaign ends): its open enrollments
        stop and their waiting emails are cancelled, so the log says why nothing more went."""
        return await self._lifecycle(ws, cid, lambda s: cd.decide_transition(s, "complete"),
                                     stop="campaign_completed")

    async def cancel_campaign(self, ws: str, cid: str) -> dict[str, Any]:
        return await self._lifecycle(ws, cid, lambda s: cd.decide_transition(s, "cancel"), stop="campaign_cancelled")

    async def archive_campaign(self, ws: str, cid: str) -> dict[str, Any]:
        return await self._lifecycle(ws, cid, lambda s: cd.decide_transition(s, "archive"))

    async def delete_campaign(self, ws: str, cid: str) -> dict[str, Any]:
        async with self.store.transaction() as conn:
            state, version = await self.reads.campaign(ws, cid, conn)
            await self.stops.stop_campaign(conn, ws, cid, "campaign_deleted")
            await self.store.append(f"campaign-{cid}", cd.decide_delete(state), version, workspace_id=ws, conn=conn)
        return {"id": cid, "deleted": True}

    async def bulk_delete_campaigns(self, ws: str, body: dict[str, Any]) -> dict[str, Any]:
        ids = body.get("ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or not ids or len(ids) > 1000:
            raise ValidationFailed([{"field": "ids", "message": "ids must be a non-empty list of campaign ids"}])
        extra = set(body) - {"ids"}
        if extra:
            raise ValidationFailed([{"field": k, "message": "unknown field"} for k in sorted(extra)])
        deleted, not_found = [], []
        for cid in dict.fromkeys(ids):
            try:
                await self.delete_campaign(ws, cid)
                deleted.append(cid)
            except NotFound:
                not_found.append(cid)
        return {"deleted": deleted, "not_found": not_found}

    async def _lifecycle(self, ws: str, cid: str, decide: Any, stop: str | None = None) -> dict[str, Any]:
        async def attempt() -> None:
            async with self.store.transaction() as conn:
                state, version = await self.reads.campaign(ws, cid, conn)
                events = decide(state)
                if stop and events:
                    await self.stops.stop_campaign(conn, ws, cid, stop)
                if events:
                    await self.store.append(f"campaign-{cid}", events, version, workspace_id=ws, conn=conn)

        await retry(attempt)
        return await self.get_campaign(ws, cid)

    # -- enrollments ----------------------------------------------------------------------------
    async def enroll(self, ws: str, cid: str, body: dict[str, Any]) -> dict[str, Any]:
        data: m.EnrollIn = m.parse(m.EnrollIn, body)
        errors: list[dict[str, Any]] = []
        contact_ids = await self._resolve_targets(ws, data, errors)
        added = 0
        skipped: dict[str, int] = {}
        for i in range(0, len(contact_ids), ENROLL_CHUNK):
            chunk = contact_ids[i:i + ENROLL_CHUNK]

            async def attempt(chunk: list[str] = chunk) -> ed.EnrollDecision:
                async with self.store.transaction() as conn:
                    return await self.enroll_contacts(conn, ws, cid, chunk, batch_number=data.batch_number,
                                                      priority=data.priority)

            decision = await retry(attempt)
            added += decision.added
            for k, v in decision.skipped.items():
                skipped[k] = skipped.get(k, 0) + v
        if added:
            self.work.notify()
        return {"added": added, "skipped": skipped, "errors": errors, "selection": _selection(data)}

    async def enroll_contacts(self, conn: AsyncConnection, ws: str, cid: str, contact_ids: list[str], *,
                              batch_number: int | None = None, priority: int = 0) -> ed.EnrollDecision:
        """Enroll existing contacts of the workspace inside the caller's transaction: the one
        enroll path, with its skip rules and events, for a request (``enroll``) and for a
        campaign's ``auto_enroll`` (run in the transaction of the contact command that selected
        them). The caller wakes the runtime after committing when ``added`` is not zero."""
        state, version = await self.reads.campaign(ws, cid, conn)
        facts = await self._contact_facts(conn, ws, state, contact_ids)
        seq = await self._next_seq(conn, cid)
        now = self.clock.now()
        decision = ed.decide_enroll(state, facts, new_ids=[new_id("enr", now) for _ in facts], now=now,
                                    batch_number=batch_number, priority=priority, first_seq=seq)
        batches = [AppendBatch(s, evs, 0 if s.startswith("enrollment-") else version)
                   for s, evs in decision.batches]
        await self.store.append_many(batches, workspace_id=ws, conn=conn)
        return decision

    async def _resolve_targets(self, ws: str, data: m.EnrollIn, errors: list[dict[str, Any]]) -> list[str]:
        """The contacts a request names, in request order, duplicates kept (the decider skips
        them as ``already_enrolled``).

        ``contact_ids`` are explicit picks and always count. ``list_ids`` with ``filter`` select
        the list members that match the filter (so a filter narrows a list); either one alone
        selects what it says. Only the lists' members are read when lists are given, never the
        whole contact table.
        """
        c = t.contacts.c
        ids: list[str] = []
        if data.contact_ids:
            found: set[str] = set()
            distinct = list(dict.fromkeys(data.contact_ids))
            async with self.store.reading() as conn:
                for i in range(0, len(distinct), FACTS_CHUNK):
                    found.update(r[0] for r in (await conn.execute(select(c.id).where(
                        c.workspace_id == ws, c.erased.is_(False), c.id.in_(distinct[i:i + FACTS_CHUNK])))).all())
            for cid in data.contact_ids:
                if cid in found:
                    ids.append(cid)
                else:
                    errors.append({"contact_id": cid, "error": "contact_not_found"})
        tree = data.filter.model_dump() if data.filter is not None else None
        lm = t.list_members.c
        for lid in data.list_ids or []:
            lc = t.lists.c
            if not await self.reads.all(select(lc.id).where(lc.id == lid, lc.workspace_id == ws)):
                raise NotFound("list", lid)
            columns = [t.contacts] if tree is not None else [lm.contact_id]
            rows = await self.reads.all(select(*columns).join(t.contacts, c.id == lm.contact_id).where(
                lm.list_id == lid, c.erased.is_(False)).order_by(lm.contact_id))
            if tree is None:
                ids.extend(r["contact_id"] for r in rows)
            else:
                ids.extend(r["id"] for r in rows if matches_row(tree, r))
        if tree is not None and not data.list_ids:
            # The whole workspace, read in keyset batches: a filter over a million contacts holds
            # one batch of rows at a time, not the table.
            after: tuple[str, str] | None = None
            while True:
                query = select(t.contacts).where(c.workspace_id == ws, c.erased.is_(False))
                if after is not None:
                    query = query.where(or_(c.created_at > after[0], and_(c.created_at == after[0], c.id > after[1])))
                rows = await self.reads.all(query.order_by(c.created_at, c.id).limit(FILTER_BATCH))
                ids.extend(r["id"] for r in rows if matches_row(tree, r))
                if len(rows) < FILTER_BATCH:
                    break
                after = (rows[-1]["created_at"], rows[-1]["id"])
        return ids

    async def _next_seq(self, conn: AsyncConnection, cid: str) -> int:
        e = t.enrollments.c
        return int((await conn.execute(select(func.max(e.seq)).where(e.campaign_id == cid))).scalar() or 0)

    async def _contact_facts(self, conn: AsyncConnection, ws: str, state: cd.CampaignState,
                             contact_ids: list[str]) -> list[ed.ContactFacts]:
        """What the skip rules need about each contact, read with set queries, not per contact.

        One query per :data:`FACTS_CHUNK` contacts answers each one's flags and whether it is
        enrolled here, elsewhere, or in another campaign of the same outreach (``EXISTS`` over
        the enrollments' indexes), and whether its address is suppressed (the contact's stored
        keyed hash of its address against the suppressions' hashes, which is what
        :meth:`Suppressions.suppressed` compares). Domains repeat, so only the distinct ones are
        hashed and looked up, through :meth:`Suppressions.suppressed`.
        """
        c, e, s = t.contacts.c, t.enrollments.c, t.suppressions.c
        outreach = state.definition.outreach_id
        same_outreach: list[str] = []
        if outreach:
            cc = t.campaigns.c
            same_outreach = [r[0] for r in (await conn.execute(select(cc.id).where(
                cc.workspace_id == ws, cc.outreach_id == outreach, cc.id != state.id,
                cc.deleted.is_(False)))).all()]
        email_suppressed = exists().where(s.workspace_id == ws, s.value_hash == c.email_hash)
        here = exists().where(e.campaign_id == state.id, e.contact_id == c.id)
        elsewhere = exists().where(e.contact_id == c.id, e.workspace_id == ws, e.campaign_id != state.id)
        in_outreach = (exists().where(e.contact_id == c.id, e.workspace_id == ws, e.campaign_id.in_(same_outreach))
                       if same_outreach else false())
        columns = (c.id, c.email_domain, c.email.is_not(None) & email_suppressed, c.unsubscribed, c.bounced,
                   c.replied, here, elsewhere, in_outreach)
        distinct = list(dict.fromkeys(contact_ids))
        rows: dict[str, Any] = {}
        for start in range(0, len(distinct), FACTS_CHUNK):
            part = distinct[start:start + FACTS_CHUNK]
            for row in (await conn.execute(select(*columns).where(c.id.in_(part)))).all():
                rows[row[0]] = row
        domains = sorted({row[1] for row in rows.values()})
        found = await self.suppressions.suppressed(ws, domains, conn)
        suppressed_domains = {domain for domain in domains if found and self.vault.lookup_hash(domain) in found}
        facts = []
        for cid in contact_ids:
            (_, domain, email_is_suppressed, unsubscribed, bounced, replied, enrolled_here, enrolled_elsewhere,
             same_outreach_elsewhere) = rows[cid]
            facts.append(ed.ContactFacts(
                contact_id=cid, email_domain=domain,
                suppressed=bool(email_is_suppressed) or domain in suppressed_domains,
                unsubscribed=bool(unsubscribed), bounced=bool(bounced), replied=bool(replied),
                enrolled_here=bool(enrolled_here), enrolled_elsewhere=bool(enrolled_elsewhere),
                same_outreach_elsewhere=bool(same_outreach_elsewhere)))
        return facts

    async def list_enrollments(self, ws: str, cid: str, *, status: str | None = None,
                               batch_number: int | None = None, page: int = 1, per_page: int = 50,
                               cursor: str | None = None) -> dict[str, Any]:
        """The campaign's enrollments in enrollment order (``seq``, then ``id``: the
        ``ix_rm_enrollments_campaign_seq`` index); by page or after a cursor of the same campaign and filters."""
        paging = Page.of(page, per_page, cursor)
        await self._campaign_row(ws, cid)
        e = t.enrollments.c
        q = (select(t.enrollments, t.contacts.c.email).join(t.contacts, t.contacts.c.id == e.contact_id)
             .where(e.campaign_id == cid, e.workspace_id == ws))
        # The total counts the same rows from the enrollments' indexes alone: the contact join only
        # adds the email (every enrollment has its contact row; erasure keeps it), and the campaign,
        # checked above, is the workspace's.
        counted = select(e.id).where(e.campaign_id == cid)
        if status:
            q, counted = q.where(e.status == status), counted.where(e.status == status)
        if batch_number is not None:
            q, counted = q.where(e.batch_number == batch_number), counted.where(e.batch_number == batch_number)
        listing = Listing("enrollments", ws, {"campaign_id": cid, "status": status or None,
                                              "batch_number": batch_number},
                          (SortKey(e.seq, "seq"), SortKey(e.id, "id")))
        # Without a batch filter the total is the campaign's enrollment counters (by status, kept by
        # projections/campaign_stats.py): a primary-key range of at most one row per status. A batch
        # has its own counter (projections/listing_totals.py); a batch and a status together count.
        total = None
        if batch_number is None:
            counts = cs.counts.c
            total = select(func.coalesce(func.sum(counts.total), 0)).where(counts.campaign_id == cid,
                                                                          counts.kind == cs.ENROLLMENT)
            if status:
                total = total.where(counts.key == status)
        elif not status:
            total = totals.total_query(cid, totals.batch_name(batch_number))
        return await self.reads.paged(q, paging, views.enrollment_view, listing, counted=counted, total=total)

    async def remove_enrollments(self, ws: str, cid: str, body: dict[str, Any]) -> dict[str, Any]:
        data: m.ContactIdsIn = m.parse(m.ContactIdsIn, body)
        async with self.store.transaction() as conn:
            await self.reads.campaign(ws, cid, conn)
            e = t.enrollments.c
            rows = await self.reads.all(select(t.enrollments).where(
                e.campaign_id == cid, e.contact_id.in_(data.contact_ids), e.status.in_(["pending", "in_progress"])),
                conn)
            batches = [AppendBatch(f"enrollment-{r['id']}", [
                *cancel_pending(r), en.EnrollmentRemoved(enrollment_id=r["id"], campaign_id=cid,
                                                         contact_id=r["contact_id"])]) for r in rows]
            await self.store.append_many(batches, workspace_id=ws, conn=conn)
        return {"removed": len(rows)}

    async def _release(self, conn: AsyncConnection, ws: str, state: cd.CampaignState, batch: int | None) -> int:
        """Schedule step 1 for pending enrollments that now may go (launch, dispatch)."""
        e = t.enrollments.c
        q = select(t.enrollments).where(e.campaign_id == state.id, e.status == "pending", e.next_send_at.is_(None))
        if batch is not None:
            q = q.where(e.batch_number == batch)
        rows = await self.reads.all(q.order_by(e.seq), conn)
        due = ed.first_due(state, self.clock.now())
        batches = [AppendBatch(f"enrollment-{r['id']}", [ed.schedule_step(
            r["id"], r["campaign_id"], r["contact_id"], 1, due, None, r["priority"], r["seq"])])
            for r in rows if ed.releases_now(state, r["batch_number"])]
        await self.store.append_many(batches, workspace_id=ws, conn=conn)
        return len(batches)

    async def dispatch(self, ws: str, cid: str, body: dict[str, Any]) -> dict[str, Any]:
        bn = m.parse(m.DispatchIn, body or {}).batch_number
        async with self.store.transaction() as conn:
            state, version = await self.reads.campaign(ws, cid, conn)
            e = t.enrollments.c
            pending = [r["batch_number"] for r in await self.reads.all(
                select(e.batch_number).distinct().where(e.campaign_id == cid, e.status == "pending",
                                                        e.next_send_at.is_(None), e.batch_number.is_not(None)), conn)]
            events = cd.decide_dispatch(state, pending, bn)
            if await self._plan_exhausted(ws, conn):
                raise PlanLimitReached("the workspace's monthly limit is reached")
            await self.store.append(f"campaign-{cid}", events, version, workspace_id=ws, conn=conn)
            for ev_ in events:
                state = cd.evolve(state, ev_)
            dispatched = events[0]  # decide_dispatch answers with the one batch it dispatched
            assert isinstance(dispatched, campaign_events.CampaignBatchDispatched)
            released = await self._release(conn, ws, state, dispatched.batch_number)
        self.work.notify()
        return {"batch_number": dispatched.batch_number, "released": released}

    # -- stats ----------------------------------------------------------------------------------
    async def campaign_stats(self, ws: str, cid: str) -> dict[str, Any]:
        """``GET .../stats``: NotFound for an unknown, deleted or foreign campaign (a primary-key
        read of its id alone), then its counters."""
        c = t.campaigns.c
        async with self.store.reading() as conn:
            await self.reads.one(select(c.id).where(c.id == cid, c.workspace_id == ws, c.deleted.is_(False)),
                                 "campaign", cid, conn)
            return (await self.campaign_stats_many(ws, [cid], conn))[cid]

    async def campaign_stats_many(self, ws: str, cids: Sequence[str], conn: AsyncConnection | None = None
                                  ) -> dict[str, dict[str, Any]]:
        """``GET .../stats`` for several campaigns (a page of the list) from their counters, kept as
        events land (``projections/campaign_stats.py``): one read of them and of the last day's
        sends, none per campaign and none over its enrollments or emails; on ``conn`` when given."""
        if not cids:
            return {}
        counters = await self.stats.counters_many(cids, conn)
        counts = {cid: {status: n["total"] for status, n in counters[cid].get("enrollment", {}).items()}
                  for cid in cids}
        skip_counts = {cid: {reason: n["total"] for reason, n in counters[cid].get("skip", {}).items()}
                       for cid in cids}
        emails = await self.stats.email_stats_many(ws, cids, counters, conn)
        out = {}
        for cid in cids:
            by_status = counts[cid]
            contacts = {"total": sum(by_status.values()),
                        **{k: by_status.get(k, 0) for k in ("pending", "in_progress", "completed", "replied",
                                                            "bounced", "unsubscribed", "stopped", "skipped",
                                                            "failed")}}
            stats: dict[str, Any] = {"contacts": contacts,
                                     "skipped": {k: skip_counts[cid].get(k, 0) for k in ed.SKIP_REASONS}}
            if cid in emails:
                email_part = dict(emails[cid])
                # Contacts sent at least one email of the campaign.
                contacts["contacted"] = email_part.pop("_contacted")
                stats.update(email_part)
            out[cid] = stats
        return out


__all__ = ["CampaignService", "and_", "matches_row"]
