"""Read a delivery status notification, standard or not, into per-recipient failures.

Order of evidence: the RFC 3464 ``message/delivery-status`` fields when present (the same fields
pasted in the text otherwise), completed by the human-readable notification (which often carries
the SMTP command and the remote server's full answer); for prose-only bounces the failed addresses
and their error lines are read from the text; Amazon SES JSON events and bounces forwarded inside
another notification are recognised too. A record without an ``Action`` field is marked
``delayed`` when the notification is a "still trying" warning, and takes the host that handed us
the notification as its local MTA when no ``Reporting-MTA`` names one. Every record then gets the
same treatment (:mod:`engine.delivery.bounces.finalise`): codes, command and reason.
"""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass, field
from email.message import Message

from engine.delivery.bounces import inbound_mime as mime
from engine.delivery.bounces.detect import is_delay_warning, looks_like_bounce
from engine.delivery.bounces.fields import DSN_FIELDS, has_fields, parse_delivery_status
from engine.delivery.bounces.finalise import finalise
from engine.delivery.bounces.model import Finding
from engine.delivery.bounces.mta import command_from_wording, families_of
from engine.delivery.bounces.ses import read_ses_event
from engine.delivery.bounces.status import find_command
from engine.delivery.bounces.text import (
    addresses_in,
    candidate_recipients,
    cut_original,
    embedded_message_text,
    first_paragraph_with,
    original_after_marker,
    read_text_bounce,
    segments_for,
    squeeze,
)

_DS_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})
_MAX_NESTING = 2
# Notifications are short; a huge text part is a quoted message, and reading all of it would only
# cost time (the per-line recipient matching is quadratic in the worst case).
_MAX_TEXT = 262_144
_PASTED_ID_RE = re.compile(r"(?im)^[ \t]*message-id[ \t]*:[ \t]*(<[^<>\s]+>)")


@dataclass
class BounceReading:
    """What a delivery status notification says: one finalised record per recipient."""

    findings: list[Finding] = field(default_factory=list)
    original_ids: list[str] = field(default_factory=list)


def _sender_side(msg: Message, original: Message | None) -> set[str]:
    """Addresses of the bounced message's sender side, which are not failed recipients."""
    found: set[str] = set()
    for name in ("From", "To", "Cc", "Return-Path", "Sender", "Reply-To", "Delivered-To", "X-Original-To"):
        for value in mime.headers(msg, name):
            found.update(a.lower() for a in addresses_in(value))
    if original is not None:
        for name in ("From", "Return-Path", "Sender", "Reply-To"):
            for value in mime.headers(original, name):
                found.update(a.lower() for a in addresses_in(value))
    return found


def _original(msg: Message, full_text: str) -> Message | None:
    for candidate in mime.original_parts(msg):
        if len(candidate.keys()) > 0:
            return candidate
    return original_after_marker(full_text)


def _nested(msg: Message, full_text: str, depth: int) -> BounceReading | None:
    """A bounce forwarded inside this one (as an attachment or pasted as text), read as such."""
    if depth >= _MAX_NESTING:
        return None
    candidates = [m for m in mime.original_parts(msg) if mime.header(m, "Content-Type")]
    embedded = embedded_message_text(full_text)
    if embedded:
        try:
            candidates.append(email.message_from_string(embedded, policy=email.policy.compat32))
        except Exception:  # pragma: no cover - compat32 does not raise on text
            pass
    for candidate in candidates:
        reading = read_bounce(candidate, depth=depth + 1)
        if reading is not None and any(f.recipient for f in reading.findings):
            return reading
    return None


def read_bounce(msg: Message, prose_allowed: bool = True, depth: int = 0) -> BounceReading | None:
    """The failures a bounce reports, or ``None`` when ``msg`` is not a delivery notification.

    ``prose_allowed=False`` restricts the reading to structured reports (a spam complaint quoting
    a bounce-like text must not be taken for one).
    """
    full_text = "\n".join(mime.notification_texts(msg))[:_MAX_TEXT]
    text = cut_original(full_text)
    original = _original(msg, full_text)
    reading = BounceReading()
    subject = mime.header(msg, "Subject")

    findings: list[Finding] = []
    for ds_text in mime.report_parts(msg, _DS_TYPES):
        report = parse_delivery_status(ds_text, lenient=True)
        for finding in report.recipients:
            finding.lhost = finding.lhost or report.reporting_mta
        findings.extend(report.recipients)
        reading.original_ids.extend(mime.message_ids(report.original_message_id))
    if not findings and has_fields(text):
        findings.extend(parse_delivery_status(text).recipients)

    if findings:
        _complete_from_text(findings, text)
    else:
        ses = read_ses_event(full_text)
        if ses is not None and ses.kind == "bounce":
            findings = ses.findings
        elif not prose_allowed:
            return None
        else:
            prose = _read_prose(msg, full_text, text, original, depth)
            if prose is None or isinstance(prose, BounceReading):
                return prose
            findings = prose

    # au's spam filter marks the messages it refused with this header.
    filtered = mime.header(msg, "X-SPASIGN").upper() == "NG"
    families = families_of(subject, text, mime.header(msg, "From"))
    delayed = is_delay_warning(subject, text)
    sending_host = _sending_host(msg)
    for finding in findings:
        if delayed and not finding.action:
            finding.action = "delayed"
        finding.lhost = finding.lhost or sending_host
        if filtered and not finding.reason:
            finding.reason = "filtered"
        finalise(finding, families)
    reading.findings = [f for f in findings if f.recipient or f.diagnosis or f.status]
    if original is not None:
        for value in mime.headers(original, "Message-ID"):
            reading.original_ids.extend(mime.message_ids(value))
    if not reading.original_ids:
        reading.original_ids.extend(_pasted_message_ids(msg))
    if not reading.findings and not reading.original_ids and not _looks_like_bounce(msg, text):
        return None  # a declared report with nothing in it tells the engine nothing
    return reading


