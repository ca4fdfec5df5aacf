"""Complete and reconcile one recipient record, whatever format it was read from.

Every reader leaves a :class:`Finding` with what its format states; this step makes them uniform:
codes dug out of the diagnostic text and reconciled with the ``Status:`` field (which wins unless
it is a placeholder, RFC 3464/3463), the SMTP command, then the reason, decided by the most
specific evidence first (the notifying MTA's own wording, a local delivery agent, a large
provider's catalogue, the generic rules, and last what the RFCs say the reply code means).
"""

from __future__ import annotations

from engine.delivery.bounces.fields import clean_address
from engine.delivery.bounces.lda import lda_reason
from engine.delivery.bounces.model import Finding
from engine.delivery.bounces.mta import command_from_wording, mta_reason
from engine.delivery.bounces.reason import RETRY_REASONS, bounce_type, find_reason
from engine.delivery.bounces.rhost import rhost_reason
from engine.delivery.bounces.status import (
    REPLY_MEANING,
    find_command,
    find_reply,
    find_status,
    is_status,
    prefer_status,
    specificity,
)
from engine.delivery.bounces.text import squeeze

DELIVERED_ACTIONS = frozenset({"delivered", "relayed", "expanded"})


def unwrap_multiline(diagnosis: str, reply: str, status: str) -> str:
    """``550-5.7.1 Our system ... 550-5.7.1 has detected`` -> ``550 5.7.1 Our system ... has detected``.

    Multi-line SMTP replies repeat the codes on every line; left in place they split the phrases
    the reason rules look for.
    """
    if not reply or f"{reply}-" not in diagnosis:
        return diagnosis
    for sep in ("-", " "):
        if status:
            diagnosis = diagnosis.replace(f"{reply}{sep}{status}", "")
        diagnosis = diagnosis.replace(f"{reply}{sep}", "")
    diagnosis = squeeze(diagnosis)
    return squeeze(f"{reply} {status} {diagnosis}") if reply not in diagnosis else diagnosis


def finalise(f: Finding, families: frozenset[str]) -> None:
    """Fill codes, command and reason of ``f`` in place.

    ``families`` are the MTA families the notification's wording revealed
    (:func:`engine.delivery.bounces.mta.families_of`).
    """
    f.recipient = clean_address(f.recipient) if f.recipient else ""
    f.diagnosis = squeeze(f.diagnosis)
    f.diagnostic_type = (f.diagnostic_type or "SMTP").upper()
    if f.diagnostic_type == "X-POSTFIX":
        f.diagnostic_type = "SMTP"
    if not is_status(f.status):
        f.status = ""
    # A transcript may quote several answers (a first MX deferring, the next one refusing); the one
    # of the class the Status field reports is the one it summarises.
    in_text = (find_status(f.diagnosis, f.status) if f.status else "") or find_status(f.diagnosis)
    reply = find_reply(f.diagnosis, in_text)
    f.status = prefer_status(f.status, in_text, reply)
    if not f.reply_code:
        f.reply_code = reply
    f.diagnosis = unwrap_multiline(f.diagnosis, reply, in_text)
    if not f.command:
        f.command = command_from_wording(f.diagnosis) or find_command(f.diagnosis)
    if f.action in DELIVERED_ACTIONS or f.status.startswith("2.") or f.reason == "delivered":
        f.reason = "delivered"
        return
    if not f.reason:
        f.reason = mta_reason(f, families)
    if f.reason in RETRY_REASONS:
        # A local delivery agent's or a provider's own catalogue is final; otherwise the generic
        # rules decide, keeping the format's guess when they find nothing better.
        specific = lda_reason(f) or rhost_reason(f)
        if specific:
            f.reason = specific
        else:
            guessed = find_reason(f)
            if guessed not in ("", "undefined", "onhold") or not f.reason:
                f.reason = guessed
    _apply_reply_meaning(f)
    if in_text and _policy_refusal_reported_as_address(f, in_text):
        f.status = in_text
    if f.reply_code and f.status and f.reply_code[0] != f.status[0]:
        same_class = find_reply(f.diagnosis, f.status[0])
        f.reply_code = same_class if same_class.startswith(f.status[0]) else ""


def _apply_reply_meaning(f: Finding) -> None:
    """Fill what is still unknown from the meaning the RFCs give the reply code.

    Last resort: a "552" with no recognisable words is still "storage exceeded" (RFC 5321), a
    "521" still "host does not accept mail" (RFC 7504). A status is only filled in when there is
    none or a generic one, and a reason only when none could be named.
    """
    meaning = REPLY_MEANING.get(f.reply_code)
    if meaning is None:
        return
    command, status, reason = meaning
    if command and not f.command:
        f.command = command
    if status and (not f.status or specificity(f.status) == 0) and status[0] == f.reply_code[0]:
        f.status = status
    if reason and f.reason in ("", "undefined", "onhold"):
        f.reason = reason


def _policy_refusal_reported_as_address(f: Finding, in_text: str) -> bool:
    """A Status field with an address code (X.1.x) over a receiver's policy refusal (X.7.x).

    The ``Diagnostic-Code`` is the remote server's own answer (RFC 3464, section 2.3.6). When it
    carries a security or policy code and its words are a refusal of the sender (a blocklist, a
    policy: the recipient's type is ``block``), a reporting MTA that mapped it to an address status
    (Sendmail writing ``5.1.1`` for ``550 5.7.1 IP address blacklisted``) lost what the receiver
    said, and the receiver's code is the truer account, as Sisimai reads it. When the words say the
    address is unknown, the Status field stands (a ``5.1.1`` quoting ``5.7.1 ... User unknown``).
    """
    return (f.status[:1] == in_text[:1] and f.status[1:4] == ".1." and in_text[1:4] == ".7."
            and specificity(in_text) == 2 and entry_type(f) == "block")


def entry_type(f: Finding) -> str:
    """The engine-facing type of a failed recipient: ``hard``, ``soft`` or ``block``.

    A delayed recipient (RFC 3464 ``Action: delayed``) is never ``hard``: the reporting MTA is
    still trying, so nothing is known yet to be permanently wrong with the address.
    """
    kind = bounce_type(f.reason, f.status, f.diagnosis)
    if kind == "hard" and f.action == "delayed":
        return "soft"
    return kind


__all__ = ["DELIVERED_ACTIONS", "entry_type", "finalise", "unwrap_multiline"]
