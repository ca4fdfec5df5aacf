"""Projections behind the management API: workspaces, senders, contacts, lists, suppressions,
campaigns, enrollments and skips."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, delete, inspect, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from events.registry import format_time
from events.store import StoredEvent
from projections import tables as t
from projections.base import Projection, Statement, TimeTexts, insert_statement, lit
from projections.engagement import engagement


def _j(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def _at(ev: StoredEvent) -> str:
    return format_time(ev.recorded_at)


def _d(ev: StoredEvent) -> Any:
    return ev.event


# -- workspaces, API keys, webhooks -----------------------------------------------------------
class ReshapingProjection(Projection):
    """A projection whose clear also brings its tables' columns up to the code's.

    Read models never migrate: a changed projection gets a new version and is rebuilt at start-up.
    But ``create_all`` leaves an existing table as it is, so a table that gained a column (here
    ``rm_api_keys.name``) would refuse the rebuild's inserts on a database made by older code.
    Its clear therefore drops and recreates each table whose columns differ, inside the rebuild's
    transaction; a table already in shape is only emptied.
    """

    async def clear(self, conn: AsyncConnection) -> None:
        for table in self.tables:
            present = await conn.run_sync(_column_names, table.name)
            if present != {col.name for col in table.columns}:
                await conn.run_sync(table.drop, checkfirst=True)
                await conn.run_sync(table.create)
        await super().clear(conn)


def _column_names(sync_conn: Any, name: str) -> set[str] | None:
    found = inspect(sync_conn)
    return {col["name"] for col in found.get_columns(name)} if found.has_table(name) else None


# Version 2: API keys carry a name.
workspaces = ReshapingProjection("workspaces", 2, [t.workspaces, t.api_keys, t.webhooks])


@workspaces.on("workspace.created")
async def _ws_created(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    await conn.execute(t.workspaces.insert(), [
        {"id": _d(e).workspace_id, "name": _d(e).name, "monthly_limit": _d(e).monthly_limit,
         "require_approval": _d(e).require_approval, "created_at": _at(e)} for e in evs])


@workspaces.on("api_key.created")
async def _key_created(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    await conn.execute(t.api_keys.insert(), [
        {"key_id": _d(e).key_id, "workspace_id": _d(e).workspace_id, "key_hash": _d(e).key_hash,
         "prefix": _d(e).prefix, "name": _d(e).name, "revoked": False, "created_at": _at(e)} for e in evs])


@workspaces.on("api_key.revoked")
async def _key_revoked(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    await conn.execute(update(t.api_keys).where(t.api_keys.c.key_id == bindparam("k")).values(revoked=True),
                       [{"k": _d(e).key_id} for e in evs])


@workspaces.on("webhook.created")
async def _wh_created(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    await conn.execute(t.webhooks.insert(), [
        {"id": _d(e).webhook_id, "workspace_id": e.workspace_id, "url": _d(e).url,
         "event_types": _j(list(_d(e).event_types)), "secret_enc": _d(e).secret_enc, "created_at": _at(e)}
        for e in evs])


@workspaces.on("webhook.deleted")
async def _wh_deleted(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    await conn.execute(delete(t.webhooks).where(t.webhooks.c.id == bindparam("i")), [{"i": _d(e).webhook_id}
                                                                                       for e in evs])


# -- senders ----------------------------------------------------------------------------------
# Version 2: max_connections and warmup; version 3: dkim (the table is reshaped on databases made before).
senders = ReshapingProjection("senders", 3, [t.senders])


@senders.on("sender.added")
async def _sender_added(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    await conn.execute(t.senders.insert(), [
        {"id": d.sender_id, "workspace_id": e.workspace_id, "email": d.email, "from_name": d.from_name,
         "smtp": _j(d.smtp), "imap": _j(d.imap) if d.imap is not None else None, "daily_limit": d.daily_limit,
         "daily_limit_variation_pct": d.daily_limit_variation_pct, "bounce_rate_threshold": d.bounce_rate_threshold,
         "max_connections": d.max_connections, "warmup": _j(d.warmup) if d.warmup is not None else None,
         "dkim": None, "status": "active", "disabled_reason": None, "disabled_at": None, "removed": False,
         "created_at": _at(e), "updated_at": _at(e)}
        for e in evs for d in [_d(e)]])


@senders.on("sender.updated")
async def _sender_updated(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    for e in evs:
        d = _d(e)
        values: dict[str, Any] = {"updated_at": _at(e)}
        for key, value in d.changes.items():
            if key in ("smtp", "imap", "warmup"):
                values[key] = _j(value) if value is not None else None
            elif key in ("email", "from_name", "daily_limit", "daily_limit_variation_pct", "bounce_rate_threshold",
                         "max_connections"):
                values[key] = value
        await conn.execute(update(t.senders).where(t.senders.c.id == d.sender_id).values(**values))


_S = t.senders


@senders.on("sender.dkim_key_set")
async def _sender_dkim_key_set(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    """The key as the event carries it: the private part stays encrypted in the read model too."""
    await conn.execute(update(_S).where(_S.c.id == bindparam("i")).values(
        dkim=bindparam("k"), updated_at=bindparam("u")), [{"i": d.sender_id, "u": _at(e), "k": _j({
            "selector": d.selector, "algorithm": d.algorithm, "public_key": d.public_key,
            "private_key_enc": d.private_key_enc})} for e in evs for d in [_d(e)]])


@senders.on("sender.disabled")
async def _sender_disabled(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    await conn.execute(update(_S).where(_S.c.id == bindparam("i")).values(
        status=bindparam("st"), disabled_reason=bindparam("r"), disabled_at=bindparam("at"), updated_at=bindparam("u")),
        [{"i": d.sender_id, "st": d.status, "r": d.reason, "at": _at(e), "u": _at(e)} for e in evs for d in [_d(e)]])


@senders.on("sender.reenabled")
async def _sender_reenabled(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    await conn.execute(update(_S).where(_S.c.id == bindparam("i")).values(
        status="active", disabled_reason=None, disabled_at=None, updated_at=bindparam("u")),
        [{"i": _d(e).sender_id, "u": _at(e)} for e in evs])


@senders.on("sender.removed")
async def _sender_removed(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    await conn.execute(update(_S).where(_S.c.id == bindparam("i")).values(removed=True, updated_at=bindparam("u")),
                       [{"i": _d(e).sender_id, "u": _at(e)} for e in evs])


# -- contacts, lists, suppressions ------------------------------------------------------------
contacts = Projection("contacts", 1, [t.contacts, t.lists, t.list_members, t.suppressions])

_CONTACT_FIELDS = ("email", "first_name", "last_name", "company", "timezone")


_CONTACT_INSERT = insert_statement(t.contacts, bounced=False, replied=False, unsubscribed=False)


@contacts.on("contact.created")
async def _contact_created(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    texts = TimeTexts()
    rows = []
    for e in evs:
        d: Any = e.event
        erased = d.email is None  # the key was destroyed before this rebuild
        at = texts[e.recorded_at]
        rows.append((d.contact_id, e.workspace_id, d.email, d.email_hash, d.email_domain, d.first_name, d.last_name,
                     d.company, d.timezone, _j(d.custom_fields) if d.custom_fields is not None else None,
                     "erased" if erased else "active", erased, at, at))
    await _CONTACT_INSERT.run(conn, rows)


@contacts.on("contact.updated")
async def _contact_updated(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    for e in evs:
        d = _d(e)
        values: dict[str, Any] = {"updated_at": _at(e)}
        for key, value in (d.changes or {}).items():
            if key in _CONTACT_FIELDS:
                values[key] = value
            elif key == "custom_fields":
                values[key] = _j(value) if value is not None else None
            elif key in ("email_hash", "email_domain"):
                values[key] = value
        await conn.execute(update(t.contacts).where(t.contacts.c.id == d.contact_id).values(**values))


@contacts.on("contact.erased")
async def _contact_erased(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    for e in evs:
        cid = _d(e).contact_id
        await conn.execute(update(t.contacts).where(t.contacts.c.id == cid).values(
            email=None, first_name=None, last_name=None, company=None, custom_fields=None, timezone=None,
            status="erased", erased=True, updated_at=_at(e)))
        await conn.execute(delete(t.list_members).where(t.list_members.c.contact_id == cid))
        if _d(e).email_hash:  # the suppression stays (as a keyed hash); its readable value goes
            await conn.execute(update(t.suppressions).where(
                t.suppressions.c.workspace_id == e.workspace_id, t.suppressions.c.value_hash == _d(e).email_hash
            ).values(value=None))


_C = t.contacts


@contacts.on("contact.unsubscribed", "email.complained")
async def _contact_unsubscribed(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    await conn.execute(update(_C).where(_C.c.id == bindparam("i")).values(
        unsubscribed=True, status="unsubscribed", updated_at=bindparam("u")),
        [{"i": _d(e).contact_id, "u": _at(e)} for e in evs])


@contacts.on("email.bounced")
async def _contact_bounced(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    rows = [{"i": _d(e).contact_id, "u": _at(e)} for e in evs if _d(e).bounce_type == "hard"]
    if rows:
        await conn.execute(update(_C).where(_C.c.id == bindparam("i")).values(bounced=True, updated_at=bindparam("u")),
                           rows)


@contacts.on("email.replied")
async def _contact_replied(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    rows = [{"i": _d(e).contact_id, "u": _at(e)} for e in evs if not _d(e).out_of_office]
    if rows:
        await conn.execute(update(_C).where(_C.c.id == bindparam("i")).values(replied=True, updated_at=bindparam("u")),
                           rows)


_LIST_INSERT = insert_statement(t.lists)


@contacts.on("list.created")
async def _list_created(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    texts = TimeTexts()
    await _LIST_INSERT.run(conn, [(d.list_id, e.workspace_id, d.name, texts[e.recorded_at])
                                  for e in evs for d in [_d(e)]])


@contacts.on("list.contacts_added")
async def _list_added(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    for e in evs:
        d = _d(e)
        ids = list(dict.fromkeys(d.contact_ids))
        existing = set((await conn.execute(select(t.list_members.c.contact_id).where(
            t.list_members.c.list_id == d.list_id, t.list_members.c.contact_id.in_(ids)))).scalars())
        rows = [{"list_id": d.list_id, "contact_id": c} for c in ids if c not in existing]
        if rows:
            await conn.execute(t.list_members.insert(), rows)


@contacts.on("list.contacts_removed")
async def _list_removed(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    for e in evs:
        d = _d(e)
        await conn.execute(delete(t.list_members).where(
            t.list_members.c.list_id == d.list_id, t.list_members.c.contact_id.in_(list(d.contact_ids))))


@contacts.on("suppression.added")
async def _supp_added(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    for e in evs:
        d = _d(e)
        s = t.suppressions
        await conn.execute(delete(s).where(s.c.workspace_id == e.workspace_id, s.c.kind == d.kind,
                                           s.c.value_hash == d.value_hash))
        await conn.execute(s.insert().values(workspace_id=e.workspace_id, kind=d.kind, value_hash=d.value_hash,
                                             value=d.value, reason=d.reason, created_at=_at(e)))


@contacts.on("suppression.removed")
async def _supp_removed(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    s = t.suppressions
    await conn.execute(delete(s).where(s.c.workspace_id == bindparam("w"), s.c.kind == bindparam("k"),
                                       s.c.value_hash == bindparam("h")),
                       [{"w": e.workspace_id, "k": _d(e).kind, "h": _d(e).value_hash} for e in evs])


# -- campaigns --------------------------------------------------------------------------------
# Version 2: paused_reason (the table is reshaped on databases made before).
campaigns = ReshapingProjection("campaigns", 2, [t.campaigns])


async def _definition(conn: AsyncConnection, campaign_id: str) -> dict[str, Any]:
    raw = (await conn.execute(select(t.campaigns.c.definition).where(t.campaigns.c.id == campaign_id))).scalar()
    return json.loads(raw) if raw else {}


@campaigns.on("campaign.created")
async def _cmp_created(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    for e in evs:
        d = _d(e).definition
        await conn.execute(t.campaigns.insert().values(
            id=_d(e).campaign_id, workspace_id=e.workspace_id, name=d["name"], status="draft",
            folder=d.get("folder"), tags=_j(d.get("tags") or []), outreach_id=d.get("outreach_id"),
            definition=_j(d), launch_at=(d.get("schedule") or {}).get("launch_at"), created_at=_at(e),
            updated_at=_at(e), launched_at=None, completed_at=None, approved_at=None, paused_reason=None,
            deleted=False))


@campaigns.on("campaign.updated", "campaign.schedule_changed")
async def _cmp_updated(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    for e in evs:
        cid = _d(e).campaign_id
        definition = await _definition(conn, cid)
        changes = _d(e).changes if e.type == "campaign.updated" else {"schedule": _d(e).schedule}
        definition.update(changes)
        await conn.execute(update(t.campaigns).where(t.campaigns.c.id == cid).values(
            name=definition["name"], folder=definition.get("folder"), tags=_j(definition.get("tags") or []),
            outreach_id=definition.get("outreach_id"), definition=_j(definition),
            launch_at=(definition.get("schedule") or {}).get("launch_at"), updated_at=_at(e)))


_STATUS_BY_TYPE = {
    "campaign.paused": "paused", "campaign.resumed": "active", "campaign.completed": "completed",
    "campaign.cancelled": "cancelled", "campaign.archived": "archived", "campaign.activated": "active",
}


@campaigns.on(*_STATUS_BY_TYPE)
async def _cmp_status(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    for e in evs:
        values: dict[str, Any] = {"status": _STATUS_BY_TYPE[e.type], "updated_at": _at(e)}
        if e.type == "campaign.completed":
            values["completed_at"] = _at(e)
        if e.type in ("campaign.paused", "campaign.resumed"):  # a resume clears the guard's reason
            values["paused_reason"] = _d(e).reason if e.type == "campaign.paused" else None
        await conn.execute(update(t.campaigns).where(t.campaigns.c.id == _d(e).campaign_id).values(**values))


_CMP = t.campaigns


@campaigns.on("campaign.launched")
async def _cmp_launched(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    await conn.execute(update(_CMP).where(_CMP.c.id == bindparam("i")).values(
        status=bindparam("st"), launched_at=bindparam("at"), updated_at=bindparam("u")),
        [{"i": _d(e).campaign_id, "st": _d(e).status, "at": _at(e), "u": _at(e)} for e in evs])


@campaigns.on("campaign.approved")
async def _cmp_approved(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    await conn.execute(update(_CMP).where(_CMP.c.id == bindparam("i")).values(
        approved_at=bindparam("at"), updated_at=bindparam("u")),
        [{"i": _d(e).campaign_id, "at": _at(e), "u": _at(e)} for e in evs])


@campaigns.on("campaign.deleted")
async def _cmp_deleted(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    await conn.execute(update(_CMP).where(_CMP.c.id == bindparam("i")).values(deleted=True, updated_at=bindparam("u")),
                       [{"i": _d(e).campaign_id, "u": _at(e)} for e in evs])


@campaigns.on("campaign.variant_won")
async def _cmp_variant_won(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    """The winner goes into the stored definition's ``variant_winners`` (step number as text ->
    variant id), where the tick reads the definition anyway: composing an email needs no other
    read. The campaign's API view lists its fields by name, so this bookkeeping is not shown."""
    for e in evs:
        cid = _d(e).campaign_id
        definition = await _definition(conn, cid)
        definition["variant_winners"] = {**(definition.get("variant_winners") or {}), str(_d(e).step): _d(e).variant}
        await conn.execute(update(t.campaigns).where(t.campaigns.c.id == cid).values(definition=_j(definition)))


