"""Preview and test sends: the campaign's steps rendered for one contact, or sent to test addresses.

Both go through :mod:`engine.delivery.content.compose`, the path ``tick()`` uses, so what they show is what
a contact receives: same subject rule, same text part, same merge tags.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from sqlalchemy import select

from engine.clock import Clock
from engine.delivery.content import mime
from engine.delivery.content.compose import TEST_CONTACT_ID, compose_email, render_step
from engine.delivery.outbound import dkim
from engine.delivery.outbound.smtp import SmtpMailer
from engine.domain.models import check_email
from engine.domain.variants import choose_variant
from engine.errors import CampaignInvalid, NotFound, PlanLimitReached, ValidationFailed
from engine.service.base import Reads, SenderConnections
from engine.service.suppressions import Suppressions
from engine.service.usage import UsageCounts
from events.catalog.email import TestEmailSent
from events.store import EventStore
from events.vault import Vault
from projections import tables as t

SAMPLE = {"first_name": "Alex", "last_name": "Sample", "email": "alex@example.com", "company": "Example Inc",
          "custom_fields": {}}


class PreviewService:
    """Previews of a campaign's steps and test sends, through the compose path the tick uses."""

    def __init__(self, store: EventStore, clock: Clock, vault: Vault, options: dict[str, Any], public_url: str, *,
                 mailer: SmtpMailer, usage: UsageCounts, suppressions: Suppressions) -> None:
        self.store = store
        self.clock = clock
        self.vault = vault
        self.public_url = public_url
        self.mailer = mailer
        self.usage = usage
        self.reads = Reads(store)
        self.connections = SenderConnections(vault, options)
        # the same check sending, enrollment and unsubscribes use, so a test send honours exactly
        # the list a real send does
        self.suppressions = suppressions

    async def _merge_data(self, ws: str, contact_id: str | None) -> dict[str, Any]:
        if contact_id is None:
            return dict(SAMPLE)
        c = t.contacts.c
        row = await self.reads.one(select(t.contacts).where(c.id == contact_id, c.workspace_id == ws,
                                                            c.erased.is_(False)), "contact", contact_id)
        return {"first_name": row["first_name"], "last_name": row["last_name"], "email": row["email"],
                "company": row["company"],
                "custom_fields": json.loads(row["custom_fields"]) if row["custom_fields"] else {}}

    async def _enrollment_of(self, cid: str, contact_id: str | None) -> str | None:
        """The contact's enrollment in the campaign (one at most), whose email ids its preview signs.

        With it, ``{{unsubscribe_url}}`` in a preview is the very link the contact's email carries.
        """
        if contact_id is None:
            return None
        e = t.enrollments.c
        rows = await self.reads.all(select(e.id).where(e.campaign_id == cid, e.contact_id == contact_id))
        return str(rows[0]["id"]) if rows else None

    async def preview(self, ws: str, cid: str, contact_id: str | None = None, step: int | None = None
                      ) -> dict[str, Any]:
        """Each step as the contact would get it (a sample contact when none is given).

        ``{{unsubscribe_url}}`` shows the contact's one-click page, signed as its email would be
        (for a contact not enrolled, with a ``preview`` email id); with the sample contact it is empty.
        """
        state, _ = await self.reads.campaign(ws, cid)
        data = await self._merge_data(ws, contact_id)
        steps = state.definition.steps
        if step is not None and not 1 <= step <= len(steps):
            raise ValidationFailed([{"field": "step", "message": f"step must be between 1 and {len(steps)}"}])
        enrollment_id = await self._enrollment_of(cid, contact_id)
        out = []
        for number in range(1, len(steps) + 1):
            if step is not None and number != step:
                continue
            unsubscribe = ""
            if contact_id is not None:
                email_id = f"{enrollment_id}.{number}" if enrollment_id else f"preview.{number}"
                unsubscribe = mime.unsubscribe_url(mime.Tracking(
                    public_url=self.public_url, secret=self.vault.token_key, email_id=email_id,
                    workspace_id=ws, contact_id=contact_id)) or ""
            # A/B: an enrolled contact sees the variant its emails get (seeded, or the recorded
            # winner); every variant is listed too, so each can be checked before launch.
            winners = dict(state.variant_winners)
            chosen = first = None
            if enrollment_id is not None:
                chosen = choose_variant(steps[number - 1], enrollment_id, number, winners.get(number))
                first = choose_variant(steps[0], enrollment_id, 1, winners.get(1))
            rendered = render_step(state.definition, number, data, unsubscribe_url=unsubscribe, variant=chosen,
                                   first_variant=first)
            entry: dict[str, Any] = {"step": number, "subject": rendered.subject, "body_html": rendered.body_html,
                                     "body_text": rendered.body_text}
            ids = steps[number - 1].variant_ids()
            if ids:
                entry["variant"] = chosen
                entry["variants"] = []
                for variant in ids:
                    one = render_step(state.definition, number, data, unsubscribe_url=unsubscribe, variant=variant,
                                      first_variant=first)
                    entry["variants"].append({"variant": variant, "subject": one.subject,
                                              "body_html": one.body_html, "body_text": one.body_text})
            out.append(entry)
        return {"steps": out}

    async def _refuse_suppressed(self, ws: str, emails: list[str]) -> None:
        """Refuse the test addresses the workspace suppressed, by address or by domain.

        The contract says a suppressed address is never sent to; a test send is no exception, or it
        would be a way to mail someone who complained. Each refused address is named by its index.
        """
        values = [value for address in emails for value in (address, address.rsplit("@", 1)[1])]
        found = await self.suppressions.suppressed(ws, values)
        if not found:
            return
        errors = []
        for index, address in enumerate(emails):
            domain = address.rsplit("@", 1)[1]
            if self.vault.lookup_hash(address) in found:
                errors.append({"field": f"emails.{index}", "message": "the address is suppressed"})
            elif self.vault.lookup_hash(domain) in found:
                errors.append({"field": f"emails.{index}", "message": f"the domain {domain} is suppressed"})
        raise ValidationFailed(errors)

    async def test_send(self, ws: str, cid: str, body: dict[str, Any]) -> dict[str, Any]:
        """Every step, now, to the given addresses through the campaign's first sender; not in stats.

        Each message is composed as the real one (same subject after ``[TEST] ``, same parts,
        ``List-Unsubscribe`` when the campaign has it, the sender's DKIM signature), merged with the
        given contact or the sample one. The steps to one address form a thread like a contact's:
        each test address gets a pseudo-enrollment id ``test-<hex>``, whose Message-IDs match no
        email, so replies to a test send are not taken for a contact's. Opens and clicks are not
        tracked, and the unsubscribe link is signed for
        :data:`~engine.delivery.content.compose.TEST_CONTACT_ID`, which unsubscribes nobody.
        """
        extra = set(body or {}) - {"emails", "contact_id"}
        emails_in = (body or {}).get("emails")
        errors = [{"field": k, "message": "unknown field"} for k in sorted(extra)]
        emails: list[Any] = emails_in if isinstance(emails_in, list) else []
        normalized: list[str] = []
        if not emails or len(emails) > 20:
            errors.append({"field": "emails", "message": "give 1 to 20 email addresses"})
        else:
            for i, e in enumerate(emails):
                try:
                    normalized.append(check_email(e if isinstance(e, str) else ""))
                except ValueError as exc:
                    errors.append({"field": f"emails.{i}", "message": str(exc)})
        if errors:
            raise ValidationFailed(errors)
        state, _ = await self.reads.campaign(ws, cid)
        await self._refuse_suppressed(ws, normalized)
        w = (await self.reads.all(select(t.workspaces).where(t.workspaces.c.id == ws)))[0]
        definition = state.definition
        steps = definition.steps
        if w["monthly_limit"] is not None and \
                await self.usage.sent_this_month(ws) + len(steps) * len(emails) > w["monthly_limit"]:
            raise PlanLimitReached("the workspace's monthly limit is reached")
        sender_ids = definition.sender_ids
        if not steps or not sender_ids:
            raise CampaignInvalid(["the campaign needs steps and a sender for a test send"])
        s = t.senders.c
        rows = await self.reads.all(select(t.senders).where(s.id == sender_ids[0], s.workspace_id == ws,
                                                            s.removed.is_(False)))
        if not rows:
            raise NotFound("sender", sender_ids[0])
        sender = rows[0]
        settings = self.connections.smtp(sender)
        data = await self._merge_data(ws, (body or {}).get("contact_id"))
        options = definition.settings
        domain = sender["email"].rsplit("@", 1)[1]
        signing = dkim.signing_for(sender, self.vault.decrypt_secret)  # signed like the real sends
        now = self.clock.now()
        results: dict[str, Any] = {}
        for address in emails:
            enrollment_id = f"test-{secrets.token_hex(8)}"
            outcomes = []
            for number in range(1, len(steps) + 1):
                email_id = f"{enrollment_id}.{number}"
                message_id = mime.message_id_for(enrollment_id, number, domain)
                tracking = mime.Tracking(public_url=self.public_url, secret=self.vault.token_key, email_id=email_id,
                                         unsubscribe=options.unsubscribe_link, workspace_id=ws,
                                         contact_id=TEST_CONTACT_ID)
                composed = compose_email(definition, number, data, sender, enrollment_id=enrollment_id,
                                         email_id=email_id, message_id=message_id, now=now, tracking=tracking,
                                         test=True, to_email=address, dkim=signing)
                r = await self.mailer.send(sender["id"], settings, sender["email"],
                                           [composed.recipient], composed.raw)
                outcomes.append({"step": number, "outcome": r.outcome, "code": r.code, "message_id": message_id})
            results[address] = outcomes
        await self.store.append(f"campaign-{cid}", [TestEmailSent(campaign_id=cid, recipients=tuple(emails),
                                                                  steps=len(steps),
                                                                  outcome={"sent": sum(
                                                                      1 for o in results.values() for x in o
                                                                      if x["outcome"] == "sent")})],
                                None, workspace_id=ws)
        return {"sent": results}
