"""Preview and test sends: the campaign's steps rendered for one contact, or sent to test addresses."""

from __future__ import annotations

import json
import secrets
from typing import Any

from sqlalchemy import select

from engine.delivery import mime
from engine.delivery.templates import render, render_header
from engine.domain.models import check_email
from engine.errors import CampaignInvalid, NotFound, PlanLimitReached, ValidationFailed
from engine.service.base import ServiceBase
from events.catalog.email import TestEmailSent
from projections import tables as t

SAMPLE = {"first_name": "Alex", "last_name": "Sample", "email": "alex@example.com", "company": "Example Inc",
          "custom_fields": {}}


class PreviewService(ServiceBase):
    async def _merge_data(self, ws: str, contact_id: str | None) -> dict[str, Any]:
        if contact_id is None:
            return dict(SAMPLE)
        c = t.contacts.c
        row = await self._one(select(t.contacts).where(c.id == contact_id, c.workspace_id == ws,
                                                       c.erased.is_(False)), "contact", contact_id)
        return {"first_name": row["first_name"], "last_name": row["last_name"], "email": row["email"],
                "company": row["company"],
                "custom_fields": json.loads(row["custom_fields"]) if row["custom_fields"] else {}}

    async def preview(self, ws: str, cid: str, contact_id: str | None = None, step: int | None = None
                      ) -> dict[str, Any]:
        """Each step as the contact would get it (a sample contact when none is given)."""
        state, _ = await self._campaign(ws, cid)
        data = await self._merge_data(ws, contact_id)
        steps = state.definition.get("steps") or []
        if step is not None and not 1 <= step <= len(steps):
            raise ValidationFailed([{"field": "step", "message": f"step must be between 1 and {len(steps)}"}])
        out = []
        for n, s in enumerate(steps, start=1):
            if step is not None and n != step:
                continue
            html = render(s.get("body_html") or "", data, html=True)
            text = render(s["body_text"], data, html=False) if s.get("body_text") else mime.html_to_text(html)
            out.append({"step": n, "subject": render_header(s.get("subject") or "", data), "body_html": html,
                        "body_text": text})
        return {"steps": out}

    async def test_send(self, ws: str, cid: str, body: dict[str, Any]) -> dict[str, Any]:
        """Every step, now, to the given addresses through the campaign's first sender; not in stats."""
        extra = set(body or {}) - {"emails", "contact_id"}
        emails_in = (body or {}).get("emails")
        errors = [{"field": k, "message": "unknown field"} for k in sorted(extra)]
        emails: list[Any] = emails_in if isinstance(emails_in, list) else []
        if not emails or len(emails) > 20:
            errors.append({"field": "emails", "message": "give 1 to 20 email addresses"})
        else:
            for i, e in enumerate(emails):
                try:
                    check_email(e if isinstance(e, str) else "")
                except ValueError as exc:
                    errors.append({"field": f"emails.{i}", "message": str(exc)})
        if errors:
            raise ValidationFailed(errors)
        state, _ = await self._campaign(ws, cid)
        w = (await self._all(select(t.workspaces).where(t.workspaces.c.id == ws)))[0]
        steps = state.definition.get("steps") or []
        if w["monthly_limit"] is not None and \
                await self.sent_this_month(ws) + len(steps) * len(emails) > w["monthly_limit"]:  # type: ignore[attr-defined]
            raise PlanLimitReached("the workspace's monthly limit is reached")
        sender_ids = state.definition.get("sender_ids") or []
        if not steps or not sender_ids:
            raise CampaignInvalid(["the campaign needs steps and a sender for a test send"])
        s = t.senders.c
        rows = await self._all(select(t.senders).where(s.id == sender_ids[0], s.workspace_id == ws,
                                                       s.removed.is_(False)))
        if not rows:
            raise NotFound("sender", sender_ids[0])
        sender = rows[0]
        settings = self._smtp_settings(sender)
        preview = await self.preview(ws, cid, (body or {}).get("contact_id"))
        results: dict[str, Any] = {}
        domain = sender["email"].rsplit("@", 1)[1]
        for address in emails:
            outcomes = []
            for p in preview["steps"]:
                message_id = f"<test.{secrets.token_hex(8)}@{domain}>"
                built = mime.build_message(message_id=message_id, date=self.now(), from_email=sender["email"],
                                           from_name=sender["from_name"], to_email=address, to_name=None,
                                           subject=f"[TEST] {p['subject']}", body_html=p["body_html"],
                                           body_text=p["body_text"])
                r = await self.mailer.send(sender["id"], settings, sender["email"], [address],  # type: ignore[attr-defined]
                                           built.raw)
                outcomes.append({"step": p["step"], "outcome": r.outcome, "code": r.code, "message_id": message_id})
            results[address] = outcomes
        await self.store.append(f"campaign-{cid}", [TestEmailSent(campaign_id=cid, recipients=tuple(emails),
                                                                  steps=len(preview["steps"]),
                                                                  outcome={"sent": sum(
                                                                      1 for o in results.values() for x in o
                                                                      if x["outcome"] == "sent")})],
                                None, workspace_id=ws)
        return {"sent": results}
