"""Classify one inbound message: bounce, delivery report, auto-reply, spam complaint or human reply.

This is the pure entry point the reply-and-bounce processing builds on; it reads bytes and returns
a frozen value, with no I/O and no engine. The order of decisions matters: delivery status
notifications first (many of them also carry ``Auto-Submitted``), then ARF complaints, then
automatic replies, and whatever is left is a human message. Only a reported failure is a bounce;
a DSN that reports delivery is a ``delivery_report``. A delay warning (RFC 3464 ``Action:
delayed``, or an MTA's "still trying" notice) keeps the kind ``bounce`` so that the five kinds stay
as the contract defines them, but says so: its entries carry ``action="delayed"`` and the result
``delayed=True``, and such an entry is never a ``hard`` bounce.

It never raises: malformed or garbage input is read as far as possible and otherwise classified as
an ordinary message.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from email.message import Message
from email.utils import getaddresses

from engine.delivery.bounces import inbound_mime as mime
from engine.delivery.bounces.analyse import BounceReading, read_bounce
from engine.delivery.bounces.auto_reply import is_auto_reply, read_feedback
from engine.delivery.bounces.finalise import entry_type

KINDS = ("bounce", "delivery_report", "auto_reply", "feedback", "message")


@dataclass(frozen=True)
class BounceEntry:
    """One failed recipient of a bounce.

    ``type`` tells the engine what to do: ``hard`` (the address is dead: never mail it again),
    ``soft`` (may succeed later) or ``block`` (refused because of the sender or the content: the
    contact is not at fault). ``reason`` uses the Sisimai vocabulary (``userunknown``,
    ``mailboxfull``, ``spamdetected``...). ``recipient`` is ``""`` when the notification names
    none; ``refers_to`` of the classification still points at the message that bounced.

    ``action`` is the RFC 3464 action for this recipient: ``"failed"`` (the MTA gave up) or
    ``"delayed"`` (a warning: the MTA still holds the message and keeps trying, so it may yet be
    delivered). A delayed entry is never ``hard``; the engine should record it as a delay, not
    as a bounce.
    """

    recipient: str
    status: str | None
    reply_code: str | None
    type: str
    reason: str
    diagnostic: str = ""
    action: str = "failed"

    @property
    def delayed(self) -> bool:
        """True for a delay warning about this recipient (``action == "delayed"``)."""
        return self.action == "delayed"


@dataclass(frozen=True)
class Classification:
    """The reading of one inbound message.

    ``kind`` is one of :data:`KINDS`. ``refers_to`` lists the Message-IDs (``<id@host>``) the
    message answers: its In-Reply-To and References, and for a bounce, delivery report or
    complaint the Message-ID of the returned original. ``bounces`` holds one entry per failed
    recipient of a bounce; ``delivered`` the recipients a delivery report confirms.
    ``out_of_office`` is true for automatic replies. ``feedback_type`` (``abuse``...) and
    ``feedback_recipient`` describe a spam complaint. ``subject``, ``from_address`` and
    ``message_id`` are the message's own.

    ``delayed`` is true when the message is only a delay warning (kind ``bounce``, every entry
    with ``action == "delayed"``): nothing has failed yet, the message may still be delivered,
    so it must not count as a bounce. A report mixing failed and delayed recipients has
    ``delayed`` false; its entries tell which is which.
    """

    kind: str
    refers_to: tuple[str, ...] = ()
    bounces: tuple[BounceEntry, ...] = ()
    delivered: tuple[str, ...] = ()
    out_of_office: bool = False
    feedback_type: str | None = None
    feedback_recipient: str | None = None
    subject: str = ""
    from_address: str | None = None
    message_id: str | None = None
    delayed: bool = False


def _first_address(value: str) -> str | None:
    try:
        pairs = getaddresses([value])
    except Exception:
        return None
    for _name, address in pairs:
        if address and "@" in address:
            return address.strip()
    return None


def _own_refs(msg: Message) -> list[str]:
    refs: list[str] = []
    for name in ("In-Reply-To", "References"):
        for value in mime.headers(msg, name):
            refs.extend(mime.message_ids(value))
    return refs


def _unique(values: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v for v in values if v))


def _from_bounce(reading: BounceReading, base: Classification, refs: list[str]) -> Classification:
    failed: list[BounceEntry] = []
    delivered: list[str] = []
    for f in reading.findings:
        if f.reason == "delivered":
            delivered.append(f.recipient)
            continue
        failed.append(BounceEntry(
            recipient=f.recipient,
            status=f.status or None,
            reply_code=f.reply_code or None,
            type=entry_type(f),
            reason=f.reason or "undefined",
            diagnostic=f.diagnosis[:1000],
            action="delayed" if f.action == "delayed" else "failed",
        ))
    if failed and all(entry.reason == "vacation" for entry in failed) and not delivered:
        # Some gateways wrap an out-of-office answer in a delivery report; it is no failure.
        return replace(base, kind="auto_reply", refers_to=_unique(refs + reading.original_ids), out_of_office=True)
    return replace(
        base,
        kind="bounce" if failed or not delivered else "delivery_report",
        refers_to=_unique(refs + reading.original_ids),
        bounces=tuple(failed),
        delivered=tuple(delivered),
        delayed=bool(failed) and all(entry.delayed for entry in failed),
    )


def _classify(raw: bytes) -> Classification:
    msg = mime.parse(raw)
    own_ids = mime.message_ids(mime.header(msg, "Message-ID"))
    base = Classification(
        kind="message",
        subject=mime.header(msg, "Subject"),
        from_address=_first_address(mime.header(msg, "From")),
        message_id=own_ids[0] if own_ids else None,
    )
    refs = _own_refs(msg)

    feedback = read_feedback(msg)
    reading = read_bounce(msg, prose_allowed=feedback is None)
    if reading is not None:
        return _from_bounce(reading, base, refs)
    if feedback is not None:
        original_ids = [
            i for original in mime.original_parts(msg) for i in mime.message_ids(mime.header(original, "Message-ID"))
        ]
        return replace(
            base,
            kind="feedback",
            refers_to=_unique(refs + original_ids),
            feedback_type=feedback.feedback_type,
            feedback_recipient=feedback.recipient,
        )
    if is_auto_reply(msg, base.subject):
        return replace(base, kind="auto_reply", refers_to=_unique(refs), out_of_office=True)
    return replace(base, refers_to=_unique(refs))


def classify_message(raw: bytes) -> Classification:
    """Read one inbound message (raw RFC 5322 bytes) and say what it is; never raises."""
    try:
        data = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else bytes(raw)
        return _classify(data)
    except Exception:  # last-resort guard: a classifier must not take the inbound pipeline down
        return Classification(kind="message")


__all__ = ["KINDS", "BounceEntry", "Classification", "classify_message"]
