"""Read a delivery status notification, standard or not, into per-recipient failures.

Order of evidence: the RFC 3464 ``message/delivery-status`` fields when present (the same fields
pasted in the text otherwise), completed by the human-readable notification (which often carries
the SMTP command and the remote server's full answer); for prose-only bounces the failed addresses
and their error lines are read from the text. Every record then gets the same treatment: status and
reply codes from the text, the reason (format wording, remote-host rules, generic rules) and the
hard/soft/block type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from email.message import Message

from engine.delivery import inbound_mime as mime
from engine.delivery.dsn_detect import looks_like_bounce
from engine.delivery.dsn_fields import clean_address, has_fields, parse_delivery_status
from engine.delivery.dsn_model import Finding
from engine.delivery.dsn_mta import mta_reason
from engine.delivery.dsn_reason import RETRY_REASONS, bounce_type, find_reason
from engine.delivery.dsn_rhost import rhost_reason
from engine.delivery.dsn_status import find_command, find_reply, find_status, is_status, prefer_status
from engine.delivery.dsn_text import (
    addresses_in,
    candidate_recipients,
    cut_original,
    original_after_marker,
    read_text_bounce,
    segments_for,
    squeeze,
)

_DS_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})
_DELIVERED_ACTIONS = frozenset({"delivered", "relayed", "expanded"})


@dataclass
class BounceReading:
    """What a delivery status notification says: one finalised record per recipient."""

    findings: list[Finding] = field(default_factory=list)
    original: Message | None = None
    original_ids: list[str] = field(default_factory=list)


@dataclass
class _Context:
    subject: str
    sender: str
    text: str
    full_text: str


def _sender_side(msg: Message, originals: list[Message]) -> set[str]:
    found: set[str] = set()
    for name in ("From", "To", "Cc", "Return-Path", "Sender", "Reply-To", "Delivered-To", "X-Original-To"):
        for value in mime.headers(msg, name):
            found.update(a.lower() for a in addresses_in(value))
    for original in originals:
        for name in ("From", "Return-Path", "Sender", "Reply-To"):
            for value in mime.headers(original, name):
                found.update(a.lower() for a in addresses_in(value))
    return found


def _original(msg: Message, full_text: str) -> Message | None:
    for candidate in mime.original_parts(msg):
        if len(candidate.keys()) > 0:
            return candidate
    inline = original_after_marker(full_text)
    if inline is not None and len(inline.keys()) > 0:
        return inline
    return None


def read_bounce(msg: Message, prose_allowed: bool = True) -> BounceReading | None:
    """The failures a bounce reports, or ``None`` when ``msg`` is not a delivery notification.

    ``prose_allowed=False`` restricts the reading to structured reports (a spam complaint quoting
    a bounce-like text must not be taken for one).
    """
    notes = mime.notification_texts(msg)
    full_text = "\n".join(notes)
    text = cut_original(full_text)
    original = _original(msg, full_text)
    originals = [original] if original is not None else []
    exclude = _sender_side(msg, originals)
    reading = BounceReading(original=original)

    findings: list[Finding] = []
    for ds_text in mime.report_parts(msg, _DS_TYPES):
        report = parse_delivery_status(ds_text)
        for finding in report.recipients:
            finding.lhost = finding.lhost or report.reporting_mta
        findings.extend(report.recipients)
        reading.original_ids.extend(mime.message_ids(report.original_message_id))
    if not findings and has_fields(text):
        findings.extend(parse_delivery_status(text).recipients)

    subject = mime.header(msg, "Subject")
    sender = mime.header(msg, "From")
    failed = [a for v in mime.headers(msg, "X-Failed-Recipients") for a in addresses_in(v)]
    is_report = mime.content_type(msg) == "multipart/report" and (
        (msg.get_param("report-type") or "") in ("delivery-status", "")
    )
    if not findings:
        if not prose_allowed:
            return None
        if not is_report and not looks_like_bounce(subject, sender, mime.header(msg, "Return-Path"), text,
                                                   bool(failed)):
            return None
        recipients = failed or candidate_recipients(text, exclude)
        if not recipients and original is not None:
            recipients = [a for v in mime.headers(original, "To") for a in addresses_in(v)]
        findings = read_text_bounce(text, recipients)
    else:
        _complete_from_text(findings, text)

    context = _Context(subject=subject, sender=sender, text=text, full_text=full_text)
    for finding in findings:
        _finalise(finding, context)
    reading.findings = [f for f in findings if f.recipient or f.diagnosis or f.status]
    if original is not None:
        for value in mime.headers(original, "Message-ID"):
            reading.original_ids.extend(mime.message_ids(value))
    return reading


def _complete_from_text(findings: list[Finding], text: str) -> None:
    """Fill in what the delivery-status fields left out from the human-readable notification."""
    recipients = [f.recipient for f in findings if f.recipient]
    segments = segments_for(text, recipients) if recipients else {}
    for finding in findings:
        segment = squeeze(segments.get(finding.recipient, ""))
        if not finding.diagnosis.strip():
            finding.diagnosis = segment if segment.strip() != finding.recipient else ""
        if not finding.command and segment:
            finding.command = find_command(segment)


def _finalise(f: Finding, context: _Context) -> None:
    f.recipient = clean_address(f.recipient) if f.recipient else ""
    f.diagnosis = squeeze(f.diagnosis)
    f.diagnostic_type = (f.diagnostic_type or "SMTP").upper()
    if not is_status(f.status):
        f.status = ""
    in_text = find_status(f.diagnosis)
    reply = find_reply(f.diagnosis, in_text)
    f.status = prefer_status(f.status, in_text, reply)
    if not f.reply_code:
        f.reply_code = reply
    if not f.command:
        f.command = find_command(f.diagnosis)
    if f.action in _DELIVERED_ACTIONS or f.status.startswith("2."):
        f.reason = "delivered"
        return
    if not f.reason:
        f.reason = mta_reason(f, context.text, context.subject)
    if f.reason in RETRY_REASONS:
        remote = rhost_reason(f)
        if remote:
            f.reason = remote
    if f.reason in RETRY_REASONS:
        guessed = find_reason(f)
        if guessed not in ("", "undefined", "onhold") or not f.reason:
            f.reason = guessed
    if f.reply_code and f.status and f.reply_code[0] != f.status[0]:
        same_class = find_reply(f.diagnosis, f.status[0])
        f.reply_code = same_class if same_class.startswith(f.status[0]) else ""


def entry_type(f: Finding) -> str:
    """The engine-facing type of a failed recipient: ``hard``, ``soft`` or ``block``."""
    return bounce_type(f.reason, f.status, f.diagnosis)


__all__ = ["BounceReading", "entry_type", "read_bounce"]
