"""Workspaces, API keys, senders, contacts, lists, suppressions and webhooks: load -> decide -> append."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import secrets
from datetime import UTC, date
from typing import Any

import structlog
from sqlalchemy import Select, and_, func, or_, select

from engine.clock import Clock
from engine.delivery.lookups import destinations
from engine.delivery.outbound import dkim
from engine.delivery.outbound.smtp import SmtpMailer
from engine.domain import models as m
from engine.errors import Conflict, NotFound, ValidationFailed
from engine.schedule import SenderPlan, Warmup, effective_daily_limit
from engine.service import contact_csv, contact_import, views
from engine.service.auto_enroll import AutoEnroll
from engine.service.base import Page, Reads, SenderConnections, new_id, retry
from engine.service.cursors import Cursors, Listing, SortKey, cursor_error
from engine.service.signals import WorkSignal
from engine.service.stops import EnrollmentStops
from engine.service.suppressions import Suppressions, suppression_subject
from engine.service.usage import UsageCounts
from engine.service.webhooks import forget_webhook
from engine.service.workspaces import ApiKeyOwner, Workspace, hash_api_key
from events import schema
from events.catalog import contact as ce
from events.catalog import sender as se
from events.catalog import workspace as we
from events.registry import format_time
from events.store import AppendBatch, EventStore
from events.vault import Vault
from projections import listing_totals as totals
from projections import tables as t
from projections import usage as usage_model

log = structlog.get_logger("campaign_engine")

WAL_TRUNCATE_ATTEMPTS = 3  # a reader mid-snapshot makes a truncating checkpoint give up; try again shortly
WAL_TRUNCATE_WAIT_MS = 2000  # per attempt, for readers to leave their snapshots
IMPORT_CHUNK = 2000  # contacts per import transaction: its multi-row inserts, without holding the log's lock long


class ManagementService:
    """Senders, contacts, lists, suppressions, webhooks, the account and the raw log."""

    def __init__(self, store: EventStore, clock: Clock, vault: Vault, options: dict[str, Any], public_url: str, *,
                 mailer: SmtpMailer, suppressions: Suppressions, stops: EnrollmentStops, usage: UsageCounts,
                 work: WorkSignal, auto_enroll: AutoEnroll) -> None:
        self.store = store
        self.clock = clock
        self.vault = vault
        self.options = options
        self.public_url = public_url
        self.mailer = mailer
        self.suppressions = suppressions
        self.stops = stops
        self.usage = usage
        self.work = work
        self.auto_enroll = auto_enroll
        self.reads = Reads(store)
        self.connections = SenderConnections(vault, options)

    # -- the account ----------------------------------------------------------------------------
    async def get_account(self, ws: str) -> dict[str, Any]:
        w = await self.reads.one(select(t.workspaces).where(t.workspaces.c.id == ws), "workspace", ws)
        return {"id": w["id"], "name": w["name"], "monthly_limit": w["monthly_limit"],
                "sent_this_month": await self.usage.sent_this_month(ws), "require_approval": w["require_approval"]}

    # -- senders --------------------------------------------------------------------------------
    def _secret_settings(self, data: dict[str, Any] | None) -> dict[str, Any] | None:
        if data is None:
            return None
        out = {k: v for k, v in data.items() if k != "password"}
        if data.get("password"):
            out["password_enc"] = self.vault.encrypt_secret(data["password"])
        return out

    async def create_sender(self, ws: str, body: dict[str, Any]) -> dict[str, Any]:
        s: m.SenderIn = m.parse(m.SenderIn, body)
        sid = new_id("snd", self.clock.now())
        await self.store.append(f"sender-{sid}", [se.SenderAdded(
            sender_id=sid, email=s.email, from_name=s.from_name, smtp=self._secret_settings(s.smtp.model_dump()) or {},
            imap=self._secret_settings(s.imap.model_dump()) if s.imap else None, daily_limit=s.daily_limit,
            daily_limit_variation_pct=s.daily_limit_variation_pct, bounce_rate_threshold=s.bounce_rate_threshold,
            max_connections=s.max_connections, warmup=s.warmup.model_dump() if s.warmup is not None else None,
        )], 0, workspace_id=ws)
        return await self.get_sender(ws, sid)

    async def _sender_row(self, ws: str, sid: str) -> Any:
        c = t.senders.c
        return await self.reads.one(select(t.senders).where(c.id == sid, c.workspace_id == ws, c.removed.is_(False)),
                                    "sender", sid)

    async def get_sender(self, ws: str, sid: str) -> dict[str, Any]:
        row = await self._sender_row(ws, sid)
        return views.sender_view(row, *(await self._sender_health(ws, sid)),
                                 daily_limit_today=await self._daily_limit_today(row))

    async def _daily_limit_today(self, row: Any) -> int | None:
        """What the planner allows the sender today: the varied daily limit, lowered by a warm-up."""
        counts = usage_model.counts.c
        first = await self.reads.all(select(func.min(counts.bucket).label("day")).where(
            counts.scope == usage_model.SENDER_DAY, counts.owner == row["id"], counts.sends > 0))
        plan = SenderPlan(sender_id=row["id"], daily_limit=row["daily_limit"],
                          daily_limit_variation_pct=float(row["daily_limit_variation_pct"]),
                          warmup=Warmup.from_dict(json.loads(row["warmup"]) if row["warmup"] else None),
                          first_send_day=date.fromisoformat(first[0]["day"]) if first and first[0]["day"] else None)
        today = self.clock.now().astimezone(UTC).date()
        return effective_daily_limit(plan, today)

    async def _sender_health(self, ws: str, sid: str) -> tuple[int, float]:
        return await self.usage.sender_usage(ws, sid)

    async def list_senders(self, ws: str, page: int = 1, per_page: int = 50, *, cursor: str | None = None
                           ) -> dict[str, Any]:
        c = t.senders.c
        q = select(t.senders).where(c.workspace_id == ws, c.removed.is_(False))
        listing = Listing("senders", ws, {}, (SortKey(c.created_at, "created_at"), SortKey(c.id, "id")))
        result = await self.reads.paged(q, Page.of(page, per_page, cursor), views.sender_view, listing)
        for item in result["data"]:
            item["sent_today"], item["bounce_rate"] = await self._sender_health(ws, item["id"])
            item["daily_limit_today"] = await self._daily_limit_today(await self._sender_row(ws, item["id"]))
        return result

    async def update_sender(self, ws: str, sid: str, body: dict[str, Any]) -> dict[str, Any]:
        p: m.SenderPatch = m.parse(m.SenderPatch, body)
        row = await self._sender_row(ws, sid)
        changes: dict[str, Any] = {}
        for key in p.model_fields_set:
            value = getattr(p, key)
            if key in ("smtp", "imap"):
                old = json.loads(row[key]) if row[key] else {}
                new = value.model_dump() if value is not None else None
                if new is not None and not new.get("password") and old.get("password_enc"):
                    new = {**(self._secret_settings(new) or {}), "password_enc": old["password_enc"]}
                else:
                    new = self._secret_settings(new)
                changes[key] = new
            elif key == "warmup":  # null ends the warm-up
                changes[key] = value.model_dump() if value is not None else None
            elif value is not None or key == "from_name":
                changes[key] = value
        if changes:
            await self.store.append(f"sender-{sid}", [se.SenderUpdated(sender_id=sid, changes=changes)], None,
                                    workspace_id=ws)
        return await self.get_sender(ws, sid)

    async def delete_sender(self, ws: str, sid: str) -> dict[str, Any]:
        await self._sender_row(ws, sid)
        c = t.campaigns.c
        rows = await self.reads.all(select(c.id, c.definition).where(
            c.workspace_id == ws, c.deleted.is_(False), c.status.in_(["active", "scheduled", "paused"])))
        using = [r["id"] for r in rows if sid in (json.loads(r["definition"]).get("sender_ids") or [])]
        if using:
            raise Conflict("sender_in_use", "the sender is used by an active campaign", {"campaign_ids": using})
        await self.store.append(f"sender-{sid}", [se.SenderRemoved(sender_id=sid)], None, workspace_id=ws)
        return {"id": sid, "deleted": True}

    async def reenable_sender(self, ws: str, sid: str) -> dict[str, Any]:
        row = await self._sender_row(ws, sid)
        if row["status"] != "active":
            await self.store.append(f"sender-{sid}", [se.SenderReenabled(sender_id=sid)], None, workspace_id=ws)
            self.work.notify()
        return await self.get_sender(ws, sid)

    async def check_sender(self, ws: str, sid: str) -> dict[str, Any]:
        """A real SMTP login (and IMAP when configured): ``{smtp_ok, imap_ok, error}``."""
        from engine.delivery.inbound.imap import MailboxReader

        row = await self._sender_row(ws, sid)
        smtp_ok, smtp_error = await self.mailer.check_login(self.connections.smtp(row))
        imap_ok: bool | None = None
        imap_error = None
        if row["imap"]:
            imap_ok, imap_error = await MailboxReader().check_login(self.connections.imap(row))
        errors = [f"smtp: {smtp_error}" if smtp_error else "", f"imap: {imap_error}" if imap_error else ""]
        return {"smtp_ok": smtp_ok, "imap_ok": imap_ok, "error": "; ".join(e for e in errors if e) or None}

    # -- DKIM and the records to publish --------------------------------------------------------
    async def set_sender_dkim(self, ws: str, sid: str, body: dict[str, Any]) -> dict[str, Any]:
        """Generate (or import, with ``private_key_pem``) the sender's DKIM key; it replaces any earlier one.

        The private key is encrypted by the vault before it reaches the event or the read model, and
        no answer, event export or log line carries it. Without a ``selector`` the key gets a new
        dated one (``ce20260105``), so that the new record can be published beside the old one
        while mail signed with the old key is still in flight.
        """
        row = await self._sender_row(ws, sid)
        current = json.loads(row["dkim"]) if row["dkim"] else None
        selector, algorithm, pem = _dkim_request(body)
        if selector is None:
            selector = f"ce{self.clock.now():%Y%m%d}"
            if current is not None and current["selector"] == selector:
                selector = f"ce{self.clock.now():%Y%m%d%H%M%S}"
        if pem is None:
            # RSA generation takes a noticeable fraction of a second: off the event loop.
            pem = await asyncio.to_thread(dkim.generate_private_key, algorithm or "rsa-sha256")
            algorithm = algorithm or "rsa-sha256"
        else:
            try:
                algorithm, pem = dkim.load_private_key(pem, algorithm)
            except dkim.DkimKeyError as exc:
                raise ValidationFailed([{"field": "private_key_pem", "message": str(exc)}]) from None
        await self.store.append(f"sender-{sid}", [se.SenderDkimKeySet(
            sender_id=sid, selector=selector, algorithm=algorithm, public_key=dkim.public_key_value(pem),
            private_key_enc=self.vault.encrypt_secret(pem))], None, workspace_id=ws)
        log.info("sender_dkim_key_set", sender_id=sid, selector=selector, algorithm=algorithm)
        return await self.get_sender(ws, sid)

    async def sender_dns(self, ws: str, sid: str) -> dict[str, Any]:
        """The TXT records the sender's domain should publish (DKIM, SPF, DMARC), and what is amiss.

        - ``dkim``: the key's record at ``<selector>._domainkey.<domain>``, or null without a key.
        - ``spf``: ``v=spf1 a mx <the SMTP server> ~all``: the domain's own hosts plus the server the
          engine submits through (``include:`` of its provider's SPF record when the host is a
          well-known one, else ``a:<host>``); ``~all`` (soft fail) so that a forgotten source
          is flagged rather than bounced while DMARC reports are read. A domain has one SPF record:
          merge these terms into an existing one.
        - ``dmarc``: ``v=DMARC1; p=none; rua=mailto:postmaster@<domain>``: monitoring first
          (``p=none``), aggregate reports to the postmaster mailbox every domain must have (not the
          sender's own, which the engine polls for replies).
        - ``warnings``: what keeps mail from being trusted, e.g. a ``public_url`` that is not https.
        """
        row = await self._sender_row(ws, sid)
        domain = _ascii_domain(str(row["email"]).rsplit("@", 1)[1])
        key = json.loads(row["dkim"]) if row["dkim"] else None
        warnings: list[str] = []
        dkim_record = None
        if key is None:
            warnings.append(f"the sender has no DKIM key: POST /v1/senders/{sid}/dkim to create one; Gmail and "
                            "Yahoo require bulk mail to be authenticated")
        else:
            dkim_record = {"name": dkim.record_name(key["selector"], domain), "type": "TXT",
                           "value": dkim.txt_value(key["algorithm"], key["public_key"])}
            if key["algorithm"] == "ed25519-sha256":
                warnings.append("many receivers do not verify ed25519-sha256 signatures yet (RFC 8463), and count "
                                "mail signed only with Ed25519 as unsigned: prefer rsa-sha256")
        if not self.public_url.lower().startswith("https://"):
            warnings.append(f"public_url ({self.public_url}) is not https: one-click unsubscribe "
                            "(List-Unsubscribe-Post, RFC 8058) is not offered, which Gmail and Yahoo require "
                            "of bulk senders; serve the engine's public endpoints over https")
        smtp_host = str((json.loads(row["smtp"]) or {}).get("host") or "").strip().rstrip(".").lower()
        spf_term = _spf_term(smtp_host)
        spf_value = " ".join(["v=spf1", "a", "mx", *([spf_term] if spf_term else []), "~all"])
        return {
            "domain": domain,
            "dkim": dkim_record,
            "spf": {"name": domain, "type": "TXT", "value": spf_value,
                    "note": "one SPF record per domain: merge these terms into an existing v=spf1 record"},
            "dmarc": {"name": f"_dmarc.{domain}", "type": "TXT",
                      "value": f"v=DMARC1; p=none; rua=mailto:postmaster@{domain}",
                      "note": "p=none monitors; move to p=quarantine once the reports show every source passing"},
            "warnings": warnings,
        }

    # -- contacts -------------------------------------------------------------------------------
    def _email_hash(self, email: str) -> str:
        return self.vault.lookup_hash(email)

    async def _existing_contact(self, ws: str, email_hash: str, conn: Any = None) -> str | None:
        c = t.contacts.c
        rows = await self.reads.all(select(c.id).where(c.workspace_id == ws, c.email_hash == email_hash,
                                                       c.erased.is_(False)), conn)
        return rows[0]["id"] if rows else None

    def _contact_created(self, cid: str, body: m.ContactIn, email_hash: str | None = None) -> ce.ContactCreated:
        """The event creating a contact; ``email_hash`` when the caller has it already (an import)."""
        return ce.ContactCreated(
            contact_id=cid, email=body.email, email_hash=email_hash or self._email_hash(body.email),
            email_domain=body.email.rsplit("@", 1)[1].lower(), first_name=body.first_name, last_name=body.last_name,
            company=body.company, timezone=body.timezone, custom_fields=body.custom_fields)

    async def create_contact(self, ws: str, body: dict[str, Any]) -> dict[str, Any]:
        data: m.ContactIn = m.parse(m.ContactIn, body)

        async def attempt() -> tuple[str, int]:
            async with self.store.transaction() as conn:
                existing = await self._existing_contact(ws, self._email_hash(data.email), conn)
                if existing:
                    raise Conflict("contact_exists", "a contact with this email exists", {"id": existing})
                cid = new_id("con", self.clock.now())
                before = await self.auto_enroll.before(conn, ws, [cid])
                await self.store.append(f"contact-{cid}", [self._contact_created(cid, data)], 0, workspace_id=ws,
                                        conn=conn)
                outcome = await self.auto_enroll.enroll_entrants(conn, ws, before)
            return cid, outcome.added

        cid, enrolled = await retry(attempt)
        if enrolled:
            self.work.notify()
        return await self.get_contact(ws, cid)

    async def import_contacts(self, ws: str, rows: list[Any], *, list_id: str | None = None) -> dict[str, Any]:
        """Create or update contacts by email; one bad row never drops the others.

        With ``list_id`` every valid row's contact (created, updated or already up to date: the
        file is the list the user means) joins that list, in the same transaction as its chunk.
        The list is checked first, so an unknown or foreign one writes nothing (404). Each chunk's
        contacts that enter an active campaign's ``auto_enroll`` selection (created matching,
        updated into its filter, added to one of its lists) are enrolled in the chunk's
        transaction, in one pass per chunk.
        """
        if list_id is not None:
            await self._list_row(ws, list_id)
        parsed, invalid = contact_import.parse_rows(rows, self._email_hash)
        created = updated = added = enrolled = 0
        items = list(parsed.items())
        for start in range(0, len(items), IMPORT_CHUNK):
            chunk = items[start:start + IMPORT_CHUNK]
            async with self.store.transaction() as conn:
                c = t.contacts.c
                # Erased rows are dropped here, not in the SQL: with ``erased`` in the WHERE, SQLite
                # prefers the listing index (workspace, erased, ...) to the (workspace, email_hash)
                # one for a long IN list, and reads every contact of the workspace per chunk.
                existing = {r["email_hash"]: r for r in await self.reads.all(select(t.contacts).where(
                    c.workspace_id == ws, c.email_hash.in_([h for h, _ in chunk])), conn) if not r["erased"]}
                batches: list[AppendBatch] = []
                members: list[str] = []
                new_ids = {h: new_id("con", self.clock.now()) for h, _ in chunk if h not in existing}
                before = await self.auto_enroll.before(conn, ws, [existing[h]["id"] if h in existing else new_ids[h]
                                                                  for h, _ in chunk])
                for h, (_row, item) in chunk:
                    if h in existing:
                        old = existing[h]
                        members.append(old["id"])
                        changes = {k: v for k, v in item.model_dump(exclude_unset=True).items()
                                   if k != "email" and _differs(old, k, v)}
                        if changes:
                            batches.append(AppendBatch(f"contact-{old['id']}", [ce.ContactUpdated(
                                contact_id=old["id"], changes=changes)]))
                            updated += 1
                    else:
                        cid = new_ids[h]
                        members.append(cid)
                        batches.append(AppendBatch(f"contact-{cid}", [self._contact_created(cid, item, h)], 0))
                        created += 1
                if list_id is not None and members:
                    batches.append(AppendBatch(f"list-{list_id}", [ce.ListContactsAdded(
                        list_id=list_id, contact_ids=tuple(members))]))
                    added += len(members)
                await self.store.append_many(batches, workspace_id=ws, conn=conn)
                enrolled += (await self.auto_enroll.enroll_entrants(conn, ws, before)).added
        if enrolled:
            self.work.notify()
        result: dict[str, Any] = {"created": created, "updated": updated, "invalid": invalid}
        if list_id is not None:
            result["list_id"], result["added_to_list"] = list_id, added
        return result

    async def import_contacts_csv(self, ws: str, text: str, *, mapping: dict[str, str | None] | None = None,
                                  list_id: str | None = None) -> dict[str, Any]:
        """Import a CSV export as it comes: any common delimiter, headers in any spelling
        (``engine/service/contact_csv.py`` decides which column is which field), ``mapping``
        overriding that per header. The list is checked before the file is read."""
        if list_id is not None:
            await self._list_row(ws, list_id)
        return await self.import_contacts(ws, contact_csv.read_rows(text, mapping), list_id=list_id)

    async def _contact_row(self, ws: str, cid: str, conn: Any = None) -> Any:
        c = t.contacts.c
        return await self.reads.one(select(t.contacts).where(c.id == cid, c.workspace_id == ws, c.erased.is_(False)),
                                    "contact", cid, conn)

    async def get_contact(self, ws: str, cid: str) -> dict[str, Any]:
        return views.contact_view(await self._contact_row(ws, cid))

    async def list_contacts(self, ws: str, *, q: str | None = None, status: str | None = None,
                            list_id: str | None = None, page: int = 1, per_page: int = 50,
                            cursor: str | None = None) -> dict[str, Any]:
        """Contacts oldest first, by ``created_at`` then ``id`` (the ``ix_rm_contacts_ws_listing``
        index), filtered by ``q``, ``status`` and ``list_id``; by page or after a cursor of the same filters."""
        paging = Page.of(page, per_page, cursor)
        c = t.contacts.c
        query = select(t.contacts).where(c.workspace_id == ws, c.erased.is_(False))
        if q:
            like = f"%{q.lower()}%"
            query = query.where(or_(func.lower(c.email).like(like), func.lower(c.first_name).like(like),
                                    func.lower(c.last_name).like(like), func.lower(c.company).like(like)))
        if status:
            query = query.where(c.status == status)
        if list_id:
            await self._list_row(ws, list_id)
            query = query.where(c.id.in_(select(t.list_members.c.contact_id)
                                         .where(t.list_members.c.list_id == list_id)))
        listing = Listing("contacts", ws, {"q": q or None, "status": status or None, "list_id": list_id or None},
                          (SortKey(c.created_at, "created_at"), SortKey(c.id, "id")))
        return await self.reads.paged(query, paging, views.contact_view, listing,
                                      total=_contacts_total(ws, q=q, status=status, list_id=list_id))

    async def update_contact(self, ws: str, cid: str, body: dict[str, Any]) -> dict[str, Any]:
        p: m.ContactPatch = m.parse(m.ContactPatch, body)

        async def attempt() -> int:
            async with self.store.transaction() as conn:
                row = await self._contact_row(ws, cid, conn)
                changes = {k: v for k, v in p.model_dump(exclude_unset=True).items() if _differs(row, k, v)}
                if "email" in changes:
                    if changes["email"] is None:
                        raise ValidationFailed([{"field": "email", "message": "email cannot be removed"}])
                    other = await self._existing_contact(ws, self._email_hash(changes["email"]), conn)
                    if other and other != cid:
                        raise Conflict("contact_exists", "a contact with this email exists", {"id": other})
                    changes["email_hash"] = self._email_hash(changes["email"])
                    changes["email_domain"] = changes["email"].rsplit("@", 1)[1].lower()
                if not changes:
                    return 0
                before = await self.auto_enroll.before(conn, ws, [cid])
                await self.store.append(f"contact-{cid}", [ce.ContactUpdated(contact_id=cid, changes=changes)],
                                        None, workspace_id=ws, conn=conn)
                return (await self.auto_enroll.enroll_entrants(conn, ws, before)).added

        if await retry(attempt):
            self.work.notify()
        return await self.get_contact(ws, cid)

    async def erase_contact(self, ws: str, cid: str) -> dict[str, Any]:
        """Crypto-shred: stop the contact's enrollments, destroy its key, blank every read model."""
        async with self.store.transaction() as conn:
            row = await self._contact_row(ws, cid, conn)
            await self.stops.stop_contact(conn, ws, cid, "erased")
            await self.store.append(f"contact-{cid}", [ce.ContactErased(contact_id=cid, email_hash=row["email_hash"])],
                                    None, workspace_id=ws, conn=conn)
            await self.store.erase_subject(conn, cid)
            await self.store.erase_subject(conn, suppression_subject(row["email_hash"]))
            idem = schema.idempotency.c
            await conn.execute(schema.idempotency.delete().where(idem.workspace_id == ws,
                                                                 idem.response.like(f"%{cid}%")))
        await self._truncate_wal_after_erasure(cid)
        return {"id": cid, "deleted": True}

    async def _truncate_wal_after_erasure(self, cid: str) -> None:
        """SQLite: fold the WAL into the main file and cut it to zero bytes once the erasure committed.

        ``secure_delete`` zeroes what the erasure removed from the main file, but the WAL keeps
        every earlier version of the pages the contact's rows were on, in clear, until a checkpoint
        restarts it, and a running engine may not restart it for a long time. ``TRUNCATE`` copies
        the blanked pages in and empties the file. A reader still inside an old snapshot makes it
        give up (after a short wait); then it is tried again and, failing that, logged,
        since the erasure itself has committed. PostgreSQL needs nothing here: the projections
        rewrite every read-model row that held a clear value in the erasure's transaction (the old
        row versions stay in the table's pages until VACUUM, unreachable through SQL).
        """
        if self.store.dialect != "sqlite":
            return
        for attempt in range(1, WAL_TRUNCATE_ATTEMPTS + 1):
            async with self.store.write_engine.connect() as conn:
                # Straight on aiosqlite's connection: a checkpoint cannot run inside the transaction
                # SQLAlchemy would begin for a statement.
                driver: Any = (await conn.get_raw_connection()).driver_connection
                # The checkpoint holds the write lock while it waits for readers: wait less than the
                # store's long busy_timeout, so that other writers are not held up for a minute.
                usual = (await driver.execute_fetchall("PRAGMA busy_timeout"))[0][0]
                await driver.execute_fetchall(f"PRAGMA busy_timeout = {WAL_TRUNCATE_WAIT_MS}")
                try:
                    rows = await driver.execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)")
                finally:
                    await driver.execute_fetchall(f"PRAGMA busy_timeout = {int(usual)}")
            busy = int(rows[0][0]) if rows else 1
            if not busy:
                return
            if attempt < WAL_TRUNCATE_ATTEMPTS:
                await asyncio.sleep(0.1 * attempt)
        log.warning("erasure_wal_not_truncated", contact_id=cid,
                    detail="readers kept the WAL busy: erased values may stay in the -wal file until the next "
                           "checkpoint")

    # -- lists ----------------------------------------------------------------------------------
    async def create_list(self, ws: str, body: dict[str, Any]) -> dict[str, Any]:
        data: m.ListIn = m.parse(m.ListIn, body)
        lid = new_id("lst", self.clock.now())
        await self.store.append(f"list-{lid}", [ce.ListCreated(list_id=lid, name=data.name)], 0, workspace_id=ws)
        return views.list_view(await self._list_row(ws, lid), 0)

    async def _list_row(self, ws: str, lid: str) -> Any:
        c = t.lists.c
        return await self.reads.one(select(t.lists).where(c.id == lid, c.workspace_id == ws), "list", lid)

    async def list_lists(self, ws: str, page: int = 1, per_page: int = 50, *, cursor: str | None = None
                         ) -> dict[str, Any]:
        c = t.lists.c
        listing = Listing("lists", ws, {}, (SortKey(c.created_at, "created_at"), SortKey(c.id, "id")))
        result = await self.reads.paged(select(t.lists).where(c.workspace_id == ws), Page.of(page, per_page, cursor),
                                        views.list_view, listing)
        # Each list's members from its counter: one read for the page, none over the members.
        lt = totals.totals.c
        counts = {r["owner"]: int(r["total"]) for r in await self.reads.all(select(lt.owner, lt.total).where(
            lt.owner.in_([item["id"] for item in result["data"]]), lt.name == totals.LIST_MEMBERS))}
        for item in result["data"]:
            item["contact_count"] = counts.get(item["id"], 0)
        return result

    async def _own_contacts(self, ws: str, ids: list[str]) -> list[str]:
        c = t.contacts.c
        found = {r["id"] for r in await self.reads.all(select(c.id).where(c.workspace_id == ws, c.erased.is_(False),
                                                                          c.id.in_(ids)))}
        missing = [i for i in ids if i not in found]
        if missing:
            raise NotFound("contact", missing[0])
        return list(dict.fromkeys(ids))

    async def add_list_contacts(self, ws: str, lid: str, body: dict[str, Any]) -> dict[str, Any]:
        data: m.ContactIdsIn = m.parse(m.ContactIdsIn, body)
        await self._list_row(ws, lid)
        ids = await self._own_contacts(ws, data.contact_ids)
        async with self.store.transaction() as conn:
            # Joining a list is how a contact enters the auto-enrol selection of a campaign on that list.
            before = await self.auto_enroll.before(conn, ws, ids)
            await self.store.append(f"list-{lid}", [ce.ListContactsAdded(list_id=lid, contact_ids=tuple(ids))], None,
                                    workspace_id=ws, conn=conn)
            outcome = await self.auto_enroll.enroll_entrants(conn, ws, before)
        if outcome.added:
            self.work.notify()
        return {"list_id": lid, "added": len(ids)}

    async def remove_list_contacts(self, ws: str, lid: str, body: dict[str, Any]) -> dict[str, Any]:
        data: m.ContactIdsIn = m.parse(m.ContactIdsIn, body)
        await self._list_row(ws, lid)
        ids = list(dict.fromkeys(data.contact_ids))
        await self.store.append(f"list-{lid}", [ce.ListContactsRemoved(list_id=lid, contact_ids=tuple(ids))], None,
                                workspace_id=ws)
        return {"list_id": lid, "removed": len(ids)}

    # -- suppressions ---------------------------------------------------------------------------
    async def list_suppressions(self, ws: str, page: int = 1, per_page: int = 50, *, cursor: str | None = None
                                ) -> dict[str, Any]:
        """Oldest first. ``kind`` ends the order so that it is unique (the primary key is the
        workspace, kind and hash) though an email's and a domain's hashes never meet in practice."""
        s = t.suppressions.c
        q = select(t.suppressions).where(s.workspace_id == ws)
        listing = Listing("suppressions", ws, {}, (SortKey(s.created_at, "created_at"),
                                                    SortKey(s.value_hash, "value_hash"), SortKey(s.kind, "kind")))
        return await self.reads.paged(q, Page.of(page, per_page, cursor), views.suppression_view, listing,
                                      total=totals.total_query(ws, totals.SUPPRESSIONS))

    async def add_suppression(self, ws: str, body: dict[str, Any], reason: str = "manual") -> dict[str, Any]:
        data: m.SuppressionIn = m.parse(m.SuppressionIn, body)
        kind, value = ("email", data.email) if data.email else ("domain", data.domain)
        assert value is not None
        events = [self.suppressions.event(kind, value, reason)]
        await self.store.append(f"suppressions-{ws}", events, None, workspace_id=ws)
        return {"kind": kind, "value": value, "reason": reason}

    async def delete_suppression(self, ws: str, value: str) -> dict[str, Any]:
        h = self.vault.lookup_hash(value)
        s = t.suppressions.c
        row = await self.reads.one(select(t.suppressions).where(s.workspace_id == ws, s.value_hash == h),
                                   "suppression", value)
        await self.store.append(f"suppressions-{ws}", [ce.SuppressionRemoved(kind=row["kind"], value_hash=h)], None,
                                workspace_id=ws)
        return {"value": value, "deleted": True}

    # -- webhooks -------------------------------------------------------------------------------
    async def create_webhook(self, ws: str, body: dict[str, Any]) -> dict[str, Any]:
        from events.registry import all_types

        data: m.WebhookIn = m.parse(m.WebhookIn, body)
        errors = [{"field": "events", "message": f"unknown event type {e}"}
                  for e in data.events if e not in all_types() and e != "*"]
        # Only IP literals can be judged here (no DNS at creation); names are checked at every delivery.
        problem = destinations.url_problem(data.url, destinations.allows_private(self.options))
        if problem is not None:
            errors.append({"field": "url", "message": problem})
        if errors:
            raise ValidationFailed(errors)
        wid = new_id("whk", self.clock.now())
        secret = data.secret or secrets.token_urlsafe(24)
        await self.store.append(f"webhook-{wid}", [we.WebhookCreated(
            webhook_id=wid, url=data.url, event_types=tuple(data.events),
            secret_enc=self.vault.encrypt_secret(secret))], 0, workspace_id=ws)
        out = views.webhook_view(await self._webhook_row(ws, wid))
        out["secret"] = secret
        return out

    async def _webhook_row(self, ws: str, wid: str) -> Any:
        c = t.webhooks.c
        return await self.reads.one(select(t.webhooks).where(c.id == wid, c.workspace_id == ws), "webhook", wid)

    async def list_webhooks(self, ws: str, page: int = 1, per_page: int = 50, *, cursor: str | None = None
                            ) -> dict[str, Any]:
        c = t.webhooks.c
        listing = Listing("webhooks", ws, {}, (SortKey(c.created_at, "created_at"), SortKey(c.id, "id")))
        return await self.reads.paged(select(t.webhooks).where(c.workspace_id == ws), Page.of(page, per_page, cursor),
                                      views.webhook_view, listing)

    async def delete_webhook(self, ws: str, wid: str) -> dict[str, Any]:
        await self._webhook_row(ws, wid)
        async with self.store.transaction() as conn:
            await self.store.append(f"webhook-{wid}", [we.WebhookDeleted(webhook_id=wid)], None, workspace_id=ws,
                                    conn=conn)
            await forget_webhook(conn, wid)
        return {"id": wid, "deleted": True}

    # -- the raw log ----------------------------------------------------------------------------
    async def list_events(self, ws: str, *, after: int = 0, limit: int = 100, type: str | None = None,
                          stream: str | None = None, cursor: str | None = None) -> dict[str, Any]:
        """The workspace's events in log order after ``after`` (a position) or after a ``cursor``.

        The cursor is the same keyset as ``after`` (the last position answered), signed and bound
        to ``type`` and ``stream``: ``pagination.next_cursor`` leads to the next page and is null on
        the last one, while ``next_after`` keeps answering the last position, for clients that poll.
        """
        errors = []
        if not 1 <= limit <= 1000:
            errors.append({"field": "limit", "message": "limit must be between 1 and 1000"})
        if after < 0:
            errors.append({"field": "after", "message": "after must be >= 0"})
        if cursor is not None and not isinstance(cursor, str):
            errors.append({"field": "cursor", "message": "cursor must be a next_cursor string this listing answered"})
        elif cursor and after:
            errors.append({"field": "cursor", "message": "give after or cursor, not both"})
        if errors:
            raise ValidationFailed(errors)
        from events.registry import to_data

        scope = Cursors.scope("events", ws, {"type": type or None, "stream": stream or None})
        if cursor:
            key = self.reads.cursors.decode(scope, cursor, 1).key[0]
            if not isinstance(key, int) or key < 0:
                raise cursor_error()
            after = key
        found = await self.store.read_all(after, limit + 1, workspace_id=ws, types=[type] if type else None,
                                          stream=stream)
        evs, has_more = found[:limit], len(found) > limit
        next_cursor = self.reads.cursors.encode(scope, (evs[-1].position,), 0) if has_more and evs else None
        return {"data": [{"position": e.position, "stream": e.stream, "version": e.version, "type": e.type,
                          "data": _redact(to_data(e.event)), "metadata": _redact(dict(e.metadata or {})),
                          "recorded_at": format_time(e.recorded_at)} for e in evs],
                "next_after": evs[-1].position if evs else after,
                "pagination": {"next_cursor": next_cursor, "has_more": has_more}}