_RECEIVED_FROM_RE = re.compile(r"(?i)^\s*from\s+([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)")
_RECEIVED_PAREN_RE = re.compile(r"(?i)^\s*from\s+\S+\s+\(([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)[\s\[)]")


def _sending_host(msg: Message) -> str:
    """The host that handed the notification to us: the ``from`` of its topmost ``Received`` field.

    A notification without a ``Reporting-MTA`` still names the MTA that wrote it there; a
    provider's own catalogue (:mod:`engine.delivery.bounces.rhost`) applies when that MTA is the
    provider's. Bare IP addresses and single-label names say nothing and are skipped.
    """
    received = mime.headers(msg, "Received")
    if not received:
        return ""
    for pattern in (_RECEIVED_PAREN_RE, _RECEIVED_FROM_RE):
        match = pattern.match(received[0])
        if match and not match.group(1).replace(".", "").isdigit():
            return match.group(1).lower()
    return ""


def _pasted_message_ids(msg: Message) -> list[str]:
    """Message-IDs of a returned message pasted without a recognisable marker or MIME part.

    Any ``Message-ID:`` header line inside the body that is not the bounce's own belongs to the
    copy of the original (or its headers) that the MTA appended.
    """
    own = set(mime.message_ids(mime.header(msg, "Message-ID")))
    for part, _ctype, _inside in mime.iter_parts(msg):
        # A part whose "MIME headers" are the original's headers (no blank line after the boundary).
        candidates = mime.message_ids(mime.header(part, "Message-ID")) if part is not msg else []
        candidates += _PASTED_ID_RE.findall(mime.as_text(part)[:_MAX_TEXT])
        for found in candidates:
            if found not in own:
                return [found]
    return []


def _looks_like_bounce(msg: Message, text: str) -> bool:
    # fml mailing-list servers report refused posts from "<list>-admin@" with this header.
    if "fml" in mime.header(msg, "X-MLServer").lower() and "-admin@" in mime.header(msg, "From").lower():
        return True
    failed = bool(mime.headers(msg, "X-Failed-Recipients"))
    return looks_like_bounce(mime.header(msg, "Subject"), mime.header(msg, "From"),
                             mime.header(msg, "Return-Path"), text, failed)


def _read_prose(msg: Message, full_text: str, text: str, original: Message | None,
                depth: int) -> list[Finding] | BounceReading | None:
    """Failures of a bounce without delivery-status fields, read from its text.

    Returns ``None`` when the message is no bounce, a whole reading when the real bounce is
    forwarded inside this one, otherwise the records read from the prose.
    """
    is_report = mime.content_type(msg) == "multipart/report" and (
        str(msg.get_param("report-type") or "").lower() in ("delivery-status", "")
    )
    if not is_report and not _looks_like_bounce(msg, text):
        return None
    nested = _nested(msg, full_text, depth)
    if nested is not None:
        return nested
    failed = [a for v in mime.headers(msg, "X-Failed-Recipients") for a in addresses_in(v)]
    recipients = failed or candidate_recipients(text, _sender_side(msg, original))
    if not recipients and original is not None:
        recipients = [a for v in mime.headers(original, "To") for a in addresses_in(v)]
    return read_text_bounce(text, recipients)


def _complete_from_text(findings: list[Finding], text: str) -> None:
    """Fill in what the delivery-status fields left out from the human-readable notification.

    The prose often quotes the remote answer in full, with the SMTP command ("in reply to RCPT TO
    command") that the ``Diagnostic-Code`` field drops; when it contains the field's text, the
    longer prose version is the better diagnosis.
    """
    recipients = [f.recipient for f in findings if f.recipient]
    prose = "\n".join(
        line for line in text.split("\n") if line.split(":", 1)[0].strip().lower() not in DSN_FIELDS
    )
    segments = segments_for(prose, recipients) if recipients else {}
    for finding in findings:
        raw_segment = segments.get(finding.recipient, "")
        segment = _strip_address_prefix(squeeze(raw_segment), finding.recipient)
        if not segment:
            continue
        current = squeeze(finding.diagnosis)
        if not current:
            finding.diagnosis = segment
        else:
            paragraph = _strip_address_prefix(squeeze(first_paragraph_with(raw_segment, current)),
                                              finding.recipient)
            if len(paragraph) > len(current):
                finding.diagnosis = paragraph
        if not finding.command:
            finding.command = command_from_wording(segment) or find_command(segment)


def _strip_address_prefix(segment: str, recipient: str) -> str:
    lowered = segment.lower()
    for prefix in (f"<{recipient.lower()}>:", f"{recipient.lower()}:", f"<{recipient.lower()}>",
                   recipient.lower()):
        if lowered.startswith(prefix):
            return segment[len(prefix):].strip()
    return segment


__all__ = ["BounceReading", "read_bounce"]
