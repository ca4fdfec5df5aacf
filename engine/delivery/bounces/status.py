"""SMTP enhanced status codes (RFC 3463) and reply codes (RFC 5321) found in bounce text.

A bounce rarely states its codes in one tidy place: the ``Status:`` field may say ``5.0.0`` while the
remote server's own answer, quoted in the diagnostic text, says ``550 5.1.1``. These helpers dig the
codes out of free text and pick the most informative one, so that the reason classifier downstream
works from the remote server's real answer rather than from a relay's generic summary.
"""

from __future__ import annotations

import re

# The reason each standard enhanced status code points to (IANA registry, grouped the way the
# reason vocabulary of the corpus README groups them). Codes missing here are too vague to name a
# reason on their own (``X.0.0``, ``4.3.0``, ``4.7.0`` ...); the diagnostic text decides for them.
STATUS_REASON: dict[str, str] = {
    "2.1.5": "delivered",
    "4.1.6": "hasmoved",
    "4.1.7": "rejected",
    "4.1.8": "rejected",
    "4.1.9": "systemerror",
    "4.2.1": "blocked",
    "4.2.2": "mailboxfull",
    "4.2.3": "exceedlimit",
    "4.2.4": "filtered",
    "4.3.1": "systemfull",
    "4.3.2": "notaccept",
    "4.3.3": "systemerror",
    "4.3.5": "systemerror",
    "4.4.1": "expired",
    "4.4.2": "networkerror",
    "4.4.3": "systemerror",
    "4.4.4": "networkerror",
    "4.4.5": "systemfull",
    "4.4.6": "networkerror",
    "4.4.7": "expired",
    "4.4.8": "networkerror",
    "4.5.3": "systemerror",
    "4.5.5": "systemerror",
    "4.6.0": "contenterror",
    "4.6.2": "contenterror",
    "4.6.5": "contenterror",
    "4.7.1": "blocked",
    "4.7.2": "blocked",
    "4.7.5": "securityerror",
    "4.7.6": "securityerror",
    "4.7.7": "securityerror",
    "4.7.12": "securityerror",
    "4.7.15": "securityerror",
    "4.7.16": "mesgtoobig",
    "4.7.24": "authfailure",
    "4.7.25": "requireptr",
    "4.7.26": "authfailure",
    "5.1.0": "userunknown",
    "5.1.1": "userunknown",
    "5.1.2": "hostunknown",
    "5.1.3": "userunknown",
    "5.1.4": "filtered",
    "5.1.6": "hasmoved",
    "5.1.7": "rejected",
    "5.1.8": "rejected",
    "5.1.9": "systemerror",
    "5.1.10": "notaccept",
    "5.2.0": "filtered",
    "5.2.1": "filtered",
    "5.2.2": "mailboxfull",
    "5.2.3": "exceedlimit",
    "5.2.4": "filtered",
    "5.3.0": "systemerror",
    "5.3.1": "systemfull",
    "5.3.2": "notaccept",
    "5.3.3": "systemerror",
    "5.3.4": "mesgtoobig",
    "5.3.5": "systemerror",
    "5.4.0": "networkerror",
    "5.4.3": "systemerror",
    "5.4.4": "hostunknown",
    "5.5.2": "syntaxerror",
    "5.5.3": "toomanyconn",
    "5.5.4": "systemerror",
    "5.5.5": "systemerror",
    "5.5.6": "syntaxerror",
    "5.6.0": "contenterror",
    "5.6.1": "contenterror",
    "5.6.2": "contenterror",
    "5.6.3": "contenterror",
    "5.6.5": "contenterror",
    "5.6.6": "contenterror",
    "5.6.7": "contenterror",
    "5.6.8": "contenterror",
    "5.6.9": "contenterror",
    "5.7.13": "suspend",
    "5.7.16": "mesgtoobig",
    "5.7.17": "hasmoved",
    "5.7.18": "hasmoved",
    "5.7.20": "authfailure",
    "5.7.21": "authfailure",
    "5.7.22": "authfailure",
    "5.7.23": "authfailure",
    "5.7.24": "authfailure",
    "5.7.25": "requireptr",
    "5.7.26": "authfailure",
    # RFC 7505: the *sender's* domain has a null MX; the recipient is not at fault.
    "5.7.27": "rejected",
    "5.7.28": "spamdetected",
    "5.7.29": "authfailure",
    "5.7.30": "failedstarttls",
}
# Every other 5.7.x code is a security/policy refusal.
for _detail in (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 14, 15, 19):
    STATUS_REASON.setdefault(f"5.7.{_detail}", "securityerror")

