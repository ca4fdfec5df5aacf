"""``tick()``: plan under the log's lock, claim in one batch, send concurrently, record outcomes in batches.

A claim (``email.claimed`` with the sender, a deterministic Message-ID and a lease) is committed
before SMTP is spoken, and the process records how far it got (``engine/service/liveness.py``):
after a crash, a claim SMTP may have begun for becomes ``email.uncertain`` and is never sent again;
one not yet reached goes back to the queue; one whose building killed three processes is
quarantined (``email.quarantined``). So nothing is sent twice, nothing is silently lost, and one
poison message cannot stop the queue.

The shape of one tick::

    load_due (bounded reads + usage counters)  ->  PlanRound.take(budget)  ->  claim batch, commit
    -> build every message, record "sending"  ->  SMTP, concurrently (per-sender pools, a global cap)
    -> outcomes, batched commits  ->  (suspects of earlier crashes: built and sent one by one)
    -> PlanRound.requeue(follow-ups, retries)  ->  next_due_at (no second load of the queue)
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import structlog
from sqlalchemy import exists, func, select
from sqlalchemy.exc import DBAPIError, InterfaceError, InternalError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from engine import metrics
from engine.clock import Clock
from engine.delivery.content import mime
from engine.delivery.content.compose import ComposedEmail, compose_email
from engine.delivery.outbound.smtp import SendResult, SmtpMailer, SmtpSettings
from engine.domain import campaign as campaign_domain
from engine.domain import enrollment as enrollment_domain
from engine.domain.definition import CampaignDefinition
from engine.domain.enrollment import Attempt, ClaimedEmail, NextStep
from engine.domain.variants import choose_variant
from engine.schedule import Assignment, CampaignPlan, PlanRound, QueueItem, follow_up
from engine.service import liveness
from engine.service.base import Reads, SenderConnections, new_id
from engine.service.guards import DeliveryGuards
from engine.service.planner_inputs import (
    PlannerInputs,
    is_placeholder,
    load_due,
    load_usage,
    parsed_campaign,
)
from engine.service.signals import StopNotes
from engine.service.suppressions import Suppressions
from engine.service.variants import record_variant_winners
from events.catalog import email as email_events
from events.catalog import enrollment as enrollment_events
from events.catalog import sender as sender_events
from events.context import acting
from events.registry import Event, format_time, parse_time
from events.store import AppendBatch, EventStore
from events.vault import Vault
from projections import tables
from projections.sending import emails

LEASE = timedelta(minutes=10)
# Waits (seconds) before retrying a delivery's database work after a lost connection: about 30 s in
# all, enough for a restart or a killed backend. Past that the claim is left to expire as uncertain.
DB_RETRY_DELAYS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0)
CLAIM_BATCH = 500  # emails one tick claims at most (engine option ``claim_batch``)
DISCONNECT_AFTER_FAILURES = 5  # connection or login failures in a row (option ``disconnect_after_failures``)
MAX_CONCURRENT_SENDS = 64  # SMTP transactions in flight at once (engine option ``max_concurrent_sends``)
OUTCOME_BATCH = 200  # outcomes recorded per transaction at most
OUTCOME_LINGER = 0.01  # seconds an outcome waits for others to share its transaction
ResultT = TypeVar("ResultT")
# Event type -> the outcome it records (a TickReport field and a /metrics label).
OUTCOME_OF = {"email.sent": "sent", "email.uncertain": "uncertain", "email.bounced": "bounced",
              "email.failed": "failed", "email.deferred": "deferred", "email.released": "released"}
log = structlog.get_logger("campaign_engine.sending")

if TYPE_CHECKING:  # the resolver's module pulls in dnspython: imported where the checker is built
    from engine.delivery.lookups.mx import MxChecker


def connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` is the database connection failing (restart, killed backend), not the statement."""
    if isinstance(exc, DBAPIError):
        return bool(exc.connection_invalidated) or isinstance(exc, InterfaceError | OperationalError | InternalError)
    return isinstance(exc, OSError)


async def with_db_retries(what: str, work: Callable[[int], Awaitable[ResultT]]) -> ResultT:
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
    released: int = 0  # claims given back before SMTP (a stop or a shutdown came first)
    skipped: int = 0
    activated: int = 0
    completed: int = 0
    next_due_at: datetime | None = None
    message_ids: list[str] = field(default_factory=list)
    # emails sent per "workspace/campaign/sender", for the runtime's tick line
    sent_by: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Claim:
    """A claimed email with what its delivery needs, loaded once with the claim."""

    assignment: Assignment
    email: ClaimedEmail
    workspace_id: str
    contact: Any
    sender: Any


@dataclass(slots=True)
class _Outcome:
    claim: Claim
    result: SendResult | None  # None: released before SMTP (see ``release``)
    links: tuple[str, ...] | None
    release: Release | None = None
    variant: str | None = None  # the A/B variant composed, recorded with the outcome


@dataclass(frozen=True, slots=True)
class Release:
    """Why a claim went back before its SMTP transaction began, and whether that ends the enrollment."""

    reason: str
    terminal: bool
    enrollment_open: bool


def _next_step(assignment: Assignment, plan: CampaignPlan) -> QueueItem | None:
    item = assignment.item
    return follow_up(assignment, plan, email_id=f"{item.enrollment_id}.{item.step + 1}")


def _as_next(item: QueueItem | None) -> NextStep | None:
    if item is None:
        return None
    return NextStep(step=item.step, due_at=item.due_at, sender_id=item.sender_id, priority=item.priority,
                    seq=item.seq)


