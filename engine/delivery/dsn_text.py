"""Read bounces written for humans only: recipients and error text from a plain-text notification.

Many MTAs (Exim, qmail, Sendmail V5, Gmail, Exchange 2003, Domino, ...) send no machine-readable
delivery status part, just prose with the failed addresses and the remote server's answer in it.
The reader cuts the text at the copy of the returned message, finds the failed addresses (those
that are not the sender's), and gives each address the lines that belong to it: the lines after it
up to the next failed address. A line that starts with an SMTP reply code and names an address is a
Sendmail-style summary, whose explanation precedes it, so orphan lines then go forward instead.
"""

from __future__ import annotations

import re
from email.message import Message

from engine.delivery.dsn_model import Finding
from engine.delivery.inbound_mime import parse_headers_text

_ORIGINAL_MARKERS = re.compile(
    r"(?im)^[ \t]*(?:"
    r"-{2,}\s*this is a copy of the message"
    r"|-{2,}\s*below this line is a copy of the message"
    r"|-{2,}\s*original message\s*-*\s*$"
    r"|-+\s*original message follows"
    r"|original message follows"
    r"|message headers follow"
    r"|original message headers:"
    r"|below is a copy of the original message"
    r"|-{2,}\s*the header of the original message"
    r"|-{2,}\s*unsent message follows"
    r"|-{2,}\s*returned message\s*-*"
    r"|included is a copy of the message header"
    r"|-{2,}\s*original message\s*$"
    r"|original message:\s*$"
    r"|content-type:\s*message/rfc822"
    r"|content-type:\s*text/rfc822-headers"
    r"|-{2,}\s*(?:the )?original (?:message|e-?mail) (?:is )?(?:attached|below|header)"
    r")"
)
_ADDRESS_RE = re.compile(
    r"(?<![A-Za-z0-9._%+=/-])([A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)"
)
_SUMMARY_LINE = re.compile(r"^\s*(?:\d{3}[ -]|<<<|>>>)")
_DAEMON_LOCALPARTS = ("mailer-daemon", "postmaster", "mail-daemon", "maildaemon", "mailerdaemon",
                      "no-reply", "noreply", "bounce", "bounces", "root", "abuse")


def cut_original(text: str) -> str:
    """The notification text before the copy of the returned message (all of it when none)."""
    match = _ORIGINAL_MARKERS.search(text)
    if match and match.start() > 0:
        return text[: match.start()]
    return text


def addresses_in(text: str) -> list[str]:
    """Mail addresses in ``text`` in order of appearance, without duplicates (case-insensitive)."""
    seen: dict[str, str] = {}
    for match in _ADDRESS_RE.finditer(text):
        address = match.group(1).strip(".'`")
        if "@" not in address or address.count("@") != 1:
            continue
        local, _, domain = address.rpartition("@")
        if not local or "." not in domain or domain.endswith("."):
            continue
        seen.setdefault(address.lower(), address)
    return list(seen.values())


def is_daemon(address: str) -> bool:
    """True for the service mailboxes bounces come from (``MAILER-DAEMON@``, ``postmaster@``)."""
    local = address.split("@", 1)[0].lower()
    return local in _DAEMON_LOCALPARTS or local.startswith(("mailer-daemon", "postmaster"))


def candidate_recipients(text: str, exclude: set[str]) -> list[str]:
    """Addresses named in the notification that are neither the sender's nor a service mailbox."""
    found = []
    for address in addresses_in(text):
        lowered = address.lower()
        if lowered in exclude or is_daemon(address):
            continue
        found.append(address)
    return found


def _mentions(line: str, address: str) -> bool:
    return address.lower() in line.lower()


def segments_for(text: str, recipients: list[str]) -> dict[str, str]:
    """Give each recipient the notification lines that describe its failure."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    owner: list[str | None] = []
    for line in lines:
        named = [r for r in recipients if _mentions(line, r)]
        owner.append(named[0] if len(named) == 1 else (named[0] if named else None))
    assigned: dict[str, list[str]] = {r: [] for r in recipients}
    pending: list[str] = []
    current: str | None = None
    current_is_summary = False
    for line, who in zip(lines, owner, strict=True):
        if who is not None:
            if current is not None and current_is_summary and pending:
                pass
            assigned[who].extend(pending)
            pending = []
            assigned[who].append(line)
            current, current_is_summary = who, bool(_SUMMARY_LINE.match(line))
            continue
        if current is None or current_is_summary:
            pending.append(line)
        else:
            assigned[current].append(line)
    if pending and current is not None:
        assigned[current].extend(pending)
    return {r: "\n".join(v) for r, v in assigned.items()}


def squeeze(text: str) -> str:
    """Collapse all whitespace runs to single spaces."""
    return " ".join(text.split())


def read_text_bounce(text: str, recipients: list[str]) -> list[Finding]:
    """One :class:`Finding` per recipient, with the text lines that concern it as diagnosis."""
    parts = segments_for(text, recipients)
    findings = []
    for recipient in recipients:
        findings.append(Finding(recipient=recipient, diagnosis=squeeze(parts.get(recipient, ""))))
    return findings




def original_after_marker(text: str) -> Message | None:
    """Headers of the returned message when it is pasted inline after a marker line."""
    match = _ORIGINAL_MARKERS.search(text)
    if not match:
        return None
    rest = text[match.end():]
    rest = rest.split("\n", 1)[1] if "\n" in rest else ""
    parsed = parse_headers_text(rest)
    return parsed if len(parsed.keys()) > 0 else None


__all__ = [
    "addresses_in",
    "candidate_recipients",
    "cut_original",
    "is_daemon",
    "original_after_marker",
    "read_text_bounce",
    "segments_for",
    "squeeze",
]
