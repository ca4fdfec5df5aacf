"""Name the reason of one failed delivery, and say what the engine should do about it.

The decision weighs three clues the way Sisimai (the reference bounce analyser the corpus labels
come from) does: the enhanced status code, the wording of the remote server's answer, and the SMTP
command it was answering. A status code alone is not trusted blindly: ``5.1.1`` with a diagnostic
about a full mailbox is a full mailbox, and ``5.7.1`` may be a spam block, an unknown user behind a
filter or a relay refusal depending on the words. The reasons are tried in a fixed order, the
specific before the generic.
"""

from __future__ import annotations

from collections.abc import Callable

from engine.delivery.bounces import phrases as reply_phrases
from engine.delivery.bounces import phrases_block as block_phrases
from engine.delivery.bounces.model import Finding
from engine.delivery.bounces.status import find_reply, find_status, status_reason

# Reasons the per-format readers may guess but the shared analysis should re-examine.
RETRY_REASONS = frozenset(
    {"", "undefined", "onhold", "systemerror", "securityerror", "expired", "networkerror", "hostunknown",
     "userunknown"}
)
HARD_REASONS = frozenset({"userunknown", "hostunknown", "hasmoved"})
SOFT_REASONS = frozenset(
    {"mailboxfull", "exceedlimit", "expired", "suspend", "toomanyconn", "networkerror", "systemerror",
     "systemfull", "onhold", "undefined", "speeding", "notaccept"}
)
_BEFORE_DATA = ("CONN", "EHLO", "HELO", "MAIL", "RCPT")

_PHRASES: dict[str, tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]] = {
    "userunknown": (reply_phrases.USERUNKNOWN, reply_phrases.USERUNKNOWN_SEQ),
    "hostunknown": (reply_phrases.HOSTUNKNOWN, reply_phrases.HOSTUNKNOWN_SEQ),
    "mailboxfull": (reply_phrases.MAILBOXFULL, reply_phrases.MAILBOXFULL_SEQ),
    "suspend": (reply_phrases.SUSPEND, ()),
    "hasmoved": (reply_phrases.HASMOVED, ()),
    "filtered": (reply_phrases.FILTERED, ()),
    "notaccept": (reply_phrases.NOTACCEPT, ()),
    "expired": (reply_phrases.EXPIRED, reply_phrases.EXPIRED_SEQ),
    "networkerror": (reply_phrases.NETWORKERROR, ()),
    "systemerror": (reply_phrases.SYSTEMERROR, reply_phrases.SYSTEMERROR_SEQ),
    "systemfull": (reply_phrases.SYSTEMFULL, ()),
    "toomanyconn": (reply_phrases.TOOMANYCONN, ()),
    "speeding": (reply_phrases.SPEEDING, ()),
    "exceedlimit": (reply_phrases.EXCEEDLIMIT, ()),
    "mesgtoobig": (reply_phrases.MESGTOOBIG, ()),
    "mailererror": (reply_phrases.MAILERERROR, ()),
    "blocked": (block_phrases.BLOCKED, block_phrases.BLOCKED_SEQ),
    "spamdetected": (block_phrases.SPAMDETECTED, block_phrases.SPAMDETECTED_SEQ),
    "rejected": (block_phrases.REJECTED, ()),
    "policyviolation": (block_phrases.POLICYVIOLATION, block_phrases.POLICYVIOLATION_SEQ),
    "requireptr": (block_phrases.REQUIREPTR, block_phrases.REQUIREPTR_SEQ),
    "authfailure": (block_phrases.AUTHFAILURE, block_phrases.AUTHFAILURE_SEQ),
    "badreputation": (block_phrases.BADREPUTATION, ()),
    "norelaying": (block_phrases.NORELAYING, ()),
    "securityerror": (block_phrases.SECURITYERROR, block_phrases.SECURITYERROR_SEQ),
    "virusdetected": (block_phrases.VIRUSDETECTED, ()),
    "contenterror": (block_phrases.CONTENTERROR, ()),
    "notcompliantrfc": (block_phrases.NOTCOMPLIANTRFC, block_phrases.NOTCOMPLIANTRFC_SEQ),
    "failedstarttls": (block_phrases.FAILEDSTARTTLS, ()),
    "vacation": (reply_phrases.VACATION, ()),
}


def _aligned(text: str, pieces: tuple[str, ...]) -> bool:
    at = 0
    for piece in pieces:
        found = text.find(piece, at)
        if found < 0:
            return False
        at = found + len(piece)
    return True


