"""``poll_mailboxes()``: read replies, bounces and complaints over IMAP and turn them into events;
``receive_message()``: the same for one message that arrived some other way.

Each sender with IMAP settings is polled from its checkpoint (UIDVALIDITY, last UID). Every message
is classified (``classify_message``), matched to our email by the Message-IDs it refers to (else by
the failed recipient), and recorded once: the message's key is stored with the events in the same
transaction, so polling twice, or a UIDVALIDITY resync, never counts a message twice. A mailbox
whose login or folder is refused marks its sender ``disconnected`` at once; one that cannot be
reached only after ``disconnect_after_failures`` polls in a row; neither stops the others.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import email.utils
import hashlib
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from engine import metrics
from engine.clock import Clock
from engine.delivery.bounces import Classification, classify_message
from engine.delivery.content.mime import parse_message_id
from engine.delivery.inbound.imap import Checkpoint, MailboxError, MailboxReader
from engine.domain.definition import CampaignSettings, definition_from_json
from engine.domain.enrollment import FREE_EMAIL_DOMAINS
from engine.errors import BadRequest, NotFound
from engine.service.base import SenderConnections
from engine.service.guards import DeliveryGuards
from engine.service.stops import EnrollmentStops
from engine.service.unsubscribes import Unsubscribes
from events.catalog import email as em
from events.catalog import sender as se
from events.context import acting
from events.registry import Event, format_time
from events.store import AppendBatch, EventStore
from events.vault import Vault
from projections import tables as t
from projections.inbound import inbound_seen, mailbox_checkpoints
from projections.sending import emails

MAILTO_UNSUBSCRIBE_REASON = "mailto"

# An unsubscribe token is ``base64url(json) "." base64url(16-byte MAC)``: the JSON starts with
# ``{"``, so the token with ``eyJ``, and the MAC is always 22 characters. A match starts only
# after a non-token character, which keeps the search linear however the text is crafted.
_TOKEN = re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{0,1000}\.[A-Za-z0-9_-]{22}(?![A-Za-z0-9_-])")
_SUBADDRESS = re.compile(r"\+unsubscribe-(eyJ[A-Za-z0-9_-]{0,1000}\.[A-Za-z0-9_-]{22})@", re.IGNORECASE)
_RECIPIENT_HEADERS = ("To", "Cc", "Delivered-To", "X-Original-To", "Envelope-To")
MAX_TOKEN_CANDIDATES = 16  # each costs one HMAC: a message stuffed with look-alikes stays cheap
MAX_BODY_CHARS = 64_000  # a request to leave is short; a huge body is not read to its end
# A mailbox failing this many polls in a row (option ``disconnect_after_failures``, as for SMTP)
# disconnects its sender; these kinds of failure need an operator, so they disconnect at once.
DISCONNECT_AFTER_FAILURES = 5
OPERATOR_MAILBOX_ERRORS = frozenset({"auth", "folder"})


@dataclass
class PollReport:
    mailboxes: int = 0
    messages: int = 0
    replies: int = 0
    out_of_office: int = 0
    bounces: int = 0
    delayed: int = 0
    complaints: int = 0
    unsubscribes: int = 0
    ignored: int = 0
    errors: dict[str, str] = field(default_factory=dict)


class InboundService:
    """Polls the senders' mailboxes and records what each message means (reply, bounce, complaint...)."""

    def __init__(self, store: EventStore, clock: Clock, vault: Vault, options: dict[str, Any], *,
                 guards: DeliveryGuards, stops: EnrollmentStops, unsubscribes: Unsubscribes) -> None:
        self.store = store
        self.clock = clock
        self.vault = vault
        self.guards = guards
        self.stops = stops
        self.unsubscribes = unsubscribes
        self.options = options
        self.connections = SenderConnections(vault, options)
        self._mailbox_failures: dict[str, int] = {}  # sender id -> failed polls in a row (this process)

    async def poll_mailboxes(self) -> PollReport:
        with acting(actor="system:inbound"):
            return await self._poll_mailboxes()

    async def _poll_mailboxes(self) -> PollReport:
        report = PollReport()
        async with self.store.reading() as conn:
            rows = (await conn.execute(select(t.senders).where(t.senders.c.removed.is_(False),
                                                               t.senders.c.imap.is_not(None)))).mappings().all()
        reader = MailboxReader()
        for sender in rows:
            report.mailboxes += 1
            try:
                async with self._mailbox_lock(sender["id"]) as mine:
                    if mine:  # on PostgreSQL, one node polls a mailbox at a time
                        await self._poll_one(reader, sender, report)
                        self._mailbox_failures.pop(sender["id"], None)  # it worked: the count starts again
            except MailboxError as exc:
                report.errors[sender["id"]] = str(exc)
                reason = self._count_failure(sender["id"], exc)
                if reason is not None and sender["status"] == "active":
                    async with self.store.transaction() as conn:
                        await self.store.append(f"sender-{sender['id']}", [se.SenderDisabled(
                            sender_id=sender["id"], status="disconnected", reason=reason[:500])], None,
                            workspace_id=sender["workspace_id"], conn=conn)
        return report

    def _failures_before_disconnect(self) -> int:
        return max(1, int(self.options.get("disconnect_after_failures", DISCONNECT_AFTER_FAILURES)))

    def _count_failure(self, sender_id: str, error: MailboxError) -> str | None:
        """Count a failed poll of a sender's mailbox; the ``disconnected`` reason when it must stop.

        The sender's mailbox only feeds replies and bounces in; its outgoing mail goes through
        SMTP. So one dropped connection (a restarted IMAP server, a timeout) must not stop the
        sender sending: only a refused login or a missing folder, which an operator has to fix,
        disconnects it at once; connection, TLS, timeout and protocol failures disconnect it after
        ``disconnect_after_failures`` (default 5) polls in a row, as the SMTP side does. The count
        lives in this process, like the SMTP one: a restart gives the mailbox a fresh start.
        """
        if error.kind in OPERATOR_MAILBOX_ERRORS:
            self._mailbox_failures.pop(sender_id, None)
            return f"IMAP: {error}"
        failures = self._mailbox_failures.get(sender_id, 0) + 1
        limit = self._failures_before_disconnect()
        if failures < limit:
            self._mailbox_failures[sender_id] = failures
            return None
        self._mailbox_failures.pop(sender_id, None)
        return f"IMAP: {limit} failed polls in a row; the last: {error}"

    @asynccontextmanager
    async def _mailbox_lock(self, sender_id: str) -> AsyncIterator[bool]:
        if self.store.dialect != "postgresql":
            yield True
            return
        async with self.store.write_engine.connect() as conn:
            key = {"k": f"campaign-engine-mailbox:{sender_id}"}
            got = bool((await conn.execute(text("SELECT pg_try_advisory_lock(hashtext(:k))"), key)).scalar())
            try:
                yield got
            finally:
                if got:
                    await conn.execute(text("SELECT pg_advisory_unlock(hashtext(:k))"), key)
                await conn.commit()

    async def _poll_one(self, reader: MailboxReader, sender: Any, report: PollReport) -> None:
        settings = self.connections.imap(sender)
        m = mailbox_checkpoints.c
        while True:
            async with self.store.reading() as conn:
                row = (await conn.execute(select(m.uidvalidity, m.last_uid).where(m.sender_id == sender["id"]))
                       ).first()
            checkpoint = Checkpoint(row[0], row[1]) if row else None
            result = await reader.fetch_new(settings, checkpoint)
            async with self.store.transaction() as conn:
                for message in result.messages:
                    await self._receive(conn, sender["workspace_id"], message.raw, report)
                await conn.execute(mailbox_checkpoints.delete().where(m.sender_id == sender["id"]))
                await conn.execute(mailbox_checkpoints.insert().values(
                    sender_id=sender["id"], uidvalidity=result.checkpoint.uidvalidity,
                    last_uid=result.checkpoint.last_uid))
            if not result.more:
                return

    async def receive_message(self, raw: bytes, *, workspace_id: str | None = None,
                              sender_id: str | None = None) -> PollReport:
        """Run one raw inbound message through the path of a polled one, for mail that arrives otherwise.

        An application that receives its senders' mail some other way (a provider's inbound
        webhook, its own MTA) hands each message here: it is classified, matched to our email by
        the Message-IDs it refers to, and its reply, bounce, delay, complaint or unsubscribe is
        recorded with the same events and stops as :meth:`poll_mailboxes` records, by the same
        code. The message's key (its Message-ID, else a hash of its bytes) is stored with those
        events, so the same message given twice, or given here and also polled, counts once.
        ``sender_id`` names the sender whose mailbox received it (its workspace is the one
        searched); ``workspace_id`` alone is enough, and when both are given they must agree.
        Returns what the message meant, as a poll's report does.
        """
        if not isinstance(raw, bytes | bytearray):
            raise BadRequest(f"receive_message takes the raw message as bytes, not {type(raw).__name__}")
        if not bytes(raw).strip():
            raise BadRequest("receive_message was given an empty message")
        if workspace_id is None and sender_id is None:
            raise BadRequest("receive_message needs the workspace_id or the sender_id the message was sent to")
        report = PollReport()
        with acting(actor="system:inbound"):
            async with self.store.transaction() as conn:
                ws = await self._receiving_workspace(conn, workspace_id, sender_id)
                await self._receive(conn, ws, bytes(raw), report)
        return report

    async def _receiving_workspace(self, conn: AsyncConnection, workspace_id: str | None,
                                   sender_id: str | None) -> str:
        """The workspace whose emails a received message is matched against; NotFound when unknown."""
        if sender_id is not None:
            s = t.senders.c
            query = select(s.workspace_id).where(s.id == sender_id, s.removed.is_(False))
            if workspace_id is not None:
                query = query.where(s.workspace_id == workspace_id)
            found = (await conn.execute(query)).scalar()
            if found is None:
                raise NotFound("sender", sender_id)
            return str(found)
        assert workspace_id is not None
        if (await conn.execute(select(t.workspaces.c.id).where(t.workspaces.c.id == workspace_id))).first() is None:
            raise NotFound("workspace", workspace_id)
        return workspace_id

    async def _receive(self, conn: AsyncConnection, ws: str, raw: bytes, report: PollReport) -> None:
        """One message in, however it came (a poll, :meth:`receive_message`): the one shared path."""
        report.messages += 1
        await self.handle_inbound(conn, ws, raw, report)

    async def handle_inbound(self, conn: AsyncConnection, ws: str, raw: bytes, report: PollReport) -> None:
        """Classify one message and append what it means, once."""
        c = classify_message(raw)
        key = c.message_id or "sha256:" + hashlib.sha256(raw).hexdigest()
        s = inbound_seen.c
        if (await conn.execute(select(s.message_key).where(s.workspace_id == ws, s.message_key == key[:255]))
                ).first():
            return
        await conn.execute(inbound_seen.insert().values(workspace_id=ws, message_key=key[:255], kind=c.kind,
                                                        received_at=format_time(self.clock.now())))
        metrics.record_inbound(c.kind)
        if c.kind == "bounce":
            await self._bounce(conn, ws, c, report, raw)
        elif c.kind == "feedback":
            await self._complaint(conn, ws, c, report)
        elif c.kind in ("auto_reply", "message"):
            if not await self._mailto_unsubscribe(conn, ws, raw, report):
                await self._reply(conn, ws, c, report)
        else:
            report.ignored += 1

    async def _our_email(self, conn: AsyncConnection, ws: str, refs: tuple[str, ...],
                         recipient: str | None = None) -> Any:
        """The email a message refers to: by our Message-IDs, else the latest sent to ``recipient``."""
        e = emails.c
        for ref in reversed(refs):
            parsed = parse_message_id(ref)
            if parsed is None:
                continue
            enrollment_id, step = parsed
            row = (await conn.execute(select(emails).where(e.email_id == f"{enrollment_id}.{step}",
                                                           e.workspace_id == ws))).mappings().first()
            if row is not None:
                return row
        if recipient:
            contact = (await conn.execute(select(t.contacts.c.id).where(
                t.contacts.c.workspace_id == ws, t.contacts.c.email_hash == self.vault.lookup_hash(recipient),
                t.contacts.c.erased.is_(False)))).first()
            if contact is not None:
                return (await conn.execute(select(emails).where(e.contact_id == contact[0], e.workspace_id == ws,
                                                                e.sent_at.is_not(None))
                                           .order_by(e.sent_at.desc()).limit(1))).mappings().first()
        return None

    @staticmethod
    def _base(row: Any) -> dict[str, Any]:
        return {"enrollment_id": row["enrollment_id"], "campaign_id": row["campaign_id"],
                "contact_id": row["contact_id"], "email_id": row["email_id"], "step": row["step"]}

    async def _open_enrollment(self, conn: AsyncConnection, enrollment_id: str) -> Any:
        e = t.enrollments.c
        return (await conn.execute(select(t.enrollments).where(
            e.id == enrollment_id, e.status.in_(["pending", "in_progress"])))).mappings().first()

    async def _bounce(self, conn: AsyncConnection, ws: str, c: Classification, report: PollReport,
                      raw: bytes) -> None:
        """Record each failed recipient as a bounce and each delayed one as a delay.

        A delay (``Action: delayed``) is only a warning that the remote MTA keeps trying: it is
        recorded as ``email.delayed`` for the activity feed, and neither counts as a bounce, nor
        stops the enrollment, nor weighs on the sender's bounce rate.
        """
        retry_until: dict[str, datetime] | None = None
        for b in c.bounces:
            row = await self._our_email(conn, ws, c.refers_to, b.recipient or None)
            if row is None or row["status"] == "bounced":
                report.ignored += 1
                continue
            code = int(b.reply_code) if b.reply_code and str(b.reply_code).isdigit() else None
            if b.delayed:
                if retry_until is None:
                    retry_until = will_retry_until(raw)
                report.delayed += 1
                await self.store.append(f"enrollment-{row['enrollment_id']}", [em.EmailDelayed(
                    **self._base(row), sender_id=row["sender_id"], status=b.status, reason=b.reason, code=code,
                    will_retry_until=retry_until.get(b.recipient.lower(), retry_until.get("")))], None,
                    workspace_id=ws, conn=conn)
                continue
            report.bounces += 1
            events: list[Event] = [em.EmailBounced(**self._base(row), sender_id=row["sender_id"], bounce_type=b.type,
                                                   reason=b.reason, status=b.status, code=code, source="dsn")]
            await self.store.append(f"enrollment-{row['enrollment_id']}", events, None, workspace_id=ws, conn=conn)
            enrollment = await self._open_enrollment(conn, row["enrollment_id"])
            if b.type in ("hard", "block") and enrollment is not None:
                await self.stops.stop_rows(conn, ws, [enrollment], f"bounced_{b.type}",
                                           status="bounced")
            await self.guards.after_bounce(conn, ws, row["contact_id"], row["campaign_id"], b.type)
            if row["sender_id"]:
                await self.guards.check_bounce_rate(conn, ws, row["sender_id"])
            await self.guards.check_campaign_health(conn, ws, row["campaign_id"])

    async def _complaint(self, conn: AsyncConnection, ws: str, c: Classification, report: PollReport) -> None:
        row = await self._our_email(conn, ws, c.refers_to, c.feedback_recipient)
        if row is None:
            report.ignored += 1
            return
        report.complaints += 1
        await self.store.append(f"enrollment-{row['enrollment_id']}", [em.EmailComplained(
            **self._base(row), feedback_type=c.feedback_type or "abuse")], None, workspace_id=ws, conn=conn)
        await self.unsubscribes.unsubscribe_contact(conn, ws, row["contact_id"], reason="complaint",
                                                    campaign_id=row["campaign_id"], email_id=row["email_id"])
        if row["sender_id"]:
            await self.guards.check_complaint_rate(conn, ws, row["sender_id"])
        await self.guards.check_campaign_health(conn, ws, row["campaign_id"])

    async def _mailto_unsubscribe(self, conn: AsyncConnection, ws: str, raw: bytes, report: PollReport) -> bool:
        """Honour an unsubscribe request sent by mail; ``True`` when the message was one.

        Every email offers ``mailto:<sender>?subject=unsubscribe <token>`` in ``List-Unsubscribe``
        beside the one-click URL, and RFC 8058 section 3.2 expects both channels to work. A message
        carrying a genuine unsubscribe token of this workspace (see :func:`unsubscribe_tokens`) is
        such a request: it goes through the very routine of ``POST /u/{token}`` (same events, each
        skipped when already true, so a second request appends nothing), and it is never a reply,
        even when it threads, since counting it would stop the enrollment as ``replied`` and
        trigger ``stop_on_reply`` effects. A forged, altered or foreign token proves nothing: the
        message is read as before.
        """
        for token in unsubscribe_tokens(raw):
            try:
                await self.unsubscribes.unsubscribe_by_token(
                    conn, token, reason=MAILTO_UNSUBSCRIBE_REASON, actor="system:inbound", workspace_id=ws)
            except NotFound:
                continue
            report.unsubscribes += 1
            return True
        return False

    async def _reply(self, conn: AsyncConnection, ws: str, c: Classification, report: PollReport) -> None:
        row = await self._our_email(conn, ws, c.refers_to)
        if row is None:
            report.ignored += 1
            return
        ooo = c.kind == "auto_reply" or c.out_of_office
        report.out_of_office += int(ooo)
        report.replies += int(not ooo)
        await self.store.append(f"enrollment-{row['enrollment_id']}", [em.EmailReplied(
            **self._base(row), out_of_office=ooo, message_id=c.message_id, received_at=self.clock.now())], None,
            workspace_id=ws, conn=conn)
        cmp = (await conn.execute(select(t.campaigns.c.definition).where(t.campaigns.c.id == row["campaign_id"]))
               ).scalar()
        settings = definition_from_json(cmp).settings if cmp else CampaignSettings()
        if ooo and settings.ignore_out_of_office:
            return
        if settings.stop_on_reply:
            enrollment = await self._open_enrollment(conn, row["enrollment_id"])
            if enrollment is not None:
                await self.stops.stop_rows(conn, ws, [enrollment], "replied", status="replied")
        if settings.stop_on_company_reply and not ooo:
            await self._stop_company(conn, ws, row)

    async def _stop_company(self, conn: AsyncConnection, ws: str, row: Any) -> None:
        """Colleagues at the same (non free-mail) domain in the same campaign stop too."""
        k, e = t.contacts.c, t.enrollments.c
        domain = (await conn.execute(select(k.email_domain).where(k.id == row["contact_id"]))).scalar()
        if not domain or domain in FREE_EMAIL_DOMAINS:
            return
        rows = (await conn.execute(select(t.enrollments).join(t.contacts, k.id == e.contact_id).where(
            e.campaign_id == row["campaign_id"], e.contact_id != row["contact_id"], k.email_domain == domain,
            e.status.in_(["pending", "in_progress"])))).mappings().all()
        await self.stops.stop_rows(conn, ws, rows, "company_replied")


