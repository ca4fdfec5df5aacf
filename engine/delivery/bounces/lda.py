"""Reasons named by local delivery agents (dovecot, mail.local, procmail, maildrop, vpopmail...).

When the final hop is a local delivery program rather than an SMTP server, the error text is the
program's own ("mail.local: unknown user: kijitora", "maildrop: maildir over quota."). Once the
program is recognised its wording is unambiguous; an unrecognised message from it is a mailer
error (the program failed).
"""

from __future__ import annotations

from engine.delivery.bounces.model import Finding

# agent -> markers that identify it in the diagnostic text (lower case)
_AGENTS: dict[str, tuple[str, ...]] = {
    "dovecot": ("your message to <", "> was automatically rejected:"),
    "mail.local": ("mail.local: ",),
    "procmail": ("procmail: ", "/procmail "),
    "maildrop": ("maildrop: ",),
    "vpopmail": ("vdelivermail: ",),
    "vmailmgr": ("vdeliver: ",),
}
_MESSAGES: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "dovecot": (
        ("mailboxfull", ("not enough disk space", "quota exceeded")),
        ("userunknown", ("mailbox doesn't exist: ",)),
    ),
    "mail.local": (
        ("mailboxfull", ("disc quota exceeded", "mailbox full or quota exceeded")),
        ("systemerror", ("temporary file write error",)),
        ("userunknown", (": invalid mailbox path", ": unknown user:", ": user missing home directory",
                         ": user unknown")),
    ),
    "procmail": (
        ("mailboxfull", ("quota exceeded while writing", "user over quota")),
        ("systemerror", ("service unavailable",)),
        ("systemfull", ("no space left to finish writing",)),
    ),
    "maildrop": (
        ("mailboxfull", ("maildir over quota.",)),
        ("userunknown", ("cannot find system user", "invalid user specified.")),
    ),
    "vpopmail": (
        ("filtered", ("user does not exist, but will deliver to ",)),
        ("mailboxfull", ("domain is over quota", "user is over quota")),
        ("suspend", ("account is locked email bounced",)),
        ("userunknown", ("sorry, no mailbox here by that name.",)),
    ),
    "vmailmgr": (
        ("mailboxfull", ("delivery failed due to system quota violation",)),
        ("userunknown", ("invalid or unknown base user or domain", "invalid or unknown virtual user",
                         "user name does not refer to a virtual user")),
    ),
}


def lda_reason(f: Finding) -> str:
    """The reason a local delivery agent's message names, ``mailererror`` if unrecognised, or ``""``."""
    if not f.diagnosis or f.command not in ("", "DATA"):
        return ""
    text = f.diagnosis.lower()
    agent = next((name for name, markers in _AGENTS.items() if any(m in text for m in markers)), "")
    if not agent:
        return ""
    for reason, phrases in _MESSAGES[agent]:
        if any(p in text for p in phrases):
            return reason
    return "mailererror"


__all__ = ["lda_reason"]
