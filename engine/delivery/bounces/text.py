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

from engine.delivery.bounces.inbound_mime import parse_headers_text
from engine.delivery.bounces.model import Finding

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
    r"|original mail as follows:"
    r"|content-type:\s*message/rfc822"
    r"|content-type:\s*text/rfc822-headers"
    r"|-{2,}\s*(?:the )?original (?:message|e-?mail) (?:is )?(?:attached|below|header)"
    r")"
)
_ADDRESS_RE = re.compile(
    r"(?<![A-Za-z0-9._%+=/-])([A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)"
)
_MAX_CANDIDATES = 100
# An SMTP answer in prose: a reply code followed by its text ("550 User unknown", "550-5.1.1",
# "554 - Transaction failed") or an enhanced status code. A bare number ("Size: 512") is none.
_SMTP_CODE = re.compile(
    r"(?<![\d.])(?:[245]\d\d(?=[ \t]*-?[ \t]*[A-Za-z#<(\[:.])|[245]\.\d{1,3}\.\d{1,3}(?![\d.]))"
)
_SUMMARY_LINE = re.compile(r"^(?:\d{3}[ -]|<<<|>>>)")
_DAEMON_LOCALPARTS = ("mailer-daemon", "postmaster", "mail-daemon", "maildaemon", "mailerdaemon",
                      "no-reply", "noreply", "bounce", "bounces", "root", "abuse")
_NOT_A_RECIPIENT_LINE = re.compile(
    r"(?i)^\s*(?:to|from|cc|sender|reply-to|message-id|in-reply-to|references|return-path|envelope-from"
    r"|x-[a-z-]+|original-mail-from|mail from|subject)\s*:|mail from:?\s*<|envelope-from"
)
_LINE_START_ADDRESS = re.compile(
    r"^\s*(?:(?:\d{3}[ -](?:[245]\.\d{1,3}\.\d{1,3}\s+)?)|(?:recipient(?: address)?|address|to)\s*:\s*"
    r"|(?:rcpt to|<<<|>>>)[: ]*\s*)?[<\"(]?$"
)
_ORIGINAL_HEADER = re.compile(
    r"(?i)^(?:received|return-path|message-id|date|from|subject|mime-version|dkim-signature|x-mailer"
    r"|content-type|delivered-to|reply-to|to|cc):"
)


def _header_block_start(lines: list[str]) -> int:
    """Index of the first line of a pasted RFC 5322 header block (the returned message), or -1.

    Three header fields in a row (folded continuation lines allowed), with a ``Received``,
    ``Return-Path``, ``Message-ID``, ``Date`` or ``DKIM-Signature`` among them, is a copy of a
    message even without a marker line before it.
    """
    for i, line in enumerate(lines):
        if not _ORIGINAL_HEADER.match(line) and not line.lower().startswith("x-"):
            continue
        names: list[str] = []
        j = i
        while j < len(lines) and len(names) < 3:
            current = lines[j]
            if current[:1] in (" ", "\t") and names:
                j += 1
                continue
            if not (_ORIGINAL_HEADER.match(current) or (current.lower().startswith("x-") and ":" in current)):
                break
            names.append(current.split(":", 1)[0].lower())
            j += 1
        if len(names) == 3 and any(n in ("received", "return-path", "message-id", "date", "dkim-signature")
                                   for n in names):
            return i
    return -1


def cut_original(text: str) -> str:
    """The notification text before the copy of the returned message (all of it when none)."""
    match = _ORIGINAL_MARKERS.search(text)
    if match and match.start() > 0:
        text = text[: match.start()]
    lines = text.split("\n")
    start = _header_block_start(lines)
    if start > 0:
        text = "\n".join(lines[:start])
    return text


def embedded_message_text(text: str) -> str:
    """The text of a whole message pasted into a notification (headers first), or ``""``.

    Some gateways forward the real bounce as plain text under their own notice.
    """
    lines = text.split("\n")
    start = _header_block_start(lines)
    if start <= 0:
        return ""
    return "\n".join(lines[start:])


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