def says(reason: str, text: str) -> bool:
    """True when the lower-cased diagnostic ``text`` uses a wording known for ``reason``."""
    if not text:
        return False
    if reason == "rejected" and any(p in text for p in block_phrases.REJECTED_NOT):
        return False
    phrases, sequences = _PHRASES[reason]
    return any(p in text for p in phrases) or any(_aligned(text, s) for s in sequences)


def _explicit(reason: str) -> bool:
    """True for a reason that names a cause (``onhold``/``undefined`` do not)."""
    return reason not in ("", "undefined", "onhold")


# --- probes: does the record as a whole (status, command, text) point to this reason? -----------


def _probe_userunknown(f: Finding, by_status: str, text: str) -> bool:
    """A dead address: an ``X.1.1``-like status, or "user unknown" words that nothing contradicts.

    Without such a status, the words count only at ``RCPT``: the recipient was refused by name
    before any content was seen. At any other stage, or an unknown one, the words alone do not
    prove the mailbox is gone: after ``DATA`` the recipient had been accepted, and filtering
    gateways (McAfee, MXLogic, SurfControl, Zoho) answer "550 No such user" for mail their rules
    refuse. Sisimai, the reference this classifier is scored against, reads those as ``filtered``
    (:func:`_probe_filtered`), and so do we: a wrongly condemned address is never mailed again,
    while a filter refusal only counts against the sender.
    """
    if by_status == "suspend":
        return False
    if by_status == "userunknown":
        others = ("norelaying", "blocked", "mailboxfull", "hasmoved", "rejected", "notaccept")
        return not any(says(o, text) for o in others)
    if f.command == "RCPT":
        return says("userunknown", text)
    return False


def _probe_filtered(f: Finding, by_status: str, text: str) -> bool:
    """Refused by the recipient's filter: the mailbox exists (``X.2.x``) or the refusal came after DATA."""
    if by_status == "suspend":
        return False
    if by_status == "filtered":
        return says("userunknown", text) or says("filtered", text)
    if f.command in _BEFORE_DATA:
        return False
    return says("filtered", text) or says("userunknown", text)


def _probe_rejected(f: Finding, by_status: str, text: str) -> bool:
    if by_status == "rejected":
        return True
    if f.command == "MAIL":
        return says("rejected", text)
    if f.command == "DATA" and by_status != "userunknown":
        return says("rejected", text)
    if not _explicit(by_status) or by_status in ("securityerror", "systemerror"):
        return says("rejected", text)
    return False


def _probe_hostunknown(f: Finding, by_status: str, text: str) -> bool:
    if by_status == "hostunknown":
        return not says("networkerror", text)
    return says("hostunknown", text)


def _probe_spamdetected(f: Finding, by_status: str, text: str) -> bool:
    if not f.status:
        return False
    if by_status == "spamdetected":
        return True
    if f.command in _BEFORE_DATA:
        return False
    return says("spamdetected", text)


def _probe_contenterror(f: Finding, by_status: str, text: str) -> bool:
    if _probe_spamdetected(f, by_status, text):
        return False
    return by_status == "contenterror" or says("contenterror", text)


def _probe_mesgtoobig(f: Finding, by_status: str, text: str) -> bool:
    if by_status == "mesgtoobig":
        return True
    if by_status == "exceedlimit" or f.status == "5.2.3":
        return False
    return says("mesgtoobig", text)


def _by_status_or_words(reason: str) -> Callable[[Finding, str, str], bool]:
    def probe(f: Finding, by_status: str, text: str) -> bool:
        return by_status == reason or says(reason, text)

    return probe


def _by_words(reason: str) -> Callable[[Finding, str, str], bool]:
    def probe(f: Finding, by_status: str, text: str) -> bool:
        return says(reason, text)

    return probe


def _probe_suspend(f: Finding, by_status: str, text: str) -> bool:
    return f.reply_code == "525" or says("suspend", text)


def _probe_norelaying(f: Finding, by_status: str, text: str) -> bool:
    return f.command not in ("CONN", "EHLO", "HELO") and says("norelaying", text)


_PROBES: tuple[tuple[str, Callable[[Finding, str, str], bool]], ...] = (
    ("mailboxfull", _by_status_or_words("mailboxfull")),
    ("mesgtoobig", _probe_mesgtoobig),
    ("exceedlimit", _by_status_or_words("exceedlimit")),
    ("suspend", _probe_suspend),
    ("hasmoved", _by_words("hasmoved")),
    ("norelaying", _probe_norelaying),
    ("authfailure", _by_status_or_words("authfailure")),
    ("userunknown", _probe_userunknown),
    ("filtered", _probe_filtered),
    ("requireptr", _by_status_or_words("requireptr")),
    ("notcompliantrfc", _by_words("notcompliantrfc")),
    ("badreputation", _by_words("badreputation")),
    ("contenterror", _probe_contenterror),
    ("rejected", _probe_rejected),
    ("hostunknown", _probe_hostunknown),
    ("spamdetected", _probe_spamdetected),
    ("speeding", _by_words("speeding")),
    ("toomanyconn", _by_status_or_words("toomanyconn")),
    ("blocked", _by_status_or_words("blocked")),
)
# Wordings tried when the probes above found nothing, in this order.
_FALLBACK_ORDER = (
    "mailboxfull", "authfailure", "badreputation", "speeding", "spamdetected", "virusdetected",
    "policyviolation", "norelaying", "systemerror", "networkerror", "suspend", "contenterror", "systemfull",
    "notaccept", "expired", "failedstarttls", "securityerror", "mailererror",
)


