"""Projections behind the management API: workspaces, senders, contacts, lists, suppressions,
campaigns, enrollments and skips."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from events.registry import format_time
from events.store import StoredEvent
from projections import tables as t
from projections.base import Projection


def _j(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def _at(ev: StoredEvent) -> str:
    return format_time(ev.recorded_at)


def _d(ev: StoredEvent) -> Any:
    return ev.event


# -- workspaces, API keys, webhooks -----------------------------------------------------------
workspaces = Projection("workspaces", 1, [t.workspaces, t.api_keys, t.webhooks])


@workspaces.on("workspace.created")
async def _ws_created(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    await conn.execute(t.workspaces.insert(), [
        {"id": _d(e).workspace_id, "name": _d(e).name, "monthly_limit": _d(e).monthly_limit,
         "require_approval": _d(e).require_approval, "created_at": _at(e)} for e in evs])


@workspaces.on("api_key.created")
async def _key_created(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    await conn.execute(t.api_keys.insert(), [
        {"key_id": _d(e).key_id, "workspace_id": _d(e).workspace_id, "key_hash": _d(e).key_hash,
         "prefix": _d(e).prefix, "revoked": False, "created_at": _at(e)} for e in evs])


@workspaces.on("api_key.revoked")
async def _key_revoked(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    for e in evs:
        await conn.execute(update(t.api_keys).where(t.api_keys.c.key_id == _d(e).key_id).values(revoked=True))


@workspaces.on("webhook.created")
async def _wh_created(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    await conn.execute(t.webhooks.insert(), [
        {"id": _d(e).webhook_id, "workspace_id": e.workspace_id, "url": _d(e).url,
         "event_types": _j(list(_d(e).event_types)), "secret_enc": _d(e).secret_enc, "created_at": _at(e)}
        for e in evs])


@workspaces.on("webhook.deleted")
async def _wh_deleted(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    for e in evs:
        await conn.execute(delete(t.webhooks).where(t.webhooks.c.id == _d(e).webhook_id))


# -- senders ----------------------------------------------------------------------------------
senders = Projection("senders", 1, [t.senders])


@senders.on("sender.added")
async def _sender_added(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    await conn.execute(t.senders.insert(), [
        {"id": d.sender_id, "workspace_id": e.workspace_id, "email": d.email, "from_name": d.from_name,
         "smtp": _j(d.smtp), "imap": _j(d.imap) if d.imap is not None else None, "daily_limit": d.daily_limit,
         "daily_limit_variation_pct": d.daily_limit_variation_pct, "bounce_rate_threshold": d.bounce_rate_threshold,
         "status": "active", "disabled_reason": None, "disabled_at": None, "removed": False,
         "created_at": _at(e), "updated_at": _at(e)}
        for e in evs for d in [_d(e)]])


@senders.on("sender.updated")
async def _sender_updated(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    for e in evs:
        d = _d(e)
        values: dict[str, Any] = {"updated_at": _at(e)}
        for key, value in d.changes.items():
            if key in ("smtp", "imap"):
                values[key] = _j(value) if value is not None else None
            elif key in ("email", "from_name", "daily_limit", "daily_limit_variation_pct", "bounce_rate_threshold"):
                values[key] = value
        await conn.execute(update(t.senders).where(t.senders.c.id == d.sender_id).values(**values))


@senders.on("sender.disabled")
async def _sender_disabled(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    for e in evs:
        d = _d(e)
        await conn.execute(update(t.senders).where(t.senders.c.id == d.sender_id).values(
            status=d.status, disabled_reason=d.reason, disabled_at=_at(e), updated_at=_at(e)))


@senders.on("sender.reenabled")
async def _sender_reenabled(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    for e in evs:
        await conn.execute(update(t.senders).where(t.senders.c.id == _d(e).sender_id).values(
            status="active", disabled_reason=None, disabled_at=None, updated_at=_at(e)))


@senders.on("sender.removed")
async def _sender_removed(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    for e in evs:
        await conn.execute(update(t.senders).where(t.senders.c.id == _d(e).sender_id).values(
            removed=True, updated_at=_at(e)))


# -- contacts, lists, suppressions ------------------------------------------------------------
contacts = Projection("contacts", 1, [t.contacts, t.lists, t.list_members, t.suppressions])

_CONTACT_FIELDS = ("email", "first_name", "last_name", "company", "timezone")


@contacts.on("contact.created")
async def _contact_created(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    rows = []
    for e in evs:
        d = _d(e)
        erased = d.email is None  # the key was destroyed before this rebuild
        rows.append({
            "id": d.contact_id, "workspace_id": e.workspace_id, "email": d.email, "email_hash": d.email_hash,
            "email_domain": d.email_domain, "first_name": d.first_name, "last_name": d.last_name,
            "company": d.company, "timezone": d.timezone,
            "custom_fields": _j(d.custom_fields) if d.custom_fields is not None else None,
            "status": "erased" if erased else "active", "bounced": False, "replied": False,
            "unsubscribed": False, "erased": erased, "created_at": _at(e), "updated_at": _at(e)})
    await conn.execute(t.contacts.insert(), rows)


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


@contacts.on("contact.unsubscribed", "email.complained")
async def _contact_unsubscribed(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    for e in evs:
        await conn.execute(update(t.contacts).where(t.contacts.c.id == _d(e).contact_id).values(
            unsubscribed=True, status="unsubscribed", updated_at=_at(e)))


@contacts.on("email.bounced")
async def _contact_bounced(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    for e in evs:
        if _d(e).bounce_type == "hard":
            await conn.execute(update(t.contacts).where(t.contacts.c.id == _d(e).contact_id).values(
                bounced=True, updated_at=_at(e)))


@contacts.on("email.replied")
async def _contact_replied(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    for e in evs:
        if not _d(e).out_of_office:
            await conn.execute(update(t.contacts).where(t.contacts.c.id == _d(e).contact_id).values(
                replied=True, updated_at=_at(e)))


@contacts.on("list.created")
async def _list_created(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    await conn.execute(t.lists.insert(), [
        {"id": _d(e).list_id, "workspace_id": e.workspace_id, "name": _d(e).name, "created_at": _at(e)}
        for e in evs])


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
    for e in evs:
        s = t.suppressions
        await conn.execute(delete(s).where(s.c.workspace_id == e.workspace_id, s.c.kind == _d(e).kind,
                                           s.c.value_hash == _d(e).value_hash))


# -- campaigns --------------------------------------------------------------------------------
campaigns = Projection("campaigns", 1, [t.campaigns])


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
            updated_at=_at(e), launched_at=None, completed_at=None, approved_at=None, deleted=False))


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
        await conn.execute(update(t.campaigns).where(t.campaigns.c.id == _d(e).campaign_id).values(**values))


@campaigns.on("campaign.launched")
async def _cmp_launched(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    for e in evs:
        await conn.execute(update(t.campaigns).where(t.campaigns.c.id == _d(e).campaign_id).values(
            status=_d(e).status, launched_at=_at(e), updated_at=_at(e)))


@campaigns.on("campaign.approved")
async def _cmp_approved(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    for e in evs:
        await conn.execute(update(t.campaigns).where(t.campaigns.c.id == _d(e).campaign_id).values(
            approved_at=_at(e), updated_at=_at(e)))


@campaigns.on("campaign.deleted")
async def _cmp_deleted(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    for e in evs:
        await conn.execute(update(t.campaigns).where(t.campaigns.c.id == _d(e).campaign_id).values(
            deleted=True, updated_at=_at(e)))


# -- enrollments and skips --------------------------------------------------------------------
enrollments = Projection("enrollments", 1, [t.enrollments, t.skips], stream_local=True)
_E = t.enrollments


@enrollments.on("enrollment.created")
async def _enr_created(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    await conn.execute(_E.insert(), [
        {"id": d.enrollment_id, "workspace_id": e.workspace_id, "campaign_id": d.campaign_id,
         "contact_id": d.contact_id, "status": "pending", "current_step": 0, "next_send_at": None,
         "batch_number": d.batch_number, "priority": d.priority, "seq": d.seq, "sender_id": None,
         "stop_reason": None, "enrolled_at": _at(e), "updated_at": _at(e)}
        for e in evs for d in [_d(e)]])


@enrollments.on("enrollment.skipped")
async def _enr_skipped(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    await conn.execute(t.skips.insert(), [
        {"position": e.position, "workspace_id": e.workspace_id, "campaign_id": _d(e).campaign_id,
         "contact_id": _d(e).contact_id, "reason": _d(e).reason, "at": _at(e)} for e in evs])
    later = [{"i": _d(e).enrollment_id, "u": _at(e), "r": _d(e).reason} for e in evs if _d(e).enrollment_id]
    if later:
        await conn.execute(update(_E).where(_E.c.id == bindparam("i")).values(
            status="skipped", next_send_at=None, stop_reason=bindparam("r"), updated_at=bindparam("u")), later)


@enrollments.on("email.scheduled")
async def _enr_scheduled(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    await conn.execute(update(_E).where(_E.c.id == bindparam("i")).values(
        next_send_at=bindparam("n"), updated_at=bindparam("u")),
        [{"i": _d(e).enrollment_id, "n": format_time(_d(e).due_at), "u": _at(e)} for e in evs])


@enrollments.on("email.sent")
async def _enr_sent(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    await conn.execute(update(_E).where(_E.c.id == bindparam("i")).values(
        status="in_progress", current_step=bindparam("s"), sender_id=bindparam("snd"), next_send_at=None,
        updated_at=bindparam("u")),
        [{"i": _d(e).enrollment_id, "s": _d(e).step, "snd": _d(e).sender_id, "u": _at(e)} for e in evs])


_FINAL = {"enrollment.completed": "completed", "enrollment.removed": "stopped"}


@enrollments.on("enrollment.completed", "enrollment.removed")
async def _enr_final(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    await conn.execute(update(_E).where(_E.c.id == bindparam("i")).values(
        status=bindparam("st"), next_send_at=None, stop_reason=bindparam("r"), updated_at=bindparam("u")),
        [{"i": _d(e).enrollment_id, "st": _FINAL[e.type], "u": _at(e),
          "r": "removed" if e.type == "enrollment.removed" else None} for e in evs])


@enrollments.on("enrollment.stopped")
async def _enr_stopped(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    await conn.execute(update(_E).where(_E.c.id == bindparam("i")).values(
        status=bindparam("st"), next_send_at=None, stop_reason=bindparam("r"), updated_at=bindparam("u")),
        [{"i": _d(e).enrollment_id, "st": _d(e).status, "r": _d(e).reason, "u": _at(e)} for e in evs])


ALL = [workspaces, senders, contacts, campaigns, enrollments]
