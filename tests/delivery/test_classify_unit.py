"""Hand-written messages exercising each decision of ``classify_message``.

Each case is the smallest realistic message for one rule: standard DSNs (hard, soft, block,
success), a prose-only bounce, an ARF complaint, automatic replies and human replies, plus inputs
no mail server should ever send. Property tests check the classifier never raises.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.delivery.classify import BounceEntry, Classification, classify_message


def dsn(status: str, diagnostic: str, action: str = "failed", recipient: str = "bob@example.org") -> bytes:
    """A standard RFC 3464 report about one recipient of message <orig-1@sender.example>."""
    return f"""\
From: Mail Delivery System <MAILER-DAEMON@mx.sender.example>
To: alice@sender.example
Subject: Undelivered Mail Returned to Sender
Message-ID: <dsn-1@mx.sender.example>
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="BOUNDARY"

--BOUNDARY
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.sender.example.

<{recipient}>: host mx.example.org[192.0.2.1] said: {diagnostic} (in reply to RCPT TO command)

--BOUNDARY
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.sender.example

Final-Recipient: rfc822; {recipient}
Original-Recipient: rfc822;{recipient}
Action: {action}
Status: {status}
Remote-MTA: dns; mx.example.org
Diagnostic-Code: smtp; {diagnostic}

--BOUNDARY
Content-Type: message/rfc822

From: Alice <alice@sender.example>
To: {recipient}
Subject: Spring newsletter
Message-ID: <orig-1@sender.example>

Hello!

--BOUNDARY--
""".replace("\n", "\r\n").encode()


def single(classification: Classification) -> BounceEntry:
    assert classification.kind == "bounce"
    assert len(classification.bounces) == 1
    return classification.bounces[0]


def test_user_unknown_dsn_is_a_hard_bounce_referring_to_the_original() -> None:
    result = classify_message(dsn("5.1.1", "550 5.1.1 <bob@example.org>: Recipient address rejected: User unknown"))
    entry = single(result)
    assert entry.recipient == "bob@example.org"
    assert (entry.status, entry.reply_code, entry.type, entry.reason) == ("5.1.1", "550", "hard", "userunknown")
    assert "<orig-1@sender.example>" in result.refers_to
    assert result.message_id == "<dsn-1@mx.sender.example>"
    assert result.from_address == "MAILER-DAEMON@mx.sender.example"
    assert result.subject == "Undelivered Mail Returned to Sender"


def test_full_mailbox_dsn_is_a_soft_bounce() -> None:
    entry = single(classify_message(dsn("4.2.2", "452 4.2.2 <bob@example.org>: Mailbox full", action="delayed")))
    assert (entry.status, entry.type, entry.reason) == ("4.2.2", "soft", "mailboxfull")


def test_spam_refusal_is_a_block_not_a_hard_bounce() -> None:
    entry = single(classify_message(dsn("5.7.1", "550 5.7.1 Message rejected as spam by Content Filtering")))
    assert (entry.status, entry.type, entry.reason) == ("5.7.1", "block", "spamdetected")


def test_a_5xx_status_alone_does_not_make_a_hard_bounce() -> None:
    entry = single(classify_message(dsn("5.7.1", "554 5.7.1 Service unavailable; Client host [192.0.2.9] "
                                                 "blocked using zen.spamhaus.org")))
    assert entry.type == "block"
    assert entry.reason == "blocked"


def test_success_dsn_is_a_delivery_report() -> None:
    result = classify_message(dsn("2.0.0", "250 2.0.0 OK queued as 1234", action="delivered"))
    assert result.kind == "delivery_report"
    assert result.bounces == ()
    assert result.delivered == ("bob@example.org",)
    assert "<orig-1@sender.example>" in result.refers_to


EXIM_BOUNCE = b"""\
From: Mail Delivery System <Mailer-Daemon@mail.example.net>
To: alice@sender.example
Subject: Mail delivery failed: returning message to sender
X-Failed-Recipients: carol@example.com
Message-Id: <E1abc-0001@mail.example.net>

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  carol@example.com
    host mx.example.com [192.0.2.7]
    SMTP error from remote mail server after RCPT TO:<carol@example.com>:
    550 5.1.1 <carol@example.com>: Recipient address rejected: User unknown