# What an SMTP reply code says by itself, per the RFC that defines it: (command it answers, status,
# reason). Used only when nothing more specific is known: RFC 5321 (451 local error, 452 insufficient
# storage, 50x syntax, 552 storage exceeded), RFC 7504 (521 host / 556 domain does not accept mail),
# RFC 4954 and RFC 5248 (the 52x/53x authentication and encryption replies).
REPLY_MEANING: dict[str, tuple[str, str, str]] = {
    "422": ("AUTH", "4.7.12", "securityerror"),
    "432": ("AUTH", "4.7.12", "securityerror"),
    "451": ("", "", "systemerror"),
    "452": ("", "", "systemfull"),
    "500": ("", "", "syntaxerror"),
    "501": ("", "", "syntaxerror"),
    "502": ("", "", "syntaxerror"),
    "503": ("", "", "syntaxerror"),
    "504": ("", "", "syntaxerror"),
    "521": ("CONN", "", "notaccept"),
    "523": ("AUTH", "", "securityerror"),
    "524": ("AUTH", "", "securityerror"),
    "534": ("AUTH", "5.7.9", "securityerror"),
    "535": ("AUTH", "5.7.8", "securityerror"),
    "538": ("AUTH", "5.7.11", "securityerror"),
    "552": ("", "", "mailboxfull"),
    "556": ("RCPT", "", "notaccept"),
}

_STATUS_RE = re.compile(r"(?<![0-9./vV])([245])\.([0-7])\.(\d{1,3})(?!\d)")
_IPV4_RE = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b")
_STATUS_FULL_RE = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")

# Reply codes in the order they are tried: a 5xx answer is the most telling, then 4xx, then 2xx.
_REPLY_CODES: dict[str, tuple[str, ...]] = {
    "5": (
        "550", "552", "553", "551", "521", "525", "523", "524", "530", "533", "534", "535", "538",
        "555", "556", "554", "500", "501", "502", "503", "504",
    ),
    "4": ("421", "450", "451", "452", "422", "430", "432", "453", "454", "455", "458", "459"),
    "2": ("211", "214", "220", "221", "235", "250", "251", "252", "253", "334", "354"),
}


def is_status(code: str | None) -> bool:
    """True for a syntactically valid enhanced status code such as ``5.1.1``."""
    return bool(code) and bool(_STATUS_FULL_RE.match(code or ""))


def status_reason(code: str) -> str:
    """The reason a standard status code names by itself, or ``""`` when it names none.

    In RFC 3463 the subject and detail mean the same in either failure class; the class only says
    whether the condition may pass. So an addressing code sent as temporary (``4.1.1``, "bad
    destination mailbox address", which some servers send while they are unsure) names the same
    reason as its permanent form.
    """
    if code in STATUS_REASON:
        return STATUS_REASON[code]
    if code.startswith("4.1."):
        return STATUS_REASON.get("5" + code[1:], "")
    return ""


def specificity(code: str) -> int:
    """How much an enhanced status code says: 0 for ``X.0.0``, 1 for another "other or undefined", 2 else.

    RFC 3463 reserves the subject ``0`` and the detail ``0`` for "other or undefined" statuses:
    ``X.0.0`` tells only the class, ``X.2.0`` only that the mailbox is concerned, ``X.0.350`` only
    a vendor's private detail. Such a code is a placeholder that a more specific one replaces.
    """
    parts = code.split(".")
    if len(parts) != 3:
        return 0
    if parts[1] == "0" and parts[2] == "0":
        return 0
    return 1 if "0" in (parts[1], parts[2]) else 2


def find_status(text: str, reply_class: str = "") -> str:
    """The enhanced status code quoted in ``text``, or ``""``.

    Several codes may appear (a relay's and the remote server's): the first of the most specific
    ones wins (:func:`specificity`), and ``4.4.7`` (delivery time expired) yields to the code of
    the problem that made delivery fail, as RFC 3463 asks.
    """
    if len(text) < 5:
        return ""
    cleaned = _IPV4_RE.sub("***.***.***.***", text)
    wanted = reply_class[:1] if reply_class[:1] in ("2", "4", "5") else ""
    chosen = ""
    for match in _STATUS_RE.finditer(cleaned):
        if wanted and match.group(1) != wanted:
            continue
        code = ".".join(match.groups())
        if not chosen or _more_telling(code, chosen):
            chosen = code
    return chosen


def _more_telling(candidate: str, current: str) -> bool:
    """True when ``candidate`` says more about the failure than ``current``."""
    if current == "4.4.7" and candidate != "4.4.7":
        return True
    if candidate == "4.4.7":
        return False
    return specificity(candidate) > specificity(current)


