"""Read Amazon SES event notifications (bounce, complaint, delivery) delivered as JSON by e-mail.

SES can publish its events to an SNS topic with an e-mail subscription; the message body is then
the JSON event itself, or an SNS envelope whose ``Message`` member holds it as a string. Both carry
per-recipient fields close to RFC 3464 (``emailAddress``, ``status``, ``diagnosticCode``), so they
become the same :class:`Finding` records as any other bounce.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from engine.delivery.bounces.model import Finding

# SES bounce subtypes that name the reason outright ("General" does not).
_SUBTYPE_REASON = {
    "MailboxFull": "mailboxfull",
    "MessageTooLarge": "mesgtoobig",
    "ContentRejected": "contenterror",
    "AttachmentRejected": "securityerror",
    # SES keeps an address on its suppression list after it bounced hard.
    "Suppressed": "userunknown",
    "OnAccountSuppressionList": "userunknown",
}


@dataclass
class SesEvent:
    """One SES notification: its type and what it says about each recipient."""

    kind: str  # "bounce", "feedback" or "delivery_report"
    findings: list[Finding] = field(default_factory=list)
    feedback_type: str = ""
    message_id: str = ""


def _load(text: str) -> dict[str, object] | None:
    body = text.split("\n\n--\n", 1)[0].replace("!\n ", "")
    start, end = body.find("{"), body.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        data = json.loads(body[start:end + 1])
    except (ValueError, RecursionError):
        return None
    if isinstance(data, dict) and isinstance(data.get("Message"), str):
        try:
            data = json.loads(str(data["Message"]))
        except (ValueError, RecursionError):
            return None
    return data if isinstance(data, dict) else None


def _dicts(value: object) -> list[dict[str, object]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _obj(data: dict[str, object], key: str) -> dict[str, object]:
    value = data.get(key)
    return value if isinstance(value, dict) else {}


def read_ses_event(text: str) -> SesEvent | None:
    """The SES event in a notification body, or ``None`` when the body is not one."""
    if "notificationType" not in text and "eventType" not in text:
        return None
    data = _load(text)
    if data is None:
        return None
    kind = str(data.get("notificationType") or data.get("eventType") or "")
    message_id = str(_obj(data, "mail").get("messageId", "") or "")
    if kind == "Bounce":
        bounce = _obj(data, "bounce")
        preset = _SUBTYPE_REASON.get(str(bounce.get("bounceSubType", "")), "")
        findings = [
            Finding(
                recipient=str(r.get("emailAddress", "")),
                status=str(r.get("status", "") or ""),
                action=str(r.get("action", "") or "failed").lower(),
                diagnosis=re.sub(r"^\s*smtp;\s*", "", str(r.get("diagnosticCode", "") or ""), flags=re.I),
                reason=preset,
                lhost=str(bounce.get("reportingMTA", "") or ""),
            )
            for r in _dicts(bounce.get("bouncedRecipients"))
        ]
        return SesEvent(kind="bounce", findings=findings, message_id=message_id)
    if kind == "Complaint":
        complaint = _obj(data, "complaint")
        findings = [Finding(recipient=str(r.get("emailAddress", "")), reason="feedback")
                    for r in _dicts(complaint.get("complainedRecipients"))]
        feedback_type = str(complaint.get("complaintFeedbackType", "") or "abuse")
        return SesEvent(kind="feedback", findings=findings, feedback_type=feedback_type, message_id=message_id)
    if kind == "Delivery":
        delivery = _obj(data, "delivery")
        listed = delivery.get("recipients")
        recipients = listed if isinstance(listed, list) else []
        findings = [Finding(recipient=str(r), action="delivered", reason="delivered",
                            diagnosis=str(delivery.get("smtpResponse", "") or "")) for r in recipients]
        return SesEvent(kind="delivery_report", findings=findings, message_id=message_id)
    return None


__all__ = ["SesEvent", "read_ses_event"]
