"""``tick()``: plan under the log's lock, claim, send over SMTP, record outcomes, schedule what's next.

A claim (``email.claimed`` with the sender, a deterministic Message-ID and a lease) is committed
before SMTP is spoken; a claim whose outcome never came (a crash) becomes ``email.uncertain`` when
its lease runs out and is never sent again. So nothing is sent twice and nothing is silently lost.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

import structlog
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError, InterfaceError, InternalError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from engine.delivery import mime
from engine.delivery.smtp import SendResult, SmtpMailer
from engine.delivery.templates import render, render_header
from engine.domain import campaign as cd
from engine.domain.enrollment import schedule_step
from engine.schedule import Assignment, QueueItem, follow_up, next_due_at, plan
from engine.service.base import ServiceBase
from engine.service.planning import load_inputs
from events.catalog import email as em
from events.catalog import enrollment as en
from events.catalog import sender as se
from events.registry import Event, format_time, parse_time
from events.store import AppendBatch
from projections import tables as t
from projections.sending import emails

LEASE = timedelta(minutes=10)
RETRY_BACKOFF = (timedelta(minutes=5), timedelta(minutes=15), timedelta(minutes=45), timedelta(hours=2),
                 timedelta(hours=6))
# Waits (seconds) before retrying a delivery's database work after a lost connection: about 30 s in
# all, enough for a restart or a killed backend. Past that the claim is left to expire as uncertain.
DB_RETRY_DELAYS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0)
T = TypeVar("T")
log = structlog.get_logger("campaign_engine.sending")


def connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` is the database connection failing (restart, killed backend), not the statement."""
    if isinstance(exc, DBAPIError):
        return bool(exc.connection_invalidated) or isinstance(exc, InterfaceError | OperationalError | InternalError)
    return isinstance(exc, OSError)


async def with_db_retries(what: str, work: Callable[[int], Awaitable[T]]) -> T:
    """Run ``work(try_number)``, again after a lost connection (with backoff), at most len(delays)+1 times."""
    for number, delay in enumerate((0.0, *DB_RETRY_DELAYS)):
        if delay:
            await asyncio.sleep(delay)
        try:
            return await work(number)
        except Exception as exc:
            if number == len(DB_RETRY_DELAYS) or not connection_lost(exc):
                raise
            log.warning("database_retry", what=what, attempt=number + 1, error=str(exc).splitlines()[0][:200])
    raise AssertionError("unreachable")


@dataclass
class TickReport:
    """What one tick did, and when anything can happen next."""

    sent: int = 0
    claimed: int = 0
    deferred: int = 0
    failed: int = 0
    bounced: int = 0
    uncertain: int = 0
    skipped: int = 0
    activated: int = 0
    completed: int = 0
    next_due_at: datetime | None = None
    message_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Claim:
    assignment: Assignment
    message_id: str
    attempt: int


def bounce_type_for(result: SendResult) -> str:
    """A synchronous 5xx refusal: hard when the address is dead, block for policy/content refusals."""
    status = result.enhanced_status or ""
    if status.startswith("5.7") or status in ("5.3.4", "5.6.0"):
        return "block"
    return "hard"