def prefer_status(field: str, in_text: str, reply: str) -> str:
    """Choose between the ``Status:`` field value and a code quoted in the diagnostic text.

    The ``Status:`` field is the reporting MTA's own statement about the recipient (RFC 3464,
    section 2.3.4), so it wins, with three exceptions: when the two disagree on the class (4 against
    5), the SMTP reply code quoted with the text decides, because an enhanced code always shares
    its reply's class (RFC 3463, section 2); a generic field (``X.0.0`` or another "other or
    undefined" code) yields to a more specific quoted code; and ``4.4.7`` (delivery time expired)
    yields to the code of the problem actually met, as RFC 3463 asks. The diagnostic text can
    still refine the *reason* (a ``5.1.1`` whose text speaks of a full mailbox is a full mailbox),
    but not replace a specific status.
    """
    if not is_status(field):
        return in_text
    if not is_status(in_text):
        return field
    if field == in_text:
        return field
    if field[0] != in_text[0] and reply:
        if reply[0] == field[0]:
            return field
        if reply[0] == in_text[0]:
            return in_text
    if _more_telling(in_text, field):
        return in_text
    if _describes_reporter(field) and specificity(in_text) == 2:
        return in_text
    return field


# RFC 3463 subjects that, in a ``Status:`` field, describe the reporting MTA's own side of the
# exchange rather than the recipient: "mail system status" of a ``5.3.x`` kind (system not
# accepting, not capable, misconfigured) and the protocol details ``X.5.1`` invalid command,
# ``X.5.2`` syntax error, ``X.5.4`` invalid arguments and ``X.5.5`` wrong protocol version. A relay
# that could not hand the message on writes one of these while quoting the next hop's real answer,
# so a specific code quoted in the text is the better account (Sisimai reads them the same way).
_REPORTER_DETAILS = frozenset({"5.1", "5.2", "5.4", "5.5"})


def _describes_reporter(code: str) -> bool:
    """True for a status field value that describes the reporting system rather than the recipient."""
    subject_detail = code[2:]
    return code.startswith("5.3.") or subject_detail in _REPORTER_DETAILS


def find_reply(text: str, status: str = "") -> str:
    """The three-digit SMTP reply code quoted in ``text`` (``550``), or ``""``.

    When the status class is known only reply codes of the same class are looked for.
    """
    if len(text) < 3 or "X-UNIX" in text.upper():
        return ""
    padded = f" {text} "
    klass = status[:1]
    order = _REPLY_CODES[klass] if klass in _REPLY_CODES else (
        _REPLY_CODES["5"] + _REPLY_CODES["4"] + _REPLY_CODES["2"]
    )
    for code in order:
        start = 0
        while True:
            at = padded.find(code, start)
            if at < 0:
                break
            before, after = padded[at - 1], padded[at + 3]
            if not ("." <= before <= "9") and not ("." <= after <= "9"):
                return code
            start = at + 3
    return ""


_COMMAND_RE = re.compile(
    r"(?<![A-Za-z0-9@.])(?:(HELO|EHLO|STARTTLS|RCPT|DATA|QUIT|XFORWARD)(?![A-Za-z0-9@])"
    r"|(AUTH (?:PLAIN|LOGIN|CRAM-|DIGEST-)|MAIL F|RCPT T))"
)
# Later stages of the SMTP dialogue win: a text naming both RCPT and DATA failed at DATA.
_COMMAND_STAGE = ("HELO", "EHLO", "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA", "QUIT", "XFORWARD")
_END_OF_DATA_RE = re.compile(r"end of (?:data|message)|final DATA", re.I)


def find_command(text: str) -> str:
    """The SMTP command the remote server was answering when it refused (``RCPT``, ``DATA``...).

    The command matters to the reason: a refusal at ``RCPT`` is about the recipient, one after
    ``DATA`` is about the content.
    """
    if not text:
        return ""
    stage = -1
    for match in _COMMAND_RE.finditer(text):
        word = (match.group(1) or match.group(2))[:4]
        command = {"STAR": "STARTTLS", "XFOR": "XFORWARD"}.get(word, word)
        stage = max(stage, _COMMAND_STAGE.index(command))
    if stage >= 0:
        return _COMMAND_STAGE[stage]
    if _END_OF_DATA_RE.search(text):
        return "DATA"
    return ""


__all__ = [
    "REPLY_MEANING",
    "STATUS_REASON",
    "find_command",
    "find_reply",
    "find_status",
    "is_status",
    "prefer_status",
    "specificity",
    "status_reason",
]