def _fallback(f: Finding, text: str) -> str:
    """The reason when no probe matched: a format's own guess, the status code, broader wordings."""
    if _explicit(f.reason):
        return f.reason
    by_status = status_reason(f.status)
    if by_status not in RETRY_REASONS and f.diagnostic_type == "SMTP":
        return by_status
    for reason in _FALLBACK_ORDER:
        if says(reason, text):
            return reason
    if by_status:
        return by_status
    klass = f.status[:3]
    if klass in ("5.6", "4.6"):
        return "contenterror"
    if klass in ("5.7", "4.7"):
        return "securityerror"
    if f.diagnostic_type.startswith("X-UNIX"):
        return "mailererror"
    if f.reply_code.isdigit() and (400 < int(f.reply_code) < 408 or 500 < int(f.reply_code) < 508):
        return "syntaxerror"
    if f.action in ("delayed", "expired"):
        return "expired"
    if f.command in ("EHLO", "HELO"):
        return "blocked"
    return ""


def find_reason(f: Finding) -> str:
    """The reason of a failure whose reader could not tell it with certainty."""
    if f.status.startswith("2."):
        return "delivered"
    text = f.diagnosis.lower()
    preset = f.reason
    if f.diagnostic_type in ("SMTP", ""):
        by_status = status_reason(f.status)
        for name, probe in _PROBES:
            if preset == name or probe(f, by_status, text):
                return name
    reason = _fallback(f, text)
    if reason:
        return reason
    if f.action == "delayed":
        return "expired"
    if says("vacation", text):
        return "vacation"
    return "onhold" if text else "undefined"


def _temporary(text: str) -> bool:
    """True when the codes or words of ``text`` say the failure is temporary."""
    code = find_status(text) or find_reply(text)
    lowered = text.lower()
    return code.startswith("4") or " temporar" in lowered or " persistent" in lowered


def bounce_type(reason: str, status: str, diagnosis: str) -> str:
    """``hard`` (the address is dead), ``soft`` (may work later) or ``block`` (sender refused)."""
    if reason in HARD_REASONS:
        return "hard"
    if reason == "notaccept":
        evidence = f"{status} {diagnosis}".strip()
        if not evidence:
            return "hard"
        code = find_status(evidence) or find_reply(evidence)
        return "hard" if code.startswith("5") or not _temporary(evidence) else "soft"
    if reason in SOFT_REASONS:
        return "soft"
    return "block"


# The type of an enhanced status code the table of status.py does not know, by its subject
# (RFC 3463 section 3): the address (X.1) is dead, the mailbox (X.2) and routing (X.4) may work
# later, the mail system (X.3), protocol (X.5), content (X.6) and policy (X.7) refuse this message
# or this sender. X.0 says nothing: the reply code decides.
_SUBJECT_TYPE = {"1": "hard", "2": "soft", "3": "block", "4": "soft", "5": "block", "6": "block", "7": "block"}


def refusal_type(code: int | None, status: str | None) -> str:
    """The bounce type of an SMTP refusal from its reply ``code`` and enhanced ``status`` alone.

    The RFC 3463 status-to-type rule of the engine, in one place: a code the status table knows
    names a reason, typed by :func:`bounce_type` as a delivery status notification's is (so an
    answer refused during the SMTP dialogue and the same answer quoted in a DSN count alike); any
    other code goes by its subject (``_SUBJECT_TYPE``); without either, 552 (storage) is soft and
    other 5xx codes hard, the common meaning of 550/551/553.
    """
    if status:
        reason = status_reason(status)
        if reason:
            return bounce_type(reason, status, "")
        parts = status.split(".")
        if len(parts) == 3 and parts[1] in _SUBJECT_TYPE:
            return _SUBJECT_TYPE[parts[1]]
    return "soft" if code == 552 else "hard"


__all__ = ["HARD_REASONS", "RETRY_REASONS", "SOFT_REASONS", "bounce_type", "find_reason", "refusal_type", "says"]
