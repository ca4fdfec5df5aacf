"""Read the machine-readable fields of an RFC 3464 delivery status notification.

The ``message/delivery-status`` part holds one block of per-message fields (``Reporting-MTA``...)
followed by one block per recipient (``Final-Recipient``, ``Action``, ``Status``,
``Diagnostic-Code``...). Real MTAs bend the format: blocks without blank lines between them,
fields folded over several lines, the same fields pasted into a ``text/plain`` part. The reader
below is lenient with all of that; it only needs ``Name: value`` lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from engine.delivery.bounces.model import Finding

_FIELD_RE = re.compile(r"^([A-Za-z][A-Za-z0-9-]*)[ \t]*:[ \t]*(.*)$")
_RECIPIENT_FIELDS = ("final-recipient", "original-recipient", "x-actual-recipient")
_ADDRESS_RE = re.compile(r"[^\s<>\"'(),;:]+@[^\s<>\"'(),;:]+")
DSN_FIELDS = frozenset(
    {"final-recipient", "original-recipient", "x-actual-recipient", "action", "status", "remote-mta",
     "diagnostic-code", "last-attempt-date", "will-retry-until", "reporting-mta", "received-from-mta",
     "arrival-date", "x-original-message-id", "final-log-id"}
)


@dataclass
class DeliveryStatus:
    """The per-message fields and the per-recipient records of one delivery-status report."""

    reporting_mta: str = ""
    original_message_id: str = ""
    recipients: list[Finding] = field(default_factory=list)


def clean_address(value: str) -> str:
    """``rfc822; <Kijitora@Example.jp>`` -> ``Kijitora@Example.jp`` (non-mail targets kept as is)."""
    value = value.strip()
    if ";" in value:
        kind, _, rest = value.partition(";")
        if " " not in kind.strip() and "@" not in kind:
            value = rest.strip()
    match = _ADDRESS_RE.search(value)
    if match:
        return match.group(0).strip(".").strip("'\"")
    return value.strip("<>\"' ")


def _unfold(text: str, lenient: bool) -> list[str]:
    """Join folded field values; ``lenient`` also joins unindented non-field lines (broken folding)."""
    lines: list[str] = []
    for raw in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        folded = raw[:1] in (" ", "\t") or (lenient and raw.strip() and not _FIELD_RE.match(raw))
        if folded and lines and lines[-1] and _FIELD_RE.match(lines[-1]):
            lines[-1] = lines[-1] + " " + raw.strip()
        else:
            lines.append(raw.rstrip())
    return lines


# RFC 3464 section 2.3.3: the five action values, keyed by the stem that real MTAs keep when they
# bend the spelling ("Failure", "failed (permanent)", "Delayed - will retry", "deliverable").
_ACTIONS = (("fail", "failed"), ("delay", "delayed"), ("deliver", "delivered"), ("relay", "relayed"),
            ("expand", "expanded"))


def normalise_action(value: str) -> str:
    """The RFC 3464 action a field value means (``failed``, ``delayed``...), or its first word."""
    words = value.lower().split()
    if not words:
        return ""
    for stem, action in _ACTIONS:
        if words[0].startswith(stem):
            return action
    return words[0].strip(";,.")


def _value_after_type(value: str) -> tuple[str, str]:
    kind, sep, rest = value.partition(";")
    if sep and " " not in kind.strip() and kind.strip():
        return kind.strip().upper(), rest.strip()
    return "", value.strip()


def parse_delivery_status(text: str, lenient: bool = False) -> DeliveryStatus:
    """Parse delivery-status fields into per-message values and one record per recipient.

    A record ends at a blank line; without blank lines, a field seen twice starts the next one.
    ``lenient`` (for a real delivery-status part, where every line is a field) treats unindented
    lines that are no field as the continuation of the previous field.
    """
    report = DeliveryStatus()
    current: Finding | None = None
    seen: set[str] = set()
    block_ended = False
    for line in _unfold(text, lenient):
        if not line.strip():
            block_ended = True
            continue
        match = _FIELD_RE.match(line)
        if not match:
            continue
        name, value = match.group(1).lower(), match.group(2).strip()
        if name not in DSN_FIELDS or name in ("received-from-mta", "arrival-date"):
            continue
        if name == "reporting-mta":
            report.reporting_mta = _value_after_type(value)[1]
            continue
        if name == "x-original-message-id":
            report.original_message_id = value
            continue
        if current is not None and current.recipient and (block_ended or name in seen):
            current = None
        block_ended = False
        if current is None:
            current = Finding()
            report.recipients.append(current)
            seen = set()
        seen.add(name)
        _apply(current, name, value)
    report.recipients = [r for r in report.recipients if r.recipient or r.status or r.diagnosis]
    return report


def _apply(f: Finding, name: str, value: str) -> None:
    if name in _RECIPIENT_FIELDS:
        address = clean_address(value)
        # Final-Recipient wins over Original-/X-Actual-Recipient unless it is no mail address
        # (a pipe or a file the message was delivered to).
        if address and (not f.recipient or (name == "final-recipient" and "@" in address)):
            f.recipient = address
    elif name == "action":
        f.action = normalise_action(value)
    elif name == "will-retry-until" and not f.action:
        # Only a "delayed" report may say until when it will retry (RFC 3464, section 2.3.8).
        f.action = "delayed"
    elif name == "status":
        f.status = value.split()[0] if value.split() else ""
    elif name == "remote-mta":
        f.rhost = _value_after_type(value)[1]
    elif name == "diagnostic-code":
        kind, text = _value_after_type(value)
        f.diagnostic_type = kind or f.diagnostic_type
        f.diagnosis = text


def has_fields(text: str) -> bool:
    """True when ``text`` carries delivery-status fields naming at least one recipient."""
    return bool(re.search(r"(?im)^(?:final|original)-recipient[ \t]*:", text)) and bool(
        re.search(r"(?im)^(?:action|status)[ \t]*:", text)
    )


__all__ = ["DSN_FIELDS", "DeliveryStatus", "clean_address", "has_fields", "normalise_action",
           "parse_delivery_status"]