def _score(line: str, lowered: str, address: str) -> int:
    """How much a line looks like it names a failed recipient (3: listed at line start)."""
    at = lowered.find(address)
    if at < 0:
        return 0
    if _NOT_A_RECIPIENT_LINE.search(line):
        return 0
    if _LINE_START_ADDRESS.match(line[:at]):
        return 3
    return 2 if line[at - 1:at] == "<" else 1


def candidate_recipients(text: str, exclude: set[str]) -> list[str]:
    """The failed recipients a notification names, best evidence first.

    Failed addresses are listed at the start of a line ("<user@host>: ...", "  user@host") almost
    everywhere; addresses in prose ("please contact <support@...>") or in header-like lines
    ("To:", "Message-ID:", "MAIL FROM:<...>") are context. The sender's own addresses are kept
    only when nothing else is named (some senders write to themselves).
    """
    lines = [(line, line.lower()) for line in text.split("\n")]
    scored: list[tuple[int, bool, str]] = []
    for address in addresses_in(text)[:_MAX_CANDIDATES]:
        if is_daemon(address):
            continue
        wanted = address.lower()
        best = max((_score(line, lowered, wanted) for line, lowered in lines if wanted in lowered), default=0)
        if best == 0:
            continue
        scored.append((best, address.lower() in exclude, address))
    for sender_side in (False, True):
        pool = [(score, a) for score, excluded, a in scored if excluded == sender_side]
        if pool:
            top = max(score for score, _a in pool)
            return [a for score, a in pool if score == top]
    return []


def segments_for(text: str, recipients: list[str]) -> dict[str, str]:
    """Give each recipient the notification lines that describe its failure.

    Lines after a recipient's line belong to it until the next recipient is named. A recipient
    line that starts with a reply code is a Sendmail-style summary whose explanation came before
    it, so the unclaimed lines preceding such a line are given to it instead. Lines before the
    first recipient are boilerplate otherwise.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    wanted = [(r, r.lower()) for r in recipients]
    assigned: dict[str, list[str]] = {r: [] for r in recipients}
    pending: list[str] = []
    current: str | None = None
    current_is_summary = False
    for line in lines:
        lowered = line.lower()
        named = [r for r, low in wanted if low in lowered]
        if named:
            who = named[0]
            is_summary = bool(_SUMMARY_LINE.match(line))
            if is_summary:
                assigned[who].extend(pending)
            pending = []
            assigned[who].append(line)
            current, current_is_summary = who, is_summary
            continue
        if current is None or current_is_summary:
            pending.append(line)
        else:
            assigned[current].append(line)
    if pending and current is not None:
        assigned[current].extend(pending)
    return {r: "\n".join(v) for r, v in assigned.items()}


def first_paragraph_with(segment: str, needle: str) -> str:
    """The blank-line separated paragraph of ``segment`` that first contains ``needle``."""
    wanted = squeeze(needle).lower()
    for paragraph in re.split(r"\n\s*\n", segment):
        if wanted and wanted in squeeze(paragraph).lower():
            return paragraph
    return ""


def squeeze(text: str) -> str:
    """Collapse all whitespace runs to single spaces."""
    return " ".join(text.split())


def read_text_bounce(text: str, recipients: list[str]) -> list[Finding]:
    """One :class:`Finding` per recipient, with the text lines that concern it as diagnosis.

    A lone recipient whose lines carry no SMTP code (the address is only repeated in a header,
    spelled without its domain, or listed after the explanation) gets the whole notification.
    """
    parts = segments_for(text, recipients)
    findings = []
    for recipient in recipients:
        diagnosis = squeeze(parts.get(recipient, ""))
        if len(recipients) == 1 and (
            not re.search(r"[A-Za-z]", diagnosis.lower().replace(recipient.lower(), ""))
            or not _SMTP_CODE.search(diagnosis)
        ):
            # The explanation may come before the address ("Error: ... Message details: RCPT TO: x").
            diagnosis = squeeze(text)
        findings.append(Finding(recipient=recipient, diagnosis=diagnosis))
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
    "embedded_message_text",
    "first_paragraph_with",
    "is_daemon",
    "original_after_marker",
    "read_text_bounce",
    "segments_for",
    "squeeze",
]