class SendingService(ServiceBase):
    mailer: SmtpMailer

    async def tick(self) -> TickReport:
        """Do everything due at ``clock.now()``. Idempotent: a second call at the same time sends nothing."""
        now = self.now()
        report = TickReport()
        hold, report.skipped = await self._verify_mx(now)
        async with self.store.transaction() as conn:
            report.activated = await self._activate_due(conn, now)
            report.uncertain += await self._expire_leases(conn, now)
            claims, skipped = await self._claim(conn, now, hold)
            report.skipped += skipped
        report.claimed = len(claims)
        for claim in claims:
            await self._deliver(claim, now, report)
        async with self.store.transaction() as conn:
            report.completed = await self._complete_campaigns(conn)
        report.next_due_at = await self.next_due(now)
        return report

    async def next_due(self, now: datetime) -> datetime | None:
        """The earliest moment anything can happen next: a send, a launch, a lease running out."""
        async with self.store.reading() as conn:
            inputs = await load_inputs(conn, now)
            candidates = [next_due_at(now, inputs.items, inputs.campaigns, inputs.senders, inputs.usage,
                                      inputs.monthly_limits)]
            c = t.campaigns.c
            for r in (await conn.execute(select(c.launch_at).where(c.status == "scheduled", c.deleted.is_(False),
                                                                     c.launch_at.is_not(None)))).all():
                candidates.append(max(parse_time(r[0]), now + timedelta(microseconds=1)))
            lease = (await conn.execute(select(func.min(emails.c.lease_until)).where(
                emails.c.status == "claimed"))).scalar()
            if lease:
                candidates.append(max(parse_time(lease), now + timedelta(microseconds=1)))
        found = [c for c in candidates if c is not None]
        return min(found) if found else None

    # -- steps of a tick ------------------------------------------------------------------------
    async def _activate_due(self, conn: AsyncConnection, now: datetime) -> int:
        c = t.campaigns.c
        rows = (await conn.execute(select(c.id, c.workspace_id).where(c.status == "scheduled",
                                                                        c.deleted.is_(False)))).all()
        n = 0
        for cid, ws in rows:
            state, version = await self._fold_campaign(conn, cid)
            events = cd.decide_activate(state, now)
            if events:
                await self.store.append(f"campaign-{cid}", events, version, workspace_id=ws, conn=conn)
                n += 1
        return n

    async def _expire_leases(self, conn: AsyncConnection, now: datetime) -> int:
        """Claims whose lease ran out without an outcome (their worker died) become uncertain.

        As after an uncertain SMTP outcome, the email is never sent again but the sequence goes on
        from the claim's time (next step scheduled, or the enrollment completes) unless the
        enrollment was stopped meanwhile; otherwise it would stay open forever and its campaign
        would never complete.
        """
        e = emails.c
        rows = (await conn.execute(select(emails).where(e.status == "claimed",
                                                        e.lease_until < format_time(now)))).mappings().all()
        if not rows:
            return 0
        c, en_ = t.campaigns.c, t.enrollments.c
        definitions = {r[0]: json.loads(r[1]) for r in (await conn.execute(select(c.id, c.definition).where(
            c.id.in_(list({r["campaign_id"] for r in rows}))))).all()}
        open_ = {r[0] for r in (await conn.execute(select(en_.id).where(
            en_.id.in_([r["enrollment_id"] for r in rows]), en_.status.in_(["pending", "in_progress"])))).all()}
        by_ws: dict[str, list[AppendBatch]] = {}
        for r in rows:
            events: list[Event] = [
                em.EmailUncertain(enrollment_id=r["enrollment_id"], campaign_id=r["campaign_id"],
                                  contact_id=r["contact_id"], email_id=r["email_id"], step=r["step"],
                                  sender_id=r["sender_id"], message="claim expired without an SMTP outcome")]
            if r["enrollment_id"] in open_ and r["campaign_id"] in definitions:
                item = QueueItem(email_id=r["email_id"], enrollment_id=r["enrollment_id"],
                                 campaign_id=r["campaign_id"], contact_id=r["contact_id"], step=r["step"],
                                 due_at=parse_time(r["due_at"]), priority=r["priority"], sender_id=r["sender_id"],
                                 seq=r["seq"])
                events += self._next_step(Assignment(item, r["sender_id"], parse_time(r["claimed_at"])),
                                          definitions[r["campaign_id"]])
            by_ws.setdefault(r["workspace_id"], []).append(AppendBatch(f"enrollment-{r['enrollment_id']}", events))
        for ws, batches in by_ws.items():
            await self.store.append_many(batches, workspace_id=ws, conn=conn)
        return len(rows)

    async def _verify_mx(self, now: datetime) -> tuple[set[str], int]:
        """With ``verify_mx``, check each due first step's domain before it is claimed.

        Invalid (NXDOMAIN, null MX, no mail host): the enrollment is skipped as ``mx_invalid``.
        Unknown (timeout, SERVFAIL): the email is held back this tick and checked again later.
        Returns (email ids to hold back, enrollments skipped).
        """
        e, c, k = emails.c, t.campaigns.c, t.contacts.c
        async with self.store.reading() as conn:
            campaigns = (await conn.execute(select(c.id, c.definition).where(
                c.status.in_(["active", "scheduled"]), c.deleted.is_(False)))).all()
            checked = [cid for cid, d in campaigns if (json.loads(d).get("settings") or {}).get("verify_mx")]
            if not checked:
                return set(), 0
            due = (await conn.execute(
                select(e.email_id, e.enrollment_id, e.campaign_id, e.contact_id, e.workspace_id, k.email_domain)
                .join(t.contacts, k.id == e.contact_id)
                .where(e.status == "scheduled", e.step == 1, e.due_at <= format_time(now),
                       e.campaign_id.in_(checked)))).mappings().all()
        hold: set[str] = set()
        by_ws: dict[str, list[AppendBatch]] = {}
        for r in due:
            result = await self.mx.check(r["email_domain"])  # type: ignore[attr-defined]
            if result.status == "unknown":
                hold.add(r["email_id"])
            elif result.status == "invalid":
                base = {"enrollment_id": r["enrollment_id"], "campaign_id": r["campaign_id"],
                        "contact_id": r["contact_id"]}
                by_ws.setdefault(r["workspace_id"], []).append(AppendBatch(f"enrollment-{r['enrollment_id']}", [
                    em.EmailCancelled(**base, email_id=r["email_id"], step=1, reason="mx_invalid"),
                    en.EnrollmentSkipped(**base, reason="mx_invalid")]))
        skipped = 0
        if by_ws:
            async with self.store.transaction() as conn:
                for ws, batches in by_ws.items():
                    stored = await self.store.append_many(batches, workspace_id=ws, conn=conn)
                    skipped += sum(1 for s in stored if s.type == "enrollment.skipped")
        return hold, skipped

    async def _claim(self, conn: AsyncConnection, now: datetime, hold: set[str] | None = None
                     ) -> tuple[list[Claim], int]:
        inputs = await load_inputs(conn, now)
        if hold:
            inputs.items[:] = [i for i in inputs.items if i.email_id not in hold]
        p = plan(now, inputs.items, inputs.campaigns, inputs.senders, inputs.usage, inputs.monthly_limits)
        if not p.sends:
            return [], 0
        contact_ids = list({a.item.contact_id for a in p.sends})
        c = t.contacts.c
        contacts = {r["id"]: r for r in (await conn.execute(select(t.contacts).where(c.id.in_(contact_ids))))
                    .mappings()}
        senders = {r["id"]: r for r in (await conn.execute(select(t.senders).where(
            t.senders.c.id.in_(list({a.sender_id for a in p.sends}))))).mappings()}
        e = emails.c
        attempts = {r[0]: r[1] for r in (await conn.execute(select(e.email_id, e.attempt).where(
            e.email_id.in_([a.item.email_id for a in p.sends])))).all()}
        claims: list[Claim] = []
        skipped = 0
        by_ws: dict[str, list[AppendBatch]] = {}
        for a in p.sends:
            item = a.item
            ws = inputs.campaigns[item.campaign_id].workspace_id
            contact = contacts[item.contact_id]
            stop_reason = await self._send_time_block(conn, ws, contact)
            if stop_reason:
                skipped += 1
                by_ws.setdefault(ws, []).append(AppendBatch(f"enrollment-{item.enrollment_id}", [
                    em.EmailCancelled(enrollment_id=item.enrollment_id, campaign_id=item.campaign_id,
                                      contact_id=item.contact_id, email_id=item.email_id, step=item.step,
                                      reason=stop_reason),
                    en.EnrollmentStopped(enrollment_id=item.enrollment_id, campaign_id=item.campaign_id,
                                         contact_id=item.contact_id, reason=stop_reason,
                                         status="unsubscribed" if stop_reason == "unsubscribed" else "stopped")]))
                continue
            domain = senders[a.sender_id]["email"].rsplit("@", 1)[1]
            message_id = mime.message_id_for(item.enrollment_id, item.step, domain)
            attempt = int(attempts.get(item.email_id, 0)) + 1
            claims.append(Claim(a, message_id, attempt))
            by_ws.setdefault(ws, []).append(AppendBatch(f"enrollment-{item.enrollment_id}", [em.EmailClaimed(
                enrollment_id=item.enrollment_id, campaign_id=item.campaign_id, contact_id=item.contact_id,
                email_id=item.email_id, step=item.step, sender_id=a.sender_id, message_id=message_id,
                lease_until=now + timedelta(seconds=float(self.options.get("lease_seconds", LEASE.total_seconds()))),
                attempt=attempt)]))
        for ws, batches in by_ws.items():
            await self.store.append_many(batches, workspace_id=ws, conn=conn)
        return claims, skipped

    async def _send_time_block(self, conn: AsyncConnection, ws: str, contact: Any) -> str | None:
        """Suppressions and unsubscribes are honoured again at send time."""
        if contact["erased"]:
            return "erased"
        if contact["unsubscribed"]:
            return "unsubscribed"
        found = await self._suppressed(ws, [contact["email"], contact["email_domain"]], conn)  # type: ignore[attr-defined]
        return "suppressed" if found else None

    # -- delivery -------------------------------------------------------------------------------
    async def _deliver(self, claim: Claim, now: datetime, report: TickReport) -> None:
        """Send one claimed email and record its outcome.

        The database work on either side of SMTP is retried after a lost connection: before SMTP
        so that one blip does not abandon the tick's other claims (they would expire as uncertain,
        never sent), after it so that a known outcome is not turned into uncertain. A retried
        outcome is appended only while the email is still claimed by this attempt, so a commit
        that succeeded just before the connection dropped is not recorded twice.
        """
        item = claim.assignment.item

        async def load(_try: int) -> tuple[Any, Any, Any]:
            async with self.store.reading() as conn:
                cmp_row = (await conn.execute(select(t.campaigns).where(t.campaigns.c.id == item.campaign_id))
                           ).mappings().one()
                contact = (await conn.execute(select(t.contacts).where(t.contacts.c.id == item.contact_id))
                           ).mappings().one()
                sender = (await conn.execute(select(t.senders).where(
                    t.senders.c.id == claim.assignment.sender_id))).mappings().one()
            return cmp_row, contact, sender

        cmp_row, contact, sender = await with_db_retries("load", load)
        definition = json.loads(cmp_row["definition"])
        ws = cmp_row["workspace_id"]
        built = self._build(definition, contact, sender, item, claim, now, ws)
        result = await self.mailer.send(sender["id"], self._smtp_settings(sender), sender["email"],
                                        [contact["email"]], built.raw)
        events = self._outcome(result, claim, definition, built, now, report)

        async def record(number: int) -> None:
            async with self.store.transaction() as conn:
                if number and not await self._still_claimed(conn, item.email_id, claim.attempt):
                    return  # the earlier try did commit, or the lease ran out and it is uncertain now
                await self.store.append(f"enrollment-{item.enrollment_id}", events, None, workspace_id=ws,
                                        conn=conn)
                if result.outcome == "rejected":
                    await self.check_bounce_rate(conn, ws, sender["id"])  # type: ignore[attr-defined]
                if result.outcome == "auth_failed":
                    await self.store.append(f"sender-{sender['id']}", [se.SenderDisabled(
                        sender_id=sender["id"], status="disconnected",
                        reason=f"SMTP login failed: {result.message}")], None, workspace_id=ws, conn=conn)

        await with_db_retries("record outcome", record)

    async def _still_claimed(self, conn: AsyncConnection, email_id: str, attempt: int) -> bool:
        row = (await conn.execute(select(emails.c.status, emails.c.attempt).where(emails.c.email_id == email_id))
               ).first()
        return row is not None and row[0] == "claimed" and row[1] == attempt

    def _build(self, definition: dict[str, Any], contact: Any, sender: Any, item: Any, claim: Claim, now: datetime,
               ws: str) -> mime.BuiltMessage:
        steps = definition["steps"]
        step = steps[item.step - 1]
        settings = definition.get("settings") or {}
        data = {"first_name": contact["first_name"], "last_name": contact["last_name"], "email": contact["email"],
                "company": contact["company"],
                "custom_fields": json.loads(contact["custom_fields"]) if contact["custom_fields"] else {}}
        thread = None
        if step.get("same_thread", True) and item.step > 1:
            domain = sender["email"].rsplit("@", 1)[1]
            thread = mime.Thread(first_subject=render_header(steps[0]["subject"], data),
                                 previous_message_ids=tuple(mime.message_id_for(item.enrollment_id, k, domain)
                                                            for k in range(1, item.step)))
        tracking = mime.Tracking(public_url=self.public_url, secret=self.vault.token_key, email_id=item.email_id,
                                 opens=bool(settings.get("track_opens")), clicks=bool(settings.get("track_clicks")),
                                 unsubscribe=bool(settings.get("unsubscribe_link", True)), workspace_id=ws,
                                 contact_id=item.contact_id)
        to_name = " ".join(p for p in (contact["first_name"], contact["last_name"]) if p) or None
        return mime.build_message(
            message_id=claim.message_id, date=now, from_email=sender["email"], from_name=sender["from_name"],
            to_email=contact["email"], to_name=to_name, subject=render_header(step.get("subject") or "", data),
            body_html=render(step.get("body_html") or "", data, html=True),
            body_text=render(step["body_text"], data, html=False) if step.get("body_text") else None,
            thread=thread, tracking=tracking)

    def _outcome(self, result: SendResult, claim: Claim, definition: dict[str, Any], built: mime.BuiltMessage,
                 now: datetime, report: TickReport) -> list[Event]:
        a = claim.assignment
        item = a.item
        base: dict[str, Any] = {"enrollment_id": item.enrollment_id, "campaign_id": item.campaign_id,
                                "contact_id": item.contact_id, "email_id": item.email_id, "step": item.step}
        if result.outcome == "sent":
            report.sent += 1
            report.message_ids.append(claim.message_id)
            return [em.EmailSent(**base, sender_id=a.sender_id, message_id=claim.message_id, smtp_code=result.code,
                                 links=built.links), *self._next_step(a, definition)]
        if result.outcome == "uncertain":
            report.uncertain += 1
            return [em.EmailUncertain(**base, sender_id=a.sender_id, message=result.message),
                    *self._next_step(a, definition)]
        if result.outcome == "rejected":
            report.bounced += 1
            return [em.EmailBounced(**base, sender_id=a.sender_id, bounce_type=bounce_type_for(result),
                                    reason=result.message[:500], status=result.enhanced_status, code=result.code,
                                    source="smtp"),
                    en.EnrollmentStopped(enrollment_id=item.enrollment_id, campaign_id=item.campaign_id,
                                         contact_id=item.contact_id, reason="bounced", status="bounced")]
        # deferred, connect_failed, auth_failed: try again later, a bounded number of times
        if claim.attempt >= len(RETRY_BACKOFF) and result.outcome != "auth_failed":
            report.failed += 1
            return [em.EmailFailed(**base, sender_id=a.sender_id, code=result.code, message=result.message[:500]),
                    en.EnrollmentStopped(enrollment_id=item.enrollment_id, campaign_id=item.campaign_id,
                                         contact_id=item.contact_id, reason="failed", status="failed")]
        report.deferred += 1
        wait = RETRY_BACKOFF[min(claim.attempt, len(RETRY_BACKOFF)) - 1]
        return [em.EmailDeferred(**base, sender_id=a.sender_id, code=result.code, message=result.message[:500],
                                 retry_at=now + wait, attempt=claim.attempt)]

    def _next_step(self, a: Assignment, definition: dict[str, Any]) -> list[Event]:
        from engine.service.planning import campaign_plan

        item = a.item
        nxt = follow_up(a, campaign_plan({"id": item.campaign_id, "workspace_id": ""}, definition),
                        email_id=f"{item.enrollment_id}.{item.step + 1}")
        if nxt is None:
            return [en.EnrollmentCompleted(enrollment_id=item.enrollment_id, campaign_id=item.campaign_id,
                                           contact_id=item.contact_id)]
        return [schedule_step(item.enrollment_id, item.campaign_id, item.contact_id, nxt.step, nxt.due_at,
                              nxt.sender_id, nxt.priority, nxt.seq)]

    async def _complete_campaigns(self, conn: AsyncConnection) -> int:
        c, e = t.campaigns.c, t.enrollments.c
        open_count = (select(func.count()).select_from(t.enrollments)
                      .where(e.campaign_id == c.id, e.status.in_(["pending", "in_progress"])).scalar_subquery())
        total = select(func.count()).select_from(t.enrollments).where(e.campaign_id == c.id).scalar_subquery()
        rows = (await conn.execute(select(c.id, c.workspace_id).where(
            c.status == "active", c.deleted.is_(False), open_count == 0, total > 0))).all()
        for cid, ws in rows:
            state, version = await self._fold_campaign(conn, cid)
            await self.store.append(f"campaign-{cid}", cd.decide_transition(state, "complete"), version,
                                    workspace_id=ws, conn=conn)
        return len(rows)
