"""Tell a non-standard bounce (prose only, no delivery-status part) from any other message.

Without a ``message/delivery-status`` part the evidence is circumstantial: who sent it (a
``MAILER-DAEMON`` or ``postmaster`` mailbox, an empty return path), its subject ("Undelivered Mail
Returned to Sender", "failure notice", "Non remis", ...) and tell-tale sentences of the MTAs that
write such notices. Two independent clues are required, or one unmistakable MTA sentence, so that
a person's message that merely mentions a "delivery failure" stays a message.
"""

from __future__ import annotations

import re

_SUBJECT_RE = re.compile(
    r"(?i)undeliver|undelivered|delivery status notification|returned mail|failure notice|failure delivery"
    r"|delivery fail|mail delivery failed|mail failure|delivery notification|non remis|non recapitabile"
    r"|unzustellbar|nicht zustellbar|no se puede entregar|non consegnat|message delivery has failed"
    r"|mail system error|delivery failure|there was an error sending your mail|could not be delivered"
    r"|warning: could not send|delayed mail|delivery delayed|mail delivery status|returned to sender"
    r"|non[- ]?deliver|delivery problem|message not delivered|rejected:|bounced|bounce notification"
    r"|mail could not be delivered|returning message to sender|delivery report|failed delivery"
    r"|postmaster notify|warning: message .* delayed|message frozen|notice: mail delivery status"
    r"|недоставлен|не доставлен|échec de la remise|fehlgeschlagen"
)
_SENDER_RE = re.compile(
    r"(?i)mailer[-_ ]?daemon|post[-_]?master|mail delivery|delivery subsystem|mail administrator"
    r"|system administrator|ndr administrator|mail deliver system|mail system|^<>$|bounce"
)
# Sentences only delivery-failure notices contain.
_BODY_STRONG_RE = re.compile(
    r"(?i)this message was created automatically by mail delivery software"
    r"|this is the qmail-send program"
    r"|i'm afraid i wasn't able to deliver your message"
    r"|transcript of session follows"
    r"|the following addresses had (?:permanent )?(?:fatal|delivery) errors"
    r"|delivery to the following recipients? (?:failed|has been delayed)"
    r"|did not reach the following recipient"
    r"|could not be delivered to one or more of its"
    r"|your message could not be delivered"
    r"|was not delivered to:"
    r"|message could not be delivered to"
    r"|there was an error delivering your mail"
    r"|unable to deliver your message"
    r"|delivery has failed to these recipients"
    r"|the following recipient\(s\) could not be reached"
    r"|i'm sorry to have to inform you that your message could not"
    r"|the original message was received at"
    r"|your mail could not be delivered"
    r"|message delivery failed"
    r"|delivery status notification"
    r"|failed to deliver"
    r"|undeliverable"
    r"|could not be delivered"
    r"|delivery failed"
    r"|returned mail"
    r"|permanent(?:ly)? (?:error|failure|fatal)"
    r"|error message below"
    r"|requested action not taken"
    r"|no valid recipients"
)
# The envelope of the returned message spelled out as SMTP commands ("MAIL FROM: a@b" and "RCPT TO:
# c@d" on lines of their own): a transcript or a report of an SMTP transaction, which people do not
# write in their mail.
_ENVELOPE_RE = (
    re.compile(r"(?im)^[ \t>]*mail from:[ \t]*<?[^\s@<>]+@"),
    re.compile(r"(?im)^[ \t>]*rcpt to:[ \t]*<?[^\s@<>]+@"),
)
_BODY_UNMISTAKABLE_RE = re.compile(
    r"(?i)this message was created automatically by mail delivery software"
    r"|this is the qmail-send program"
    r"|transcript of session follows"
    r"|the following addresses had permanent fatal errors"
    r"|delivery to the following recipients? failed permanently"
)


# Delay warnings: the MTA still holds the message and keeps trying (RFC 3464 "delayed"). Each MTA
# says so in its own fixed words: Sendmail "THIS IS A WARNING MESSAGE ONLY" / "Will keep trying",
# Postfix "Delayed Mail (still being retried)", Exim "has not yet been delivered ... Delivery
# attempts will continue", Exchange and Gmail "Delivery ... has been delayed", OpenSMTPD "only a
# temporary failure report".
_DELAY_SUBJECT_RE = re.compile(
    r"(?i)delayed mail|still being retried|\(delay\)|delivery delayed|delayed delivery"
    r"|warning: could not send message for past|warning: message .* delayed"
)
_DELAY_BODY_RE = re.compile(
    r"(?i)this is a warning (?:message )?only|you do not need to re-?send"
    r"|has not yet been delivered|delivery attempts will continue|will keep trying until"
    r"|(?:will|shall) (?:continue|keep) (?:to )?(?:try|retry|attempt)|still being retried"
    r"|only a temporary failure report|delivery (?:to the following recipients? )?has been delayed"
)


def is_delay_warning(subject: str, body: str) -> bool:
    """True when a notification only warns that delivery is delayed: the MTA is still trying."""
    return bool(_DELAY_SUBJECT_RE.search(subject or "") or _DELAY_BODY_RE.search(body or ""))


_HUMAN_PREFIX_RE = re.compile(r"(?i)^\s*(?:re|fwd?|aw|wg|tr|sv|vs|antw|rif|r)\s*(?:\[\d+\])?\s*:")


def looks_like_bounce(subject: str, sender: str, return_path: str, body: str, failed_header: bool) -> bool:
    """Decide whether a message without a delivery-status part is still a delivery failure notice.

    A person replying to or forwarding a bounce ("Fwd: Undelivered Mail ...") is not one.
    """
    if failed_header:
        return True
    daemon_sender = bool(_SENDER_RE.search(sender or ""))
    if _HUMAN_PREFIX_RE.match(subject or "") and not daemon_sender:
        return False
    clues = 0
    if _SUBJECT_RE.search(subject or ""):
        clues += 1
    if daemon_sender or (return_path or "").replace(" ", "") == "<>":
        clues += 1
    if _BODY_UNMISTAKABLE_RE.search(body or ""):
        return True
    if _BODY_STRONG_RE.search(body or "") or all(pattern.search(body or "") for pattern in _ENVELOPE_RE):
        clues += 1
    return clues >= 2


__all__ = ["is_delay_warning", "looks_like_bounce"]
