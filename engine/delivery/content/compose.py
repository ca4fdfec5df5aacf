"""One compose path: the message of one campaign email, for ``tick()``, preview and test sends alike.

Before this module the tick, the preview and the test send each rendered a step their own way and
disagreed (a follow-up's subject was three different things in the three places). Now the rules
live here, once, as pure functions: no I/O, no clock (``now`` is an argument), no database rows
beyond the mappings the caller passes in.

- :func:`render_step`: the subject and both bodies of a step for one contact, exactly as they are
  sent, before tracking rewrites links. Preview shows this.
- :func:`compose_email`: that, plus threading headers, tracking and ``List-Unsubscribe``, built into
  the wire bytes by :func:`engine.delivery.content.mime.build_message`, with the address to give ``RCPT TO``,
  and DKIM-signed when the sender has a key (so the tick and test sends sign alike).

The rules:

- Subject: a same-thread follow-up (step > 1, ``same_thread`` on, the default) whose own subject is
  blank is sent as ``Re: `` + step 1's rendered subject; with a subject of its own it keeps it
  (:func:`engine.delivery.content.mime.follow_up_subject`). Its threading headers are set either way.
- Text part: the step's own ``body_text`` rendered, else the text made from the rendered HTML.
- Merge data: the contact's fields, ``custom_fields`` decoded when stored as JSON text, and
  ``unsubscribe_url``, the contact's one-click page when the ids to sign it are known (empty in a
  preview without a contact).
- Test sends (``test=True``): the subject gets ``[TEST] ``, opens and clicks are not tracked (the
  tracker answers only for emails recorded as sent, so a tracked link in a test email would be
  dead), and ``List-Unsubscribe`` is there as in a real send. The caller signs it for
  :data:`TEST_CONTACT_ID`, which no contact can have, so following it unsubscribes nobody.

Templates are parsed once per text (:func:`engine.delivery.content.templates.parse_template` is cached), so
composing thousands of emails of one step costs the substitutions, not the parsing.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from engine.delivery.content import mime
from engine.delivery.content.templates import render, render_header
from engine.delivery.outbound.dkim import DkimSigning
from engine.delivery.outbound.dkim import sign as dkim_sign
from engine.domain.definition import CampaignDefinition

__all__ = [
    "TEST_CONTACT_ID",
    "TEST_PREFIX",
    "ComposedEmail",
    "RenderedStep",
    "compose_email",
    "merge_data",
    "render_step",
    "subject_template",
]

#: Subject prefix of a test send; the rest of the subject is the real one.
TEST_PREFIX: Final = "[TEST] "
#: Contact id signed into a test send's unsubscribe link. Generated contact ids are ``con_`` and hex
#: digits only, so this one never names a contact: the unsubscribe endpoint answers "link not valid"
#: and changes nothing, and an inbound unsubscribe carrying the token is ignored the same way.
TEST_CONTACT_ID: Final = "con_test"

_CONTACT_FIELDS: Final = ("first_name", "last_name", "email", "company")


@dataclass(frozen=True, slots=True)
class RenderedStep:
    """One step rendered for one contact: what preview shows and what the email carries.

    ``body_text`` is the text part as sent, before click tracking: the step's own text rendered, or
    the text made from ``body_html`` when the step has none.
    """

    step: int
    subject: str
    body_html: str
    body_text: str


@dataclass(frozen=True, slots=True)
class ComposedEmail:
    """One email ready for SMTP, and what the engine must remember about it.

    ``subject`` is the Subject header as sent (``[TEST] `` included for a test send);
    ``body_html``/``body_text`` are the rendered parts before tracking (as preview shows them);
    ``raw`` the wire bytes; ``links`` the original targets of the tracked links (a click token's
    index points into it); ``recipient`` the address for ``RCPT TO`` (IDN domain as an A-label);
    ``variant`` the step's A/B variant composed (None without variants).
    """

    subject: str
    body_html: str
    body_text: str
    raw: bytes
    message_id: str
    links: tuple[str, ...]
    recipient: str
    variant: str | None = None  # the step's A/B variant this email carries, recorded with its outcome


def _parsed(definition: CampaignDefinition | Mapping[str, Any]) -> CampaignDefinition:
    """The typed definition; a stored JSON one (a test's, a script's) is parsed here. The tick
    passes the one its planner inputs parsed once per campaign row."""
    if isinstance(definition, CampaignDefinition):
        return definition
    return CampaignDefinition.from_dict(definition)


def subject_template(definition: CampaignDefinition | Mapping[str, Any], step_number: int) -> str:
    """The subject template a step is sent with, before merging: for reports such as ``stats/steps``.

    A same-thread follow-up with a blank subject shows ``Re: `` + step 1's template, as it is sent.
    """
    parsed = _parsed(definition)
    step = parsed.step(step_number)
    if step.follows_up(step_number) and not step.subject.strip():
        return mime.follow_up_subject("", parsed.step(1).subject)
    return step.subject


def merge_data(contact: Mapping[str, Any], *, unsubscribe_url: str = "") -> dict[str, Any]:
    """The values merge tags read, from a contact row or mapping.

    ``custom_fields`` may be a dict, JSON text (as stored in the contacts table) or ``None``;
    anything that is not a JSON object counts as no custom fields rather than failing a send.
    """
    custom = contact.get("custom_fields")
    if isinstance(custom, str | bytes):
        try:
            custom = json.loads(custom) if custom else {}
        except ValueError:
            custom = {}
    data: dict[str, Any] = {name: contact.get(name) for name in _CONTACT_FIELDS}
    data["custom_fields"] = custom if isinstance(custom, Mapping) else {}
    data["unsubscribe_url"] = unsubscribe_url
    return data


def render_step(
    definition: CampaignDefinition | Mapping[str, Any], step_number: int, contact: Mapping[str, Any], *,
    unsubscribe_url: str = "", variant: str | None = None, first_variant: str | None = None,
) -> RenderedStep:
    """Step ``step_number`` (1-based) of ``definition`` rendered for ``contact``; nothing is sent.

    ``unsubscribe_url`` is what ``{{unsubscribe_url}}`` shows (see :func:`compose_email`, which
    passes the one it signs). ``variant``: the step's A/B variant to render (its subject and bodies
    where it has them); ``first_variant``: step 1's variant, whose subject a same-thread follow-up
    answers. ValueError when the step does not exist.
    """
    parsed = _parsed(definition)
    step = parsed.step(step_number).with_variant(variant)
    data = merge_data(contact, unsubscribe_url=unsubscribe_url)
    subject = render_header(step.subject, data)
    if step.follows_up(step_number):
        first = parsed.step(1).with_variant(first_variant)
        subject = mime.follow_up_subject(subject, render_header(first.subject, data))
    body_html = render(step.body_html, data, html=True)
    own_text = step.body_text
    body_text = render(own_text, data, html=False) if own_text else mime.html_to_text(body_html)
    return RenderedStep(step=step_number, subject=subject, body_html=body_html, body_text=body_text)


def _display_name(contact: Mapping[str, Any]) -> str | None:
    names = (contact.get("first_name"), contact.get("last_name"))
    return " ".join(str(name) for name in names if name) or None


def compose_email(
    definition: CampaignDefinition | Mapping[str, Any],
    step_number: int,
    contact: Mapping[str, Any],
    sender: Mapping[str, Any],
    *,
    enrollment_id: str | None,
    email_id: str | None,
    message_id: str,
    now: datetime,
    tracking: mime.Tracking | None,
    test: bool = False,
    to_email: str | None = None,
    dkim: DkimSigning | None = None,
    variant: str | None = None,
    first_variant: str | None = None,
) -> ComposedEmail:
    """The email for step ``step_number`` of ``definition`` to ``contact``, from ``sender``.

    - ``contact``: ``first_name, last_name, email, company, custom_fields`` (a contacts row works).
    - ``sender``: ``email`` and ``from_name`` (a senders row works).
    - ``enrollment_id``: with it, a same-thread follow-up gets ``In-Reply-To``/``References`` to
      the Message-IDs of the earlier steps (:func:`~engine.delivery.content.mime.message_id_for` on the
      sender's domain); ``None`` leaves them out.
    - ``email_id``: when given, the id every token carries (replacing ``tracking.email_id``), so
      one ``Tracking`` can serve a whole campaign.
    - ``tracking``: opens, clicks and ``List-Unsubscribe``, as the campaign's settings say; its
      ids also make ``{{unsubscribe_url}}``.
    - ``test``: a test send (see the module docstring); ``to_email`` then names the test address,
      which replaces the contact's in ``To:`` and ``RCPT TO`` (the merge data stays the contact's).
    - ``dkim``: the sender's key, decrypted by the caller; the finished bytes are signed with it
      (:func:`engine.delivery.outbound.dkim.sign`), last, so that nothing changes a signed header or body.
    - ``variant``/``first_variant``: the A/B variants of this step and of step 1 (see
      :func:`render_step`); the caller chooses them (:func:`engine.domain.variants.choose_variant`).

    ValueError for a step that does not exist, an unusable address or a malformed Message-ID.
    """
    if tracking is not None and email_id is not None and tracking.email_id != email_id:
        tracking = dataclasses.replace(tracking, email_id=email_id)
    if tracking is not None and test:
        tracking = dataclasses.replace(tracking, opens=False, clicks=False)
    unsubscribe = (mime.unsubscribe_url(tracking) if tracking is not None else None) or ""
    parsed = _parsed(definition)
    rendered = render_step(parsed, step_number, contact, unsubscribe_url=unsubscribe, variant=variant,
                           first_variant=first_variant)
    step = parsed.step(step_number)
    thread = None
    sender_email = str(sender["email"])
    if enrollment_id is not None and step.follows_up(step_number):
        domain = sender_email.rsplit("@", 1)[1]
        thread = mime.Thread(previous_message_ids=tuple(
            mime.message_id_for(enrollment_id, earlier, domain) for earlier in range(1, step_number)))
    address = to_email if to_email is not None else str(contact.get("email") or "")
    built = mime.build_message(
        message_id=message_id,
        date=now,
        from_email=sender_email,
        from_name=sender.get("from_name"),
        to_email=address,
        to_name=None if to_email is not None else _display_name(contact),
        subject=TEST_PREFIX + rendered.subject if test else rendered.subject,
        body_html=rendered.body_html,
        body_text=rendered.body_text,
        thread=thread,
        tracking=tracking,
    )
    raw = built.raw
    if dkim is not None:
        raw = dkim_sign(raw, selector=dkim.selector, domain=dkim.domain, private_key_pem=dkim.private_key_pem,
                        algorithm=dkim.algorithm)
    return ComposedEmail(
        subject=built.subject,
        body_html=rendered.body_html,
        body_text=rendered.body_text,
        raw=raw,
        message_id=built.message_id,
        links=built.links,
        recipient=mime.envelope_address(address),
        variant=variant,
    )