def _contacts_total(ws: str, *, q: str | None, status: str | None, list_id: str | None) -> Select[Any] | None:
    """The counter answering the contact listing's total for these filters, or None to count.

    The workspace's contacts, those of one status, and a list's members each have a counter
    (``projections/listing_totals.py``). A text search (``q``), or a list and a status together,
    has none: those rows are counted, exactly, since a search reads the matching rows anyway to
    find its page, and an operator searching a million contacts expects the number of matches
    the search box shows to be right rather than capped.
    """
    if q:
        return None
    if list_id:
        return None if status else totals.total_query(list_id, totals.LIST_MEMBERS)
    return totals.total_query(ws, totals.status_name(totals.CONTACTS, status) if status else totals.CONTACTS)


#: SMTP hosts of well-known providers -> the SPF record they ask customers to include.
_PROVIDER_SPF = {
    "smtp.gmail.com": "include:_spf.google.com",
    "smtp-relay.gmail.com": "include:_spf.google.com",
    "smtp.office365.com": "include:spf.protection.outlook.com",
    "smtp-mail.outlook.com": "include:spf.protection.outlook.com",
    "smtp.sendgrid.net": "include:sendgrid.net",
    "smtp.mailgun.org": "include:mailgun.org",
    "smtp.eu.mailgun.org": "include:mailgun.org",
    "smtp.zoho.com": "include:zoho.com",
    "smtp.zoho.eu": "include:zoho.eu",
    "smtp.fastmail.com": "include:spf.messagingengine.com",
    "smtp.postmarkapp.com": "include:spf.mtasv.net",
}


