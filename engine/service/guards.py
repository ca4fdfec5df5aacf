"""Guards on what was attempted: sender bounce rates, campaign health, and the bounces that stop
an address everywhere.

Both the tick (after each batch of SMTP outcomes) and the inbound poller (after each DSN or
complaint) apply them, so they live here once:

- a sender whose bounce rate passes its threshold after 20 sends is disabled, and so is one whose
  complaint rate (ARF reports over sent) passes 0.3%, Gmail's line for bulk senders;
- a campaign whose bounce or complaint rate passes its own threshold is paused;
- a hard bounce stops the address in every campaign of the workspace;
- a run of soft bounces (``soft_bounce_limit`` in a row) suppresses the address.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import case, func, literal, select
from sqlalchemy.ext.asyncio import AsyncConnection

from engine.domain import campaign as campaign_domain
from engine.domain.definition import CampaignSettings, definition_from_json
from engine.service.base import Reads
from engine.service.stops import EnrollmentStops
from engine.service.suppressions import Suppressions
from events.catalog import email as email_events
from events.catalog import sender as sender_events
from events.store import AppendBatch, EventStore
from projections import tables
from projections.sending import emails

MIN_SENDS_FOR_BOUNCE_RATE = 20
# A sender has no complaint threshold of its own in the contract (only ``bounce_rate_threshold``):
# every sender is held to a campaign's default, Gmail's line, which is what the receiving side
# judges it by anyway.
SENDER_COMPLAINT_RATE_THRESHOLD = CampaignSettings().complaint_rate_threshold
DEFAULT_SOFT_BOUNCE_LIMIT = CampaignSettings().soft_bounce_limit
SOFT_BOUNCE_REASON = "soft_bounces"


class DeliveryGuards:
    """Applies the guards inside the caller's transaction (the one that recorded the outcomes)."""

    def __init__(self, store: EventStore, stops: EnrollmentStops, suppressions: Suppressions) -> None:
        self.store = store
        self.stops = stops
        self.suppressions = suppressions
        self.reads = Reads(store)

    async def check_bounce_rate(self, conn: AsyncConnection, ws: str, sender_id: str) -> bool:
        """Disable a sender whose bounce rate (blocks included) passed its threshold after 20 sends."""
        sender = (await conn.execute(select(tables.senders).where(tables.senders.c.id == sender_id))).mappings().first()
        if sender is None or sender["status"] != "active":
            return False
        e = emails.c
        sent = int((await conn.execute(select(func.count()).select_from(emails).where(
            e.sender_id == sender_id, e.sent_at.is_not(None)))).scalar() or 0)
        bounced = int((await conn.execute(select(func.count()).select_from(emails).where(
            e.sender_id == sender_id, e.status == "bounced"))).scalar() or 0)
        attempted = max(sent, bounced)
        if attempted < MIN_SENDS_FOR_BOUNCE_RATE:
            return False
        rate = 100.0 * bounced / attempted
        if rate <= float(sender["bounce_rate_threshold"]):
            return False
        await self.store.append(f"sender-{sender_id}", [sender_events.SenderDisabled(
            sender_id=sender_id, status="disabled",
            reason=f"bounce rate {rate:.1f}% over the {sender['bounce_rate_threshold']}% threshold "
                   f"({bounced} of {attempted})")], None, workspace_id=ws, conn=conn)
        return True

    async def check_complaint_rate(self, conn: AsyncConnection, ws: str, sender_id: str) -> bool:
        """Disable a sender whose complaint rate passed 0.3% once it made 20 sends.

        Gmail and Yahoo judge the sending address by the share of its mail marked as spam, across
        every campaign, so a sender that crosses the line stops before its reputation is gone,
        just as its own bounce rate stops it (:meth:`check_bounce_rate`). The rate is the
        sender's complaints (ARF reports matched to its emails) over its emails sent, in percent;
        it is judged from the 20th send so that the first complaint of a new sender does not stop
        it. An operator brings it back with ``reenable``. Returns whether it disabled the sender.
        """
        sender = (await conn.execute(select(tables.senders.c.status).where(
            tables.senders.c.id == sender_id, tables.senders.c.workspace_id == ws))).first()
        if sender is None or sender[0] != "active":
            return False
        e = emails.c
        counts = (await conn.execute(select(
            func.count(e.sent_at).label("sent"), func.count(e.complained_at).label("complained"),
        ).where(e.sender_id == sender_id, e.workspace_id == ws))).mappings().one()
        sent, complained = int(counts["sent"]), int(counts["complained"])
        if sent < MIN_SENDS_FOR_BOUNCE_RATE:
            return False
        rate = 100.0 * complained / sent
        if rate <= SENDER_COMPLAINT_RATE_THRESHOLD:
            return False
        await self.store.append(f"sender-{sender_id}", [sender_events.SenderDisabled(
            sender_id=sender_id, status="disabled",
            reason=f"complaint rate {rate:.2f}% over the {SENDER_COMPLAINT_RATE_THRESHOLD:g}% threshold "
                   f"({complained} complaints of {sent} sent)")], None, workspace_id=ws, conn=conn)
        return True

    async def check_campaign_health(self, conn: AsyncConnection, ws: str, campaign_id: str) -> bool:
        """Pause an active campaign whose bounce or complaint rate is over its own threshold.

        Mail providers judge the sender by these rates, so a campaign that keeps hitting dead
        addresses or spam buttons must stop before it ruins its senders (contract section 6). The
        rates are those of the campaign's stats: bounced (every type) over attempts (sent plus
        refused during SMTP), complaints over sent, in percent, judged once the campaign made
        ``MIN_SENDS_FOR_BOUNCE_RATE`` attempts so that the first unlucky bounce does not stop it.
        One campaign-scoped read over its sent and bounced emails (the (campaign_id, status)
        prefix of ``ix_rm_emails_queue``). Returns whether it paused the campaign.
        """
        c = tables.campaigns.c
        campaign = (await conn.execute(select(c.status, c.definition).where(
            c.id == campaign_id, c.workspace_id == ws))).first()
        if campaign is None or campaign[0] != "active":
            return False
        settings = definition_from_json(campaign[1]).settings if campaign[1] else CampaignSettings()
        e = emails.c
        counts = (await conn.execute(select(
            func.count().label("attempts"),
            func.count(e.sent_at).label("sent"),
            func.count(case((e.status == "bounced", 1))).label("bounced"),
            func.count(e.complained_at).label("complained"),
        ).where(e.campaign_id == campaign_id, e.status.in_(["sent", "bounced"])))).mappings().one()
        attempts, sent = int(counts["attempts"]), int(counts["sent"])
        bounced, complained = int(counts["bounced"]), int(counts["complained"])
        if attempts < MIN_SENDS_FOR_BOUNCE_RATE:
            return False
        bounce_limit, complaint_limit = settings.bounce_rate_threshold, settings.complaint_rate_threshold
        bounce_rate = 100.0 * bounced / attempts
        complaint_rate = 100.0 * complained / sent if sent else 0.0
        if bounce_rate > bounce_limit:
            reason = (f"bounce rate {bounce_rate:.2f}% over the campaign's {bounce_limit:g}% threshold "
                      f"({bounced} bounced of {attempts} attempts)")
        elif complaint_rate > complaint_limit:
            reason = (f"complaint rate {complaint_rate:.2f}% over the campaign's {complaint_limit:g}% threshold "
                      f"({complained} complaints of {sent} sent)")
        else:
            return False
        state, version = await self.reads.fold_campaign(conn, campaign_id)
        events = campaign_domain.decide_guard_pause(state, reason)
        if not events:
            return False
        await self.store.append(f"campaign-{campaign_id}", events, version, workspace_id=ws, conn=conn)
        return True

    async def after_attempts(self, conn: AsyncConnection, batches: dict[str, list[AppendBatch]]) -> None:
        """What a committed batch of SMTP outcomes means beyond each enrollment (called by the tick).

        A synchronous hard refusal stops the address everywhere in the workspace, a soft one may
        complete a run of soft bounces that suppresses it, and each campaign that attempted
        anything is checked against its guards. A campaign with no refusal in the batch can only
        cross a threshold by reaching its 20th attempt, so it is checked only while it is young:
        a bounded probe, not a count over a large campaign's emails at every batch.
        """
        attempted: dict[tuple[str, str], int] = {}
        refused: set[tuple[str, str]] = set()
        for ws, appends in sorted(batches.items()):
            for append in appends:
                for event in append.events:
                    if not isinstance(event, email_events.EmailSent | email_events.EmailBounced):
                        continue
                    key = (ws, event.campaign_id)
                    attempted[key] = attempted.get(key, 0) + 1
                    if isinstance(event, email_events.EmailBounced):
                        refused.add(key)
                        await self.after_bounce(conn, ws, event.contact_id, event.campaign_id, event.bounce_type)
        e = emails.c
        for (ws, campaign_id), count in sorted(attempted.items()):
            if (ws, campaign_id) not in refused:
                bound = MIN_SENDS_FOR_BOUNCE_RATE + count
                probe = select(literal(1)).select_from(emails).where(
                    e.campaign_id == campaign_id, e.status.in_(["sent", "bounced"])).limit(bound).subquery()
                if int((await conn.execute(select(func.count()).select_from(probe))).scalar() or 0) >= bound:
                    continue  # had 20 attempts before this batch, and sends alone only lower the rates
            await self.check_campaign_health(conn, ws, campaign_id)

    async def after_bounce(self, conn: AsyncConnection, ws: str, contact_id: str, campaign_id: str,
                           bounce_type: str) -> None:
        """A hard bounce stops the address in every campaign; a soft one may end a run that suppresses it."""
        if bounce_type == "hard":
            await self.stop_bounced_contact(conn, ws, contact_id)
        elif bounce_type == "soft":
            await self.check_soft_bounces(conn, ws, contact_id, campaign_id)

    async def stop_bounced_contact(self, conn: AsyncConnection, ws: str, contact_id: str) -> int:
        """A hard bounce says the mailbox does not exist, whichever campaign found out: every other
        open enrollment of the contact in the workspace stops now as ``bounced`` (its scheduled
        email cancelled), instead of hitting the same dead address hours later from another
        campaign. Returns how many were stopped."""
        return await self.stops.stop_contact(conn, ws, contact_id, "bounced", status="bounced")

    async def check_soft_bounces(self, conn: AsyncConnection, ws: str, contact_id: str, campaign_id: str) -> bool:
        """Suppress an address whose last ``soft_bounce_limit`` attempts all bounced soft.

        A soft bounce (mailbox full, temporarily disabled) lets the sequence go on, but an
        address that keeps bouncing is as good as dead and hurts the sender's reputation. "In a
        row" is across every campaign of the workspace, in the order the emails were attempted
        (sent or refused): a delivered email breaks the run, a report that an earlier email
        bounced after all changes that email's outcome, not its place. The facts come from the
        contact's enrollment streams (found through the contact_id index). The limit is the
        setting of the campaign whose email bounced. Returns whether it suppressed the address.
        """
        definition = (await conn.execute(select(tables.campaigns.c.definition).where(
            tables.campaigns.c.id == campaign_id))).scalar()
        limit = definition_from_json(definition).settings.soft_bounce_limit if definition \
            else DEFAULT_SOFT_BOUNCE_LIMIT
        contact = (await conn.execute(select(tables.contacts).where(
            tables.contacts.c.id == contact_id))).mappings().first()
        if contact is None or contact["erased"] or not contact["email"]:
            return False
        enrollment_ids = (await conn.execute(select(tables.enrollments.c.id).where(
            tables.enrollments.c.contact_id == contact_id, tables.enrollments.c.workspace_id == ws))).scalars().all()
        outcomes: dict[str, list[Any]] = {}  # email id -> [position of the attempt, what came of it]
        for stored in await self.store.read_streams([f"enrollment-{i}" for i in enrollment_ids], conn=conn):
            event = stored.event
            if isinstance(event, email_events.EmailSent):
                outcomes[event.email_id] = [stored.position, "delivered"]
            elif isinstance(event, email_events.EmailBounced):
                outcomes.setdefault(event.email_id, [stored.position, ""])[1] = event.bounce_type
        last = [kind for _, kind in sorted(outcomes.values())][-limit:]
        if len(last) < limit or any(kind != "soft" for kind in last):
            return False
        if await self.suppressions.suppressed(ws, [contact["email"]], conn):
            return False
        await self.store.append(f"suppressions-{ws}", [self.suppressions.event(
            "email", contact["email"], SOFT_BOUNCE_REASON, contact_id=contact_id)], None, workspace_id=ws,
            conn=conn)
        return True


__all__ = ["DEFAULT_SOFT_BOUNCE_LIMIT", "MIN_SENDS_FOR_BOUNCE_RATE", "SENDER_COMPLAINT_RATE_THRESHOLD",
           "DeliveryGuards"]