------ This is a copy of the message, including all the headers. ------

From: alice@sender.example
To: carol@example.com
Subject: Hi
Message-ID: <orig-2@sender.example>

Hi Carol
"""


def test_prose_only_bounce_is_read_from_the_text() -> None:
    result = classify_message(EXIM_BOUNCE)
    entry = single(result)
    assert (entry.recipient, entry.status, entry.reply_code, entry.type) == ("carol@example.com", "5.1.1", "550",
                                                                             "hard")
    assert result.refers_to == ("<orig-2@sender.example>",)


def test_status_is_none_when_the_bounce_states_no_code() -> None:
    raw = EXIM_BOUNCE.replace(b"550 5.1.1 <carol@example.com>: Recipient address rejected: User unknown",
                              b"retry timeout exceeded")
    entry = single(classify_message(raw))
    assert entry.status is None
    assert (entry.type, entry.reason) == ("soft", "expired")


def test_a_person_forwarding_a_bounce_is_a_message() -> None:
    raw = b"From: Alice <alice@sender.example>\nTo: support@sender.example\n" \
          b"Subject: Fwd: Undelivered Mail Returned to Sender\n\nWhy did this fail?\n\n" + EXIM_BOUNCE
    assert classify_message(raw).kind == "message"


def test_report_with_one_delivered_and_one_failed_recipient() -> None:
    raw = dsn("5.1.1", "550 5.1.1 unknown user").replace(
        b"Final-Recipient: rfc822; bob@example.org",
        b"Final-Recipient: rfc822; joe@example.org\r\nAction: delivered\r\nStatus: 2.0.0\r\n\r\n"
        b"Final-Recipient: rfc822; bob@example.org",
    )
    result = classify_message(raw)
    entry = single(result)
    assert entry.recipient == "bob@example.org"
    assert result.delivered == ("joe@example.org",)


def test_delay_warning_is_a_soft_bounce() -> None:
    raw = b"""\
From: Mail Delivery System <Mailer-Daemon@mail.example.net>
To: alice@sender.example
Subject: Warning: message 1abc-0001 delayed 24 hours

This message was created automatically by mail delivery software.
A message that you sent has not yet been delivered to one or more of its
recipients after more than 24 hours on the queue on mail.example.net.

The address to which the message has not yet been delivered is:

  kim@example.com
    Delay reason: SMTP error from remote mail server after RCPT TO:<kim@example.com>:
    451 4.3.0 Temporary local problem - please try later

No action is required on your part. Delivery attempts will continue for
some time, and this warning may be repeated at intervals if the message
remains undelivered.
"""
    entry = single(classify_message(raw))
    assert (entry.recipient, entry.status, entry.type) == ("kim@example.com", "4.3.0", "soft")


def test_auto_submitted_reply_is_an_out_of_office_auto_reply() -> None:
    raw = b"""\
From: Dave <dave@example.org>
To: alice@sender.example
Subject: Away until May 5
Auto-Submitted: auto-replied
In-Reply-To: <orig-3@sender.example>
Message-ID: <auto-1@example.org>

I am currently away and will reply on my return.
"""
    result = classify_message(raw)
    assert result.kind == "auto_reply"
    assert result.out_of_office is True
    assert result.refers_to == ("<orig-3@sender.example>",)


@pytest.mark.parametrize(
    "subject",
    ["Out of Office: Spring newsletter", "Automatic reply: Spring newsletter", "Abwesenheitsnotiz",
     "Réponse automatique : Spring newsletter", "Respuesta automática: Spring newsletter",
     "Fuori sede", "自動応答: お知らせ", "Auto: Spring newsletter"],
)
def test_auto_reply_subjects_in_several_languages(subject: str) -> None:
    raw = f"From: Erin <erin@example.org>\nTo: alice@sender.example\nSubject: {subject}\n\nBack soon.\n"
    result = classify_message(raw.encode())
    assert result.kind == "auto_reply"
    assert result.out_of_office is True


def test_auto_submitted_no_with_a_plain_subject_is_a_message() -> None:
    raw = b"From: Frank <frank@example.org>\nTo: alice@sender.example\nSubject: Question about pricing\n" \
          b"Auto-Submitted: no\n\nHow much is it?\n"
    result = classify_message(raw)
    assert result.kind == "message"
    assert result.out_of_office is False


def test_a_person_answering_an_auto_reply_is_a_message() -> None:
    raw = b"From: Alice <alice@sender.example>\nTo: dave@example.org\nSubject: Re: Out of office\n\nok\n"
    assert classify_message(raw).kind == "message"


def test_human_reply_references_end_up_in_refers_to() -> None:
    raw = b"""\