def unsubscribe_tokens(raw: bytes) -> list[str]:
    """The candidate unsubscribe tokens of an inbound message, most explicit first, unverified.

    Looked for in a recipient address sub-addressed ``+unsubscribe-<token>@``, then in the
    Subject (the ``unsubscribe <token>`` our ``mailto:`` advertises, or a token anywhere in it),
    then in the plain-text body. In the body a token that is part of a URL path (``.../u/<token>``)
    is left out: a reply quoting an email whose text shows its ``{{unsubscribe_url}}`` link is a
    reply, not a request to leave; that link is for the one-click page. The caller verifies each.
    """
    message = email.message_from_bytes(raw, policy=email.policy.default)
    found: list[str] = []
    for name in _RECIPIENT_HEADERS:
        for value in message.get_all(name) or []:
            found.extend(_SUBADDRESS.findall(str(value)))
    try:
        subject = str(message.get("Subject") or "")
    except (TypeError, ValueError):  # a malformed encoded word: the subject says nothing usable
        subject = ""
    found.extend(match.group(0) for match in _TOKEN.finditer(subject))
    body = message.get_body(preferencelist=("plain",)) if isinstance(message, email.message.EmailMessage) else None
    if body is not None:
        try:
            text_body = body.get_content()
        except (KeyError, LookupError, ValueError):  # unknown charset or broken encoding
            text_body = ""
        if isinstance(text_body, str):
            text_body = text_body[:MAX_BODY_CHARS]
            found.extend(match.group(0) for match in _TOKEN.finditer(text_body)
                         if not text_body[:match.start()].endswith("/"))
    return list(dict.fromkeys(found))[:MAX_TOKEN_CANDIDATES]


def will_retry_until(raw: bytes) -> dict[str, datetime]:
    """The ``Will-Retry-Until`` times of a delivery status notification (RFC 3464 section 2.3.9),
    by lower-cased final recipient; the key ``""`` holds the first one, for entries the report
    does not name. A date that does not parse is left out: the delay is recorded without it."""
    found: dict[str, datetime] = {}
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    for part in message.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        blocks = part.get_payload()
        for block in blocks if isinstance(blocks, list) else []:
            if not isinstance(block, email.message.Message):
                continue
            value = block.get("Will-Retry-Until")
            if not value:
                continue
            try:
                at = email.utils.parsedate_to_datetime(str(value).strip())
            except (TypeError, ValueError):
                continue
            if at.tzinfo is None:  # RFC 5322 "-0000": a UTC time with no known zone
                at = at.replace(tzinfo=UTC)
            recipient = str(block.get("Final-Recipient") or block.get("Original-Recipient") or "")
            address = recipient.split(";", 1)[-1].strip().strip("<>").lower()
            found.setdefault(address, at)
            found.setdefault("", at)
    return found


__all__ = ["AppendBatch", "InboundService", "PollReport", "unsubscribe_tokens"]