class SendingService:
    """``tick()`` and ``next_due()``: the planner's round, claims, SMTP and outcomes (see the module text).

    The claims of a tick in flight are checked again when ``stop_notes`` counts a committed stop,
    and released when it drains for a shutdown.
    """

    def __init__(self, store: EventStore, clock: Clock, vault: Vault, options: dict[str, Any], public_url: str, *,
                 mailer: SmtpMailer, mx: MxChecker, suppressions: Suppressions, guards: DeliveryGuards,
                 stop_notes: StopNotes) -> None:
        self.store = store
        self.clock = clock
        self.vault = vault
        self.options = options
        self.public_url = public_url
        self.mailer = mailer
        self.mx = mx
        self.suppressions = suppressions
        self.guards = guards
        self.stop_notes = stop_notes
        self.reads = Reads(store)
        self.connections = SenderConnections(vault, options)
        self._worker: str | None = None  # this process's id in engine_workers, made at its first claim
        self._sender_failures: dict[str, int] = {}  # connection or login failures in a row, per sender

    async def tick(self) -> TickReport:
        """Do everything due at ``clock.now()``. Idempotent: a second call at the same time sends nothing."""
        started = time.perf_counter()
        try:
            with acting(actor="system:runtime"):
                return await self._tick()
        finally:
            metrics.observe_tick(time.perf_counter() - started)

    async def _tick(self) -> TickReport:
        self.stop_notes.resume()  # a shutdown drains the tick in flight, not the engine's later use
        now = self.clock.now()
        report = TickReport()
        hold, report.skipped, mx_retry_at = await self._verify_mx(now)
        budget = self._claim_budget()
        async with self.store.transaction() as conn:
            report.activated = await self._activate_due(conn, now)
            report.uncertain += await self._expire_leases(conn, now)
            inputs = await load_due(conn, now, budget, frozenset(hold))
            planned = PlanRound(now, inputs.items, inputs.campaigns, inputs.senders, inputs.usage,
                                inputs.monthly_limits)
            assignments = planned.take(budget)
            claims, skipped = await self._claim(conn, now, assignments, inputs)
            deaths: dict[str, int] = {}
            if claims:
                claimed_ids = [claim.email.email_id for claim in claims]
                deaths = await liveness.deaths_of(conn, claimed_ids)
                await liveness.hold(conn, self._worker_id(), claimed_ids, now,
                                    [email_id for email_id in claimed_ids if email_id not in deaths])
        report.skipped += skipped
        report.claimed = len(claims)
        await self._deliver_all(claims, inputs, now, report, planned, deaths)

        async def complete(_try: int) -> int:
            async with self.store.transaction() as conn:
                if claims:
                    await liveness.let_go(conn, self._worker_id())
                    await liveness.clear_suspects(conn, list(deaths))  # they all have outcomes now
                return await self._complete_campaigns(conn)

        # After the sends, a lost connection must not fail the tick: its outcomes are recorded.
        report.completed = await with_db_retries("complete campaigns", complete)
        if len(assignments) >= budget or inputs.exhausted(a.item for a in assignments):
            report.next_due_at = now  # more is due at this very instant: the caller ticks again
        else:
            report.next_due_at = await with_db_retries(
                "next due", lambda _try: self._next_due(now, planned, inputs, mx_retry_at))
        return report

    async def next_due(self, now: datetime) -> datetime | None:
        """The earliest moment anything can happen next: a send, a launch, a lease running out."""
        async with self.store.reading() as conn:
            inputs = await load_due(conn, now, self._claim_budget())
        planned = PlanRound(now, inputs.items, inputs.campaigns, inputs.senders, inputs.usage, inputs.monthly_limits)
        return await self._next_due(now, planned, inputs)

    def _worker_id(self) -> str:
        """This process's name in ``engine_workers`` (see ``engine/service/liveness.py``)."""
        if self._worker is None:
            self._worker = new_id("wrk", self.clock.now())
        return self._worker

    def _dead_after(self) -> float:
        return float(self.options.get("dead_after_seconds", liveness.DEAD_AFTER_SECONDS))

    async def _heartbeat(self) -> None:
        """While a tick sends, tell the other processes this one is alive (every few seconds)."""
        every = float(self.options.get("heartbeat_seconds", liveness.HEARTBEAT_SECONDS))
        while True:
            await asyncio.sleep(every)
            try:
                async with self.store.transaction() as conn:
                    await liveness.beat(conn, self._worker_id(), self.clock.now())
            except Exception as exc:  # noqa: BLE001 - a missed beat is retried at the next one
                log.warning("heartbeat_failed", error=str(exc).splitlines()[0][:200] if str(exc) else repr(exc))

    def _claim_budget(self) -> int:
        """Emails one tick claims at most: the option ``claim_batch``, else ``CAMPAIGN_ENGINE_CLAIM_BATCH``.

        Larger batches send faster; a worker killed mid-batch leaves that many claims to expire as
        uncertain (never re-sent), so an operator may trade one for the other.
        """
        configured = self.options.get("claim_batch") or os.environ.get("CAMPAIGN_ENGINE_CLAIM_BATCH") or CLAIM_BATCH
        return max(1, int(configured))

    async def _next_due(self, now: datetime, planned: PlanRound, inputs: PlannerInputs,
                        mx_retry_at: datetime | None = None) -> datetime | None:
        async with self.store.reading() as conn:
            usage = await load_usage(conn, now, inputs.campaigns, list(inputs.senders),
                                     sorted({c.workspace_id for c in inputs.campaigns.values()}))
            candidates = [planned.next_due_at(usage)]
            c = tables.campaigns.c
            launch = (await conn.execute(select(func.min(c.launch_at)).where(
                c.status == "scheduled", c.deleted.is_(False), c.launch_at.is_not(None)))).scalar()
            lease = (await conn.execute(select(func.min(emails.c.lease_until)).where(
                emails.c.status == "claimed"))).scalar()
            orphan = await liveness.next_orphan_at(conn, self._dead_after())
        after = now + timedelta(microseconds=1)
        candidates += [max(parse_time(value), after) for value in (launch, lease) if value]
        if orphan is not None:
            candidates.append(max(orphan, after))
        if mx_retry_at is not None:
            candidates.append(max(mx_retry_at, after))
        found = [c for c in candidates if c is not None]
        return min(found) if found else None

    # -- steps of a tick ------------------------------------------------------------------------
    async def _activate_due(self, conn: AsyncConnection, now: datetime) -> int:
        c = tables.campaigns.c
        rows = (await conn.execute(select(c.id, c.workspace_id).where(
            c.status == "scheduled", c.deleted.is_(False),
            (c.launch_at.is_(None)) | (c.launch_at <= format_time(now))))).all()
        count = 0
        for campaign_id, workspace_id in rows:
            state, version = await self.reads.fold_campaign(conn, campaign_id)
            events = campaign_domain.decide_activate(state, now)
            if events:
                await self.store.append(f"campaign-{campaign_id}", events, version, workspace_id=workspace_id,
                                        conn=conn)
                count += 1
        return count

    async def _expire_leases(self, conn: AsyncConnection, now: datetime) -> int:
        """Claims whose worker died or whose lease ran out without an outcome.

        What the worker recorded decides (see ``engine/service/liveness.py``): a claim SMTP may have
        begun for becomes uncertain and is never re-sent; one it had not reached goes back to the
        queue; one it was building when it died counts a death against that email, and is
        quarantined at ``quarantine_after_deaths``. Returns the number recorded uncertain.
        """
        e = emails.c
        orphans = await liveness.orphaned(conn, now, self._dead_after())
        not_started = [*orphans.suspects, *orphans.untouched]
        lost = e.lease_until < format_time(now)
        if orphans.maybe_sent:  # their worker stopped beating: no need to wait for the lease
            lost = lost | e.email_id.in_(orphans.maybe_sent)
        if not_started:
            lost = lost | e.email_id.in_(not_started)
        rows = (await conn.execute(select(emails).where(e.status == "claimed", lost))).mappings().all()
        await liveness.forget(conn, orphans.dead_workers)
        if not rows:
            return 0
        c, enrolled, people = tables.campaigns.c, tables.enrollments.c, tables.contacts.c
        plans = {row["id"]: parsed_campaign(row)[1] for row in (await conn.execute(
            select(c.id, c.workspace_id, c.definition).where(c.id.in_(list({r["campaign_id"] for r in rows}))))
        ).mappings()}
        still_open = {r[0] for r in (await conn.execute(select(enrolled.id).where(
            enrolled.id.in_([r["enrollment_id"] for r in rows]),
            enrolled.status.in_(["pending", "in_progress"])))).all()}
        recovering = set(not_started)
        domains: dict[str, str] = {}
        if recovering:  # a release uncounts the claim in its recipient's per-domain buckets
            domains = dict((await conn.execute(select(people.id, people.email_domain).where(
                people.id.in_([r["contact_id"] for r in rows if r["email_id"] in recovering])))).all())
        deaths = await liveness.deaths_of(conn, orphans.suspects)
        quarantine_after = max(1, int(self.options.get("quarantine_after_deaths", liveness.QUARANTINE_AFTER_DEATHS)))
        counted: dict[str, int] = {}
        quarantined: list[str] = []
        by_workspace: dict[str, list[AppendBatch]] = {}
        uncertain = 0
        for r in rows:
            claimed_at = parse_time(r["claimed_at"])
            plan = plans.get(r["campaign_id"])
            open_ = r["enrollment_id"] in still_open and plan is not None
            claim = ClaimedEmail(enrollment_id=r["enrollment_id"], campaign_id=r["campaign_id"],
                                 contact_id=r["contact_id"], email_id=r["email_id"], step=r["step"],
                                 sender_id=r["sender_id"], message_id=r["message_id"] or "", attempt=r["attempt"],
                                 claimed_at=claimed_at, timezone=plan.schedule.timezone if plan else "UTC",
                                 domain=domains.get(r["contact_id"]))
            if r["email_id"] in recovering:
                died = deaths.get(r["email_id"], 0) + 1 if r["email_id"] in orphans.suspects else 0
                events = enrollment_domain.decide_worker_died(claim, died, quarantine_after=quarantine_after,
                                                              still_open=open_)
                if died:
                    log.warning("worker_died_building_email", email_id=r["email_id"], deaths=died,
                                campaign_id=r["campaign_id"], workspace_id=r["workspace_id"],
                                quarantined=died >= quarantine_after)
                    if died >= quarantine_after:
                        quarantined.append(r["email_id"])
                    else:
                        counted[r["email_id"]] = died
            else:
                next_item = None
                if plan is not None:
                    item = QueueItem(email_id=r["email_id"], enrollment_id=r["enrollment_id"],
                                     campaign_id=r["campaign_id"], contact_id=r["contact_id"], step=r["step"],
                                     due_at=parse_time(r["due_at"]), priority=r["priority"],
                                     sender_id=r["sender_id"], seq=r["seq"])
                    next_item = _next_step(Assignment(item, r["sender_id"], claimed_at), plan)
                events = enrollment_domain.decide_expired(claim, _as_next(next_item), still_open=open_)
                uncertain += 1
            by_workspace.setdefault(r["workspace_id"], []).append(
                AppendBatch(f"enrollment-{r['enrollment_id']}", events))
        for workspace_id, batches in by_workspace.items():
            await self.store.append_many(batches, workspace_id=workspace_id, conn=conn)
        await liveness.count_deaths(conn, counted)
        await liveness.clear_suspects(conn, quarantined)
        return uncertain

    async def _verify_mx(self, now: datetime) -> tuple[set[str], int, datetime | None]:
        """With ``verify_mx``, check each due first step's domain before it is claimed.

        Invalid (NXDOMAIN, null MX, no mail host): the enrollment is skipped as ``mx_invalid``.
        Unknown (timeout, SERVFAIL): the email is held back until the checker's ``retry_at``
        (5 min, then longer), which ``next_due_at`` reports. Returns (email ids to hold back,
        enrollments skipped, the earliest retry time of a held email).
        """
        e, c, k = emails.c, tables.campaigns.c, tables.contacts.c
        retry_at: datetime | None = None
        async with self.store.reading() as conn:
            campaigns = (await conn.execute(select(c.id, c.workspace_id, c.definition).where(
                c.status.in_(["active", "scheduled"]), c.deleted.is_(False)))).mappings().all()
            checked = [row["id"] for row in campaigns
                       if parsed_campaign(row)[0].settings.verify_mx]
            if not checked:
                return set(), 0, None
            due = (await conn.execute(
                select(e.email_id, e.enrollment_id, e.campaign_id, e.contact_id, e.workspace_id, k.email_domain)
                .join(tables.contacts, k.id == e.contact_id)
                .where(e.status == "scheduled", e.step == 1, e.due_at <= format_time(now),
                       e.campaign_id.in_(checked)))).mappings().all()
        hold: set[str] = set()
        by_workspace: dict[str, list[AppendBatch]] = {}
        # Off the claim path: every domain at most once, concurrently, answered from the cache
        # while its TTL lasts; no transaction is open meanwhile.
        results = await self.mx.check_many({r["email_domain"] for r in due})
        for r in due:
            result = results[r["email_domain"]]
            if result.status == "unknown":
                hold.add(r["email_id"])
                if result.retry_at is not None:
                    retry_at = result.retry_at if retry_at is None else min(retry_at, result.retry_at)
            elif result.status == "invalid":
                base = {"enrollment_id": r["enrollment_id"], "campaign_id": r["campaign_id"],
                        "contact_id": r["contact_id"]}
                by_workspace.setdefault(r["workspace_id"], []).append(
                    AppendBatch(f"enrollment-{r['enrollment_id']}", [
                        email_events.EmailCancelled(**base, email_id=r["email_id"], step=1, reason="mx_invalid"),
                        enrollment_events.EnrollmentSkipped(**base, reason="mx_invalid")]))
        skipped = 0
        if by_workspace:
            async with self.store.transaction() as conn:
                for workspace_id, batches in by_workspace.items():
                    stored = await self.store.append_many(batches, workspace_id=workspace_id, conn=conn)
                    skipped += sum(1 for s in stored if s.type == "enrollment.skipped")
        return hold, skipped, retry_at

    async def _claim(self, conn: AsyncConnection, now: datetime, assignments: Sequence[Assignment],
                     inputs: PlannerInputs) -> tuple[list[Claim], int]:
        """Append ``email.claimed`` for every assignment (one batch), or stop those that may no longer go.

        The rows each delivery needs (contact, sender) are read here once, in two set-based reads.
        """
        assignments = [a for a in assignments if not is_placeholder(a.item)]
        if not assignments:
            return [], 0
        k, s, e = tables.contacts.c, tables.senders.c, emails.c
        contacts = {r["id"]: r for r in (await conn.execute(select(tables.contacts).where(
            k.id.in_(list({a.item.contact_id for a in assignments}))))).mappings()}
        senders = {r["id"]: r for r in (await conn.execute(select(tables.senders).where(
            s.id.in_(list({a.sender_id for a in assignments}))))).mappings()}
        attempts = dict((await conn.execute(select(e.email_id, e.attempt).where(
            e.email_id.in_([a.item.email_id for a in assignments])))).all())
        blocked = await self._send_time_blocks(conn, assignments, inputs, contacts)
        lease = timedelta(seconds=float(self.options.get("lease_seconds", LEASE.total_seconds())))
        claims: list[Claim] = []
        skipped = 0
        by_workspace: dict[str, list[AppendBatch]] = {}
        for assignment in assignments:
            item = assignment.item
            plan = inputs.campaigns[item.campaign_id]
            workspace_id = plan.workspace_id
            stream = f"enrollment-{item.enrollment_id}"
            reason = blocked.get(item.email_id)
            if reason:
                skipped += 1
                by_workspace.setdefault(workspace_id, []).append(AppendBatch(stream, [
                    email_events.EmailCancelled(enrollment_id=item.enrollment_id, campaign_id=item.campaign_id,
                                                contact_id=item.contact_id, email_id=item.email_id, step=item.step,
                                                reason=reason),
                    enrollment_events.EnrollmentStopped(
                        enrollment_id=item.enrollment_id, campaign_id=item.campaign_id, contact_id=item.contact_id,
                        reason=reason, status="unsubscribed" if reason == "unsubscribed" else "stopped")]))
                continue
            sender = senders[assignment.sender_id]
            message_id = mime.message_id_for(item.enrollment_id, item.step, sender["email"].rsplit("@", 1)[1])
            claimed = ClaimedEmail(enrollment_id=item.enrollment_id, campaign_id=item.campaign_id,
                                   contact_id=item.contact_id, email_id=item.email_id, step=item.step,
                                   sender_id=assignment.sender_id, message_id=message_id,
                                   attempt=int(attempts.get(item.email_id, 0)) + 1, claimed_at=now,
                                   timezone=plan.schedule.timezone,
                                   domain=item.domain or contacts[item.contact_id]["email_domain"])
            claims.append(Claim(assignment, claimed, workspace_id, contacts[item.contact_id], sender))
            by_workspace.setdefault(workspace_id, []).append(AppendBatch(stream, [email_events.EmailClaimed(
                enrollment_id=item.enrollment_id, campaign_id=item.campaign_id, contact_id=item.contact_id,
                email_id=item.email_id, step=item.step, sender_id=assignment.sender_id, message_id=message_id,
                lease_until=now + lease, attempt=claimed.attempt, timezone=claimed.timezone,
                recipient_domain=claimed.domain)]))
        for workspace_id, batches in by_workspace.items():
            await self.store.append_many(batches, workspace_id=workspace_id, conn=conn)
        return claims, skipped

    async def _send_time_blocks(self, conn: AsyncConnection, assignments: Sequence[Assignment],
                                inputs: PlannerInputs, contacts: dict[str, Any]) -> dict[str, str]:
        """Erasure, unsubscribes and suppressions are honoured again at send time: email id -> reason."""
        blocked: dict[str, str] = {}
        values_by_workspace: dict[str, list[str]] = {}
        for assignment in assignments:
            contact = contacts[assignment.item.contact_id]
            if contact["erased"]:
                blocked[assignment.item.email_id] = "erased"
            elif contact["unsubscribed"]:
                blocked[assignment.item.email_id] = "unsubscribed"
            else:
                values_by_workspace.setdefault(inputs.campaigns[assignment.item.campaign_id].workspace_id, []).extend(
                    [contact["email"], contact["email_domain"]])
        for workspace_id, values in values_by_workspace.items():
            found = await self.suppressions.suppressed(workspace_id, values, conn)
            if not found:
                continue
            for assignment in assignments:
                contact = contacts[assignment.item.contact_id]
                if assignment.item.email_id in blocked or \
                        inputs.campaigns[assignment.item.campaign_id].workspace_id != workspace_id:
                    continue
                if {self.vault.lookup_hash(contact["email"]), self.vault.lookup_hash(contact["email_domain"])} & found:
                    blocked[assignment.item.email_id] = "suppressed"
        return blocked

    # -- delivery -------------------------------------------------------------------------------
    async def _deliver_all(self, claims: Sequence[Claim], inputs: PlannerInputs, now: datetime, report: TickReport,
                           planned: PlanRound, deaths: dict[str, int]) -> None:
        """Build every claim's message, then send them concurrently, recording outcomes in batches.

        What the process is doing is recorded before it does it (see ``engine/service/liveness.py``):
        the batch is built before any of its SMTP begins, then announced as sending. Claims under
        suspicion (a worker died building them before) come last, fewest deaths first, each built
        and sent alone after being announced, so that a poison message kills at most the process
        building it and is named exactly; the rest of the batch has gone out by then.
        """
        if not claims:
            return
        worker, claimed_ids = self._worker_id(), [claim.email.email_id for claim in claims]
        since = self.stop_notes.generation  # stops committed from here on are checked before each SMTP
        sending: list[str] = []

        async def announce(current: Sequence[str]) -> None:
            async def write(_try: int) -> None:
                async with self.store.transaction() as conn:
                    await liveness.progress(conn, worker, claimed_ids, sending, current)
            await with_db_retries("record progress", write)

        clean = [claim for claim in claims if claim.email.email_id not in deaths]
        if clean:
            built = {claim.email.email_id: self._build(claim, inputs, now) for claim in clean}
            sending.extend(built)
            await announce(())
            await self._send_batch(clean, built, inputs, now, report, planned, since)
        for claim in sorted((c for c in claims if c.email.email_id in deaths), key=lambda c: deaths[c.email.email_id]):
            await announce([claim.email.email_id])
            built = {claim.email.email_id: self._build(claim, inputs, now)}
            sending.append(claim.email.email_id)
            await announce(())
            await self._send_batch([claim], built, inputs, now, report, planned, since)

    def _build(self, claim: Claim, inputs: PlannerInputs, now: datetime) -> ComposedEmail | Exception:
        """The claim's message, or the error building it (recorded as a failed email, never raised)."""
        try:
            return self._compose(inputs.definitions[claim.email.campaign_id], claim, now)
        except Exception as exc:  # noqa: BLE001 - a message that cannot be built is recorded as failed
            return exc

    async def _send_batch(self, claims: Sequence[Claim], built: dict[str, ComposedEmail | Exception],
                          inputs: PlannerInputs, now: datetime, report: TickReport, planned: PlanRound,
                          since: int) -> None:
        """Send `claims` (their messages built) concurrently and record the outcomes in batches.

        Each sender's connections are capped by the mailer's pool, and all sends by
        ``max_concurrent_sends``. An outcome waits at most a few milliseconds for others to share
        its transaction, so a crash loses little: a claim whose outcome was not recorded expires
        as uncertain and is never sent again.
        """
        gate = asyncio.Semaphore(max(1, int(self.options.get("max_concurrent_sends", MAX_CONCURRENT_SENDS))))
        done: asyncio.Queue[_Outcome] = asyncio.Queue()
        settings: dict[str, SmtpSettings] = {}
        stops: dict[str, Release] = {}
        checked = [since]  # the stop generation `stops` was last read at (the tick's, at first)
        refreshing = asyncio.Lock()

        async def released(claim: Claim) -> Release | None:
            if self.stop_notes.draining:
                return Release("shutdown", terminal=False, enrollment_open=True)
            if self.stop_notes.generation != checked[0]:
                async with refreshing:  # concurrent sends share one read per stop
                    if self.stop_notes.generation != checked[0]:
                        target = self.stop_notes.generation
                        stops.update(await with_db_retries("check stops", lambda _try: self._stops_among(claims)))
                        checked[0] = target
            return stops.get(claim.email.email_id)

        async def send(claim: Claim) -> None:
            # every line this claim's delivery causes (ours, the SMTP client's) names its owners
            with structlog.contextvars.bound_contextvars(workspace_id=claim.workspace_id,
                                                         campaign_id=claim.email.campaign_id,
                                                         sender_id=claim.email.sender_id):
                await deliver(claim)

        async def deliver(claim: Claim) -> None:
            async with gate:
                release = await released(claim)
                if release is not None:
                    done.put_nowait(_Outcome(claim, None, None, release))
                    return
                try:
                    composed = built[claim.email.email_id]
                    if isinstance(composed, Exception):
                        raise composed
                    sender = claim.sender
                    if sender["id"] not in settings:
                        settings[sender["id"]] = self.connections.smtp(sender)
                    result = await self.mailer.send(sender["id"], settings[sender["id"]], sender["email"],
                                                    [composed.recipient], composed.raw,
                                                    max_connections=sender["max_connections"])
                    links: tuple[str, ...] | None = composed.links
                    variant = composed.variant
                except Exception as exc:  # a message that cannot be built: never sent, recorded as failed
                    log.error("compose_failed", email_id=claim.email.email_id, error=repr(exc)[:300])
                    result, links = SendResult("rejected", None, f"message could not be built: {exc!r}"[:300]), None
                    variant = None
            done.put_nowait(_Outcome(claim, result, links, variant=variant))

        tasks = [asyncio.create_task(send(claim)) for claim in claims]
        tasks.append(asyncio.create_task(self._heartbeat()))
        try:
            remaining = len(claims)  # the heartbeat task never puts an outcome
            while remaining:
                batch = [await done.get()]
                if remaining > 1:
                    await asyncio.sleep(OUTCOME_LINGER)  # let the outcomes in flight share the transaction
                while len(batch) < OUTCOME_BATCH and not done.empty():
                    batch.append(done.get_nowait())
                remaining -= len(batch)
                await self._record(batch, inputs, now, report, planned)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _record(self, batch: Sequence[_Outcome], inputs: PlannerInputs, now: datetime, report: TickReport,
                      planned: PlanRound) -> None:
        """Append the outcomes of `batch` in one transaction (retried after a lost connection)."""
        by_workspace: dict[str, list[AppendBatch]] = {}
        rejected: set[tuple[str, str]] = set()
        disconnecting: dict[tuple[str, str], str] = {}
        requeue: list[QueueItem] = []
        for outcome in batch:
            claim, result = outcome.claim, outcome.result
            if result is None:
                assert outcome.release is not None
                events = self._release_events(claim, outcome.release)
                self._count(events, claim, report)
                by_workspace.setdefault(claim.workspace_id, []).append(
                    AppendBatch(f"enrollment-{claim.email.enrollment_id}", events))
                if not outcome.release.terminal and outcome.release.reason != "paused":
                    item = claim.assignment.item  # may go again, through another sender if need be
                    requeue.append(QueueItem(email_id=item.email_id, enrollment_id=item.enrollment_id,
                                             campaign_id=item.campaign_id, contact_id=item.contact_id,
                                             step=item.step, due_at=item.due_at, priority=item.priority,
                                             sender_id=None if item.step == 1 else item.sender_id,
                                             contact_timezone=item.contact_timezone, seq=item.seq))
                continue
            plan = inputs.campaigns[claim.email.campaign_id]
            # the next step, for the outcomes after which the sequence may go on (a soft refusal too)
            goes_on = result.outcome in ("sent", "uncertain", "rejected")
            following = _next_step(claim.assignment, plan) if goes_on else None
            attempt = Attempt(outcome=result.outcome, code=result.code, message=result.message,
                              enhanced_status=result.enhanced_status)
            events = enrollment_domain.decide_outcome(claim.email, attempt, _as_next(following), now,
                                                      links=outcome.links, variant=outcome.variant)
            self._count(events, claim, report)
            for event in events:
                if isinstance(event, email_events.EmailScheduled) and following is not None:
                    requeue.append(following)
                elif isinstance(event, email_events.EmailDeferred):
                    item = claim.assignment.item
                    requeue.append(QueueItem(email_id=item.email_id, enrollment_id=item.enrollment_id,
                                             campaign_id=item.campaign_id, contact_id=item.contact_id, step=item.step,
                                             due_at=event.retry_at, priority=item.priority,
                                             sender_id=None if item.step == 1 else claim.email.sender_id,
                                             contact_timezone=item.contact_timezone, seq=item.seq))
            by_workspace.setdefault(claim.workspace_id, []).append(
                AppendBatch(f"enrollment-{claim.email.enrollment_id}", events))
            if result.outcome == "rejected":
                rejected.add((claim.workspace_id, claim.email.sender_id))
            if self._count_failure(claim.email.sender_id, result):
                disconnecting[(claim.workspace_id, claim.email.sender_id)] = result.message

        async def write(number: int) -> None:
            async with self.store.transaction() as conn:
                batches = by_workspace
                # Only what is still claimed by this attempt: an earlier try may have committed, or
                # another process may have judged this one dead and recorded the claim uncertain.
                batches = await self._still_claimed(conn, by_workspace, batch)
                for workspace_id, appends in batches.items():
                    if appends:
                        await self.store.append_many(appends, workspace_id=workspace_id, conn=conn)
                for workspace_id, sender_id in sorted(rejected):
                    await self.guards.check_bounce_rate(conn, workspace_id, sender_id)
                # Campaign guards, soft-bounce runs, hard bounces stopping the address workspace-wide.
                await self.guards.after_attempts(conn, batches)
                await record_variant_winners(self.store, conn, batches)  # A/B steps whose winner rule is met
                for (workspace_id, sender_id), message in sorted(disconnecting.items()):
                    await self._disconnect(conn, workspace_id, sender_id,
                                           f"{self._failures_before_disconnect()} connection or login failures in "
                                           f"a row; the last: {message}"[:500])

        await with_db_retries("record outcomes", write)
        for item in requeue:
            planned.requeue(item)

    def _failures_before_disconnect(self) -> int:
        return max(1, int(self.options.get("disconnect_after_failures", DISCONNECT_AFTER_FAILURES)))

    def _count_failure(self, sender_id: str, result: SendResult) -> bool:
        """Count connection and login failures in a row per sender; True when the sender must go
        ``disconnected`` (its emails then wait, or go through the campaign's other senders).

        Any SMTP answer about a message (sent, a refusal, a 4xx) proves the connection works and
        starts the count again. The count lives in this process: a restart gives the sender a
        fresh start, which at worst costs a few more attempts.
        """
        failures = self._sender_failures
        if result.outcome not in ("connect_failed", "auth_failed"):
            failures.pop(sender_id, None)
            return False
        failures[sender_id] = failures.get(sender_id, 0) + 1
        if failures[sender_id] >= self._failures_before_disconnect():
            failures.pop(sender_id)
            return True
        return False

    def _release_events(self, claim: Claim, release: Release) -> list[Event]:
        """The claim goes back (not sent, not uncertain); a stop that ends the enrollment cancels it."""
        email = claim.email
        base: dict[str, Any] = {"enrollment_id": email.enrollment_id, "campaign_id": email.campaign_id,
                                "contact_id": email.contact_id}
        events: list[Event] = [email_events.EmailReleased(
            **base, email_id=email.email_id, step=email.step, sender_id=email.sender_id, reason=release.reason,
            claimed_at=email.claimed_at, timezone=email.timezone, recipient_domain=email.domain)]
        if release.terminal:
            events.append(email_events.EmailCancelled(**base, email_id=email.email_id, step=email.step,
                                                      reason=release.reason))
            if release.enrollment_open:
                events.append(enrollment_events.EnrollmentStopped(
                    **base, reason=release.reason,
                    status="unsubscribed" if release.reason == "unsubscribed" else "stopped"))
        return events

    async def _stops_among(self, claims: Sequence[Claim]) -> dict[str, Release]:
        """Which of `claims` may no longer go, read afresh: each with why and what follows."""
        enrolled, c, k, s = tables.enrollments.c, tables.campaigns.c, tables.contacts.c, tables.senders.c
        async with self.store.reading() as conn:
            enrollments = dict((await conn.execute(select(enrolled.id, enrolled.status).where(
                enrolled.id.in_([claim.email.enrollment_id for claim in claims])))).all())
            campaigns = {row[0]: (row[1], row[2]) for row in (await conn.execute(
                select(c.id, c.status, c.deleted).where(
                    c.id.in_(list({claim.email.campaign_id for claim in claims}))))).all()}
            contacts = {row["id"]: row for row in (await conn.execute(
                select(k.id, k.erased, k.unsubscribed, k.email, k.email_domain, k.workspace_id).where(
                    k.id.in_(list({claim.email.contact_id for claim in claims}))))).mappings()}
            senders = {row[0]: (row[1], row[2]) for row in (await conn.execute(
                select(s.id, s.status, s.removed).where(
                    s.id.in_(list({claim.email.sender_id for claim in claims}))))).all()}
            suppressed: set[str] = set()
            by_workspace: dict[str, list[str]] = {}
            for row in contacts.values():
                by_workspace.setdefault(row["workspace_id"], []).extend([row["email"], row["email_domain"]])
            for workspace_id, values in by_workspace.items():
                suppressed |= await self.suppressions.suppressed(workspace_id, values, conn)
        found: dict[str, Release] = {}
        for claim in claims:
            email = claim.email
            still_open = enrollments.get(email.enrollment_id) in ("pending", "in_progress")
            status, deleted = campaigns.get(email.campaign_id, ("deleted", True))
            contact: Any = contacts.get(email.contact_id)
            sender_status, removed = senders.get(email.sender_id, ("removed", True))
            reason, terminal = None, True
            if not still_open:
                reason = "enrollment_stopped"
            elif deleted or status in ("cancelled", "archived", "completed"):
                reason = f"campaign_{'deleted' if deleted else status}"
            elif contact is None or contact["erased"]:
                reason = "erased"
            elif contact["unsubscribed"]:
                reason = "unsubscribed"
            elif {self.vault.lookup_hash(value) for value in (contact["email"], contact["email_domain"])} & suppressed:
                reason = "suppressed"
            elif status == "paused":
                reason, terminal = "paused", False
            elif removed or sender_status != "active":
                reason, terminal = f"sender_{'removed' if removed else sender_status}", False
            if reason is not None:
                found[email.email_id] = Release(reason, terminal, still_open)
        return found

    def _count(self, events: Sequence[Event], claim: Claim, report: TickReport) -> None:
        """Each outcome event counts once in the report (its field is the outcome's name) and in /metrics."""
        for event in events:
            outcome = OUTCOME_OF.get(event.TYPE)
            if outcome is None:
                continue
            setattr(report, outcome, getattr(report, outcome) + 1)
            metrics.record_email_outcome(outcome)
            if outcome == "sent":
                report.message_ids.append(claim.email.message_id)
                key = f"{claim.workspace_id}/{claim.email.campaign_id}/{claim.email.sender_id}"
                report.sent_by[key] = report.sent_by.get(key, 0) + 1

    async def _disconnect(self, conn: AsyncConnection, workspace_id: str, sender_id: str, reason: str) -> None:
        status = (await conn.execute(select(tables.senders.c.status).where(tables.senders.c.id == sender_id))).scalar()
        if status == "active":
            await self.store.append(f"sender-{sender_id}", [sender_events.SenderDisabled(
                sender_id=sender_id, status="disconnected", reason=reason)], None, workspace_id=workspace_id,
                conn=conn)

    async def _still_claimed(self, conn: AsyncConnection, by_workspace: dict[str, list[AppendBatch]],
                             batch: Sequence[_Outcome]) -> dict[str, list[AppendBatch]]:
        wanted = {o.claim.email.email_id: o.claim.email.attempt for o in batch}
        rows = (await conn.execute(select(emails.c.email_id, emails.c.status, emails.c.attempt).where(
            emails.c.email_id.in_(list(wanted))))).all()
        live = {email_id for email_id, status, attempt in rows if status == "claimed" and attempt == wanted[email_id]}
        streams = {f"enrollment-{o.claim.email.enrollment_id}" for o in batch if o.claim.email.email_id in live}
        return {ws: [a for a in appends if a.stream in streams] for ws, appends in by_workspace.items()}

    def _compose(self, definition: CampaignDefinition, claim: Claim, now: datetime) -> ComposedEmail:
        """The message for one claim, through the one compose path that preview and test_send use.

        Signed with the sender's DKIM key when it has one, decrypted here at the edge.
        """
        from engine.delivery.outbound import (
            dkim,  # imported here: this method is the only part of the module that signs
        )

        item = claim.assignment.item
        settings = definition.settings
        # A/B: a seeded draw per (enrollment, step), or the step's recorded winner (step 1's too,
        # whose subject a same-thread follow-up answers).
        winners = definition.winners()
        steps = definition.steps
        step = definition.step(item.step)  # ValueError for a step since removed: recorded as failed
        variant = choose_variant(step, item.enrollment_id, item.step, winners.get(item.step))
        first_variant = choose_variant(steps[0], item.enrollment_id, 1, winners.get(1))
        # a workflow's email node may turn tracking on or off for its own step
        opens = step.track_opens if step.track_opens is not None else settings.track_opens
        clicks = step.track_clicks if step.track_clicks is not None else settings.track_clicks
        tracking = mime.Tracking(public_url=self.public_url, secret=self.vault.token_key, email_id=item.email_id,
                                 opens=opens, clicks=clicks,
                                 unsubscribe=settings.unsubscribe_link,
                                 workspace_id=claim.workspace_id, contact_id=item.contact_id)
        return compose_email(definition, item.step, claim.contact, claim.sender, enrollment_id=item.enrollment_id,
                             email_id=item.email_id, message_id=claim.email.message_id, now=now, tracking=tracking,
                             dkim=dkim.signing_for(claim.sender, self.vault.decrypt_secret), variant=variant,
                             first_variant=first_variant)

    async def _complete_campaigns(self, conn: AsyncConnection) -> int:
        """Active campaigns with enrollments, none of them open any more, complete (two index probes each)."""
        c, enrolled = tables.campaigns.c, tables.enrollments.c
        open_ = exists().where(enrolled.campaign_id == c.id, enrolled.status.in_(["pending", "in_progress"]))
        any_ = exists().where(enrolled.campaign_id == c.id)
        rows = (await conn.execute(select(c.id, c.workspace_id, c.definition).where(
            c.status == "active", c.deleted.is_(False), ~open_, any_))).mappings().all()
        # an evergreen campaign stays active with nothing open: it ends only when told to
        rows = [r for r in rows if not parsed_campaign(r)[0].settings.evergreen]
        for row in rows:
            campaign_id, workspace_id = row["id"], row["workspace_id"]
            state, version = await self.reads.fold_campaign(conn, campaign_id)
            await self.store.append(f"campaign-{campaign_id}", campaign_domain.decide_transition(state, "complete"),
                                    version, workspace_id=workspace_id, conn=conn)
        return len(rows)


__all__ = ["LEASE", "Claim", "SendingService", "TickReport", "connection_lost", "with_db_retries"]