From: Grace <Grace@Example.org>
To: alice@sender.example
Subject: Re: Spring newsletter
Message-ID: <reply-1@example.org>
In-Reply-To: <orig-1@sender.example>
References: <thread-0@sender.example>
 <orig-1@sender.example>

Sounds good, count me in.
"""
    result = classify_message(raw)
    assert result.kind == "message"
    assert result.refers_to == ("<orig-1@sender.example>", "<thread-0@sender.example>")
    assert result.from_address == "Grace@Example.org"
    assert result.message_id == "<reply-1@example.org>"
    assert result.bounces == ()


ARF = b"""\
From: Feedback Loop <fbl@isp.example>
To: abuse@sender.example
Subject: Abuse Report
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="ARF"

--ARF
Content-Type: text/plain

This is an email abuse report.

--ARF
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: ExampleFBL/1.0
Version: 1
Original-Mail-From: <alice@sender.example>
Original-Rcpt-To: <henry@isp.example>

--ARF
Content-Type: message/rfc822

From: alice@sender.example
To: henry@isp.example
Subject: Spring newsletter
Message-ID: <orig-4@sender.example>

Hello!
--ARF--
"""


def test_arf_report_is_feedback_with_type_and_recipient() -> None:
    result = classify_message(ARF)
    assert result.kind == "feedback"
    assert result.feedback_type == "abuse"
    assert result.feedback_recipient == "henry@isp.example"
    assert result.refers_to == ("<orig-4@sender.example>",)


def test_amazon_ses_json_bounce_notification() -> None:
    raw = b"""\
From: SES <no-reply@sns.amazonaws.com>
Subject: AWS Notification Message
Content-Type: text/plain

{"notificationType":"Bounce","bounce":{"bounceType":"Permanent","bounceSubType":"General",
"bouncedRecipients":[{"emailAddress":"ivan@example.org","action":"failed","status":"5.1.1",
"diagnosticCode":"smtp; 550 5.1.1 user unknown"}]},"mail":{"messageId":"0101-abc"}}
"""
    entry = single(classify_message(raw))
    assert (entry.recipient, entry.status, entry.type) == ("ivan@example.org", "5.1.1", "hard")


@pytest.mark.parametrize("raw", [b"", b"\x00\xff\xfe garbage \x80\x81", b"\r\n\r\n\r\n", b"Subject:\n\n",
                                 b"Content-Type: multipart/report; report-type=delivery-status\n\n--x\n"])
def test_garbage_is_a_plain_message(raw: bytes) -> None:
    result = classify_message(raw)
    assert result.kind == "message"
    assert result.bounces == ()


def test_results_are_frozen() -> None:
    result = classify_message(EXIM_BOUNCE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.kind = "message"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.bounces[0].type = "soft"  # type: ignore[misc]


def test_public_import_path() -> None:
    from engine import classify_message as exported

    assert exported is classify_message


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_never_raises_on_arbitrary_bytes(raw: bytes) -> None:
    result = classify_message(raw)
    assert result.kind in ("bounce", "delivery_report", "auto_reply", "feedback", "message")


_FIELD = st.text(alphabet=st.characters(codec="utf-8"), max_size=80)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(status=_FIELD, diagnostic=_FIELD, action=_FIELD, recipient=_FIELD)
def test_never_raises_on_malformed_reports(status: str, diagnostic: str, action: str, recipient: str) -> None:
    raw = dsn(status.replace("\n", " "), diagnostic.replace("\n", " "), action.replace("\n", " "),
              recipient.replace("\n", " "))
    result = classify_message(raw)
    assert result.kind in ("bounce", "delivery_report")
    for entry in result.bounces:
        assert entry.type in ("hard", "soft", "block")