def _spf_term(smtp_host: str) -> str | None:
    """The SPF mechanism that authorises the sender's SMTP server, or None when it cannot be named."""
    if not smtp_host:
        return None
    if smtp_host in _PROVIDER_SPF:
        return _PROVIDER_SPF[smtp_host]
    if smtp_host.startswith("email-smtp.") and smtp_host.endswith(".amazonaws.com"):
        return "include:amazonses.com"
    if smtp_host == "localhost":
        return None
    try:
        address = ipaddress.ip_address(smtp_host.strip("[]"))
    except ValueError:
        return f"a:{_ascii_domain(smtp_host)}"
    if address.is_loopback:
        return None  # a local relay: what it relays through is what SPF must name, and it is unknown here
    return f"ip{address.version}:{address}"


def _ascii_domain(domain: str) -> str:
    value = domain.strip().rstrip(".").lower()
    try:
        return value if value.isascii() else value.encode("idna").decode("ascii")
    except UnicodeError:
        return value


def _dkim_request(body: Any) -> tuple[str | None, dkim.Algorithm | None, str | None]:
    """``(selector, algorithm, private_key_pem)`` from a ``POST .../dkim`` body, each None when not given.

    Checked by hand (the body is three optional fields) so the errors name the field in the
    contract's ``validation_failed`` shape.
    """
    data = body if isinstance(body, dict) else {}
    errors = [{"field": key, "message": "unknown field"} for key in sorted(set(data) - {
        "selector", "algorithm", "private_key_pem"})]
    selector = data.get("selector")
    if selector is not None:
        try:
            selector = dkim.check_selector(selector)
        except dkim.DkimKeyError as exc:
            errors.append({"field": "selector", "message": str(exc)})
    algorithm = data.get("algorithm")
    if algorithm is not None and algorithm not in dkim.ALGORITHMS:
        errors.append({"field": "algorithm", "message": f"algorithm must be one of {', '.join(dkim.ALGORITHMS)}"})
    pem = data.get("private_key_pem")
    if pem is not None and (not isinstance(pem, str) or not pem.strip()):
        errors.append({"field": "private_key_pem", "message": "private_key_pem must be a PEM private key"})
    if errors:
        raise ValidationFailed(errors)
    return selector, algorithm, pem


def _redact(data: Any) -> Any:
    """Encrypted secrets (``*_enc``) never leave through the API, not even as ciphertext."""
    if isinstance(data, dict):
        return {k: _redact(v) for k, v in data.items() if not k.endswith("_enc")}
    return data


def _differs(row: Any, key: str, value: Any) -> bool:
    old = row[key] if key in row else None
    if key == "custom_fields" and isinstance(old, str):
        old = json.loads(old)
    return bool(old != value)


__all__ = ["ApiKeyOwner", "ManagementService", "Workspace", "and_", "hash_api_key"]