# -- enrollments and skips --------------------------------------------------------------------
# Handlers find enrollments by id and skips by position (the primary keys): the indexes serve readers.
# Version 2: a deferral shows its retry time as the enrollment's next_send_at.
enrollments = Projection("enrollments", 2, [t.enrollments, t.skips], stream_local=True, defer_indexes=True)
_E = t.enrollments


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


_SKIP_INSERT = insert_statement(t.skips)
_ENR_SKIP = Statement(lambda: update(_E).where(_E.c.id == bindparam("p_id")).values(
    status=lit("skipped"), next_send_at=lit(None), stop_reason=bindparam("p_reason"), updated_at=bindparam("p_at")),
    ["p_reason", "p_at", "p_id"])


@enrollments.on("enrollment.skipped")
async def _enr_skipped(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    texts = TimeTexts()
    await _SKIP_INSERT.run(conn, [(e.position, e.workspace_id, d.campaign_id, d.contact_id, d.reason,
                                   texts[e.recorded_at]) for e in evs for d in [_d(e)]])
    await _ENR_SKIP.run(conn, [(d.reason, texts[e.recorded_at], d.enrollment_id)
                               for e in evs for d in [_d(e)] if d.enrollment_id])


_ENR_SENT = Statement(lambda: update(_E).where(_E.c.id == bindparam("p_id")).values(
    status=lit("in_progress"), current_step=bindparam("p_step"), next_send_at=lit(None),
    sender_id=bindparam("p_sender"), updated_at=bindparam("p_at")), ["p_step", "p_sender", "p_at", "p_id"])


@enrollments.on("email.deferred")
async def _enr_deferred(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    """The email waits for its retry: the enrollment says when (an outage is visible, not hidden)."""
    texts = TimeTexts()
    await _ENR_SCHEDULE.run(conn, [(texts[d.retry_at], texts[e.recorded_at], d.enrollment_id)
                                   for e in evs for d in [_d(e)]])


@enrollments.on("email.sent")
async def _enr_sent(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    texts = TimeTexts()
    await _ENR_SENT.run(conn, [(d.step, d.sender_id, texts[e.recorded_at], d.enrollment_id)
                               for e in evs for d in [_d(e)]])


_FINAL = {"enrollment.completed": "completed", "enrollment.removed": "stopped"}
_ENR_STOP = Statement(lambda: update(_E).where(_E.c.id == bindparam("p_id")).values(
    status=bindparam("p_status"), next_send_at=lit(None), stop_reason=bindparam("p_reason"),
    updated_at=bindparam("p_at")), ["p_status", "p_reason", "p_at", "p_id"])


@enrollments.on("enrollment.completed", "enrollment.removed")
async def _enr_final(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    texts = TimeTexts()
    await _ENR_STOP.run(conn, [(_FINAL[e.type], "removed" if e.type == "enrollment.removed" else None,
                                texts[e.recorded_at], _d(e).enrollment_id) for e in evs])


@enrollments.on("enrollment.stopped")
async def _enr_stopped(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    texts = TimeTexts()
    await _ENR_STOP.run(conn, [(d.status, d.reason, texts[e.recorded_at], d.enrollment_id)
                               for e in evs for d in [_d(e)]])


# The engagement counters live in their own module; they join this list, the one the engine
# registers, so that every read model the API serves is built inline and rebuilt the same way.
ALL = [workspaces, senders, contacts, campaigns, enrollments, engagement]
