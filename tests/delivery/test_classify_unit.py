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

from engine.delivery.bounces import BounceEntry, Classification, classify_message


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


# --- Generalised rules (RFC 3463 / 3464 / 5321 and Sisimai's documented reading) ----------------


def report(status: str | None, diagnostic: str | None, *, action: str | None = "failed",
           notice: str = "Delivery to bob@example.org failed.", subject: str = "Undelivered Mail Returned to Sender",
           fields: str = "", recipient: str = "bob@example.org") -> bytes:
    """A minimal RFC 3464 report: only the fields given, and a notice that names no SMTP command."""
    lines = [f"Final-Recipient: rfc822; {recipient}"]
    if action is not None:
        lines.append(f"Action: {action}")
    if status is not None:
        lines.append(f"Status: {status}")
    if diagnostic is not None:
        lines.append(f"Diagnostic-Code: smtp; {diagnostic}")
    if fields:
        lines.append(fields)
    per_recipient = "\n".join(lines)
    return f"""\
From: MAILER-DAEMON@mx.sender.example
To: alice@sender.example
Subject: {subject}
Message-ID: <report-1@mx.sender.example>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

{notice}

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.sender.example

{per_recipient}

--B
Content-Type: text/rfc822-headers

From: alice@sender.example
To: {recipient}
Message-ID: <orig-9@sender.example>
Subject: hello

--B--
""".replace("\n", "\r\n").encode()


def test_status_field_wins_over_a_different_code_in_the_diagnostic() -> None:
    # Given a report whose Status field says 5.1.1 while the quoted answer says 5.7.1
    raw = report("5.1.1", "550 5.7.1 <bob@example.org>: Recipient address rejected: User unknown")
    # When it is classified
    entry = single(classify_message(raw))
    # Then the Status field is kept (RFC 3464 2.3.4) and the address is dead
    assert (entry.status, entry.type, entry.reason) == ("5.1.1", "hard", "userunknown")


def test_a_policy_refusal_reported_as_an_address_status_keeps_the_receivers_code() -> None:
    # Given Status 5.1.1 whose quoted answer (the receiver's own, RFC 3464 2.3.6) is a blocklist refusal
    raw = report("5.1.1", "550 5.7.1 Service unavailable; client [192.0.2.9] blocked using zen.spamhaus.org")
    # When it is classified
    entry = single(classify_message(raw))
    # Then the words make it a block, not a dead address, and the receiver's policy code is reported
    assert (entry.status, entry.type, entry.reason) == ("5.7.1", "block", "blocked")


@pytest.mark.parametrize(("field", "diagnostic", "expected"), [
    ("5.0.0", "550 5.1.1 <bob@example.org>... User unknown", "5.1.1"),  # X.0.0 only tells the class
    ("5.7.0", "550 5.7.1 Message rejected as spam", "5.7.1"),  # X.Y.0 is "other or undefined"
    ("4.4.7", "421 4.4.2 Connection timed out", "4.4.2"),  # RFC 3463: report the actual problem
])
def test_a_generic_status_field_yields_to_the_specific_quoted_code(field: str, diagnostic: str,
                                                                   expected: str) -> None:
    # Given a Status field that is a placeholder and a quoted answer with a specific code
    # When it is classified
    entry = single(classify_message(report(field, diagnostic)))
    # Then the specific code is the status
    assert entry.status == expected


def test_the_reply_code_settles_a_class_disagreement() -> None:
    # Given Status 4.2.2 but a quoted permanent answer "552 5.2.2"
    entry = single(classify_message(report("4.2.2", "552 5.2.2 Mailbox full")))
    # When it is classified, then the code that shares the reply's class wins (RFC 3463 section 2)
    assert (entry.status, entry.reply_code) == ("5.2.2", "552")


def test_a_later_mx_refusal_is_read_in_the_class_of_the_status_field() -> None:
    # Given a transcript where a first MX deferred (4.4.1) and the next refused the user (5.1.1)
    raw = report("5.1.1", "451 4.4.1 reply: read error from mx1.example.org; "
                          "550 5.1.1 <bob@example.org>... User unknown")
    # When it is classified
    entry = single(classify_message(raw))
    # Then the refusal the Status field summarises decides: a dead address
    assert (entry.status, entry.type, entry.reason) == ("5.1.1", "hard", "userunknown")


@pytest.mark.parametrize("status", ["5.0.0", None])
def test_550_user_unknown_at_an_unknown_stage_is_a_filter_as_sisimai_reads_it(status: str | None) -> None:
    # Given "550 User unknown" with a generic Status (or none) and no word about the SMTP stage
    entry = single(classify_message(report(status, "550 User unknown")))
    # When it is classified, then the words alone do not condemn the address: filtering gateways
    # answer so for mail their rules refuse (Sisimai: filtered), and the contact is not at fault
    assert (entry.type, entry.reason, entry.reply_code) == ("block", "filtered", "550")


def test_user_unknown_at_rcpt_is_a_dead_address() -> None:
    # Given the same words, refused in reply to RCPT TO (the recipient was refused by name)
    raw = report("5.0.0", "550 User unknown", notice="bob@example.org: host mx.example.org said: 550 User "
                                                     "unknown (in reply to RCPT TO command)")
    # When it is classified, then the mailbox does not exist
    entry = single(classify_message(raw))
    assert (entry.type, entry.reason) == ("hard", "userunknown")


def test_user_unknown_after_data_is_a_filter() -> None:
    # Given the same words, but the recipient was refused only after DATA (it had been accepted)
    raw = report("5.0.0", "550 User unknown", notice="bob@example.org: host mx.example.org said: 550 User "
                                                     "unknown (in reply to end of DATA command)")
    # When it is classified, then it is a filter refusal: the contact is not at fault
    entry = single(classify_message(raw))
    assert (entry.type, entry.reason) == ("block", "filtered")


def test_a_mailbox_status_says_the_mailbox_exists() -> None:
    # Given X.2.0 (RFC 3463: the mailbox exists) with "user unknown" words
    entry = single(classify_message(report("5.2.0", "550 5.2.0 User unknown")))
    # When it is classified, then it is a filter refusal, not a dead address
    assert (entry.type, entry.reason) == ("block", "filtered")


def test_a_full_mailbox_is_soft_even_when_permanent() -> None:
    # Given a permanent 5.2.2 (mailbox full)
    entry = single(classify_message(report("5.2.2", "552 5.2.2 <bob@example.org>: Mailbox full")))
    # When it is classified, then it may succeed later (RFC 3463: X.2.2 is a persistent transient failure)
    assert (entry.status, entry.type, entry.reason) == ("5.2.2", "soft", "mailboxfull")


@pytest.mark.parametrize(("diagnostic", "reason", "kind"), [
    ("552 Sorry", "mailboxfull", "soft"),  # RFC 5321: exceeded storage allocation
    ("521 mx.example.org", "notaccept", "hard"),  # RFC 7504: host does not accept mail
    ("556 example.org", "notaccept", "hard"),  # RFC 7504: domain does not accept mail
    ("451 Try later", "systemerror", "soft"),  # RFC 5321: local error in processing
])
def test_a_bare_reply_code_still_means_what_its_rfc_says(diagnostic: str, reason: str, kind: str) -> None:
    # Given an answer with a reply code and no recognisable words
    entry = single(classify_message(report(None, diagnostic)))
    # When it is classified, then the reason is the one the reply code is defined for
    assert (entry.reason, entry.type) == (reason, kind)


def test_a_sender_null_mx_is_not_the_recipients_fault() -> None:
    # Given 5.7.27 (RFC 7505: the sender's domain has a null MX)
    entry = single(classify_message(report("5.7.27", "550 5.7.27 Sender address has null MX")))
    # When it is classified, then the contact is not blamed
    assert (entry.type, entry.reason) == ("block", "rejected")


def test_a_delayed_report_is_exposed_and_never_hard() -> None:
    # Given an RFC 3464 report with Action: delayed whose last answer was "user unknown"
    raw = report("4.1.1", "450 4.1.1 <bob@example.org>: Recipient address rejected: User unknown",
                 action="delayed", subject="Delayed Mail (still being retried)")
    # When it is classified
    result = classify_message(raw)
    entry = single(result)
    # Then the engine can tell a delay notice from a bounce, and the address is not declared dead
    assert (entry.action, entry.delayed, result.delayed) == ("delayed", True, True)
    assert entry.type == "soft"


def test_a_failed_report_has_the_failed_action() -> None:
    # Given an ordinary failure report
    result = classify_message(report("5.1.1", "550 5.1.1 User unknown"))
    # When it is classified, then it is no delay
    assert (single(result).action, result.delayed) == ("failed", False)


def test_will_retry_until_without_an_action_is_a_delay() -> None:
    # Given a report with no Action field but a Will-Retry-Until date (only a delayed report has one)
    raw = report("4.4.1", "451 4.4.1 No answer from host", action=None,
                 fields="Will-Retry-Until: Fri, 8 May 2026 10:00:00 +0000")
    # When it is classified, then it is a delay
    assert single(classify_message(raw)).action == "delayed"


def test_a_bent_action_value_is_read_as_the_standard_one() -> None:
    # Given a non-standard spelling of the action ("Failure")
    entry = single(classify_message(report("5.1.1", "550 5.1.1 User unknown", action="Failure")))
    # When it is classified, then it is the RFC 3464 "failed"
    assert entry.action == "failed"


def test_a_report_mixing_failed_and_delayed_recipients_is_not_a_delay() -> None:
    # Given one failed and one delayed recipient in the same report
    raw = report("5.1.1", "550 5.1.1 User unknown").replace(
        b"Final-Recipient: rfc822; bob@example.org",
        b"Final-Recipient: rfc822; joe@example.org\r\nAction: delayed\r\nStatus: 4.4.1\r\n"
        b"Diagnostic-Code: smtp; 451 4.4.1 No answer from host\r\n\r\nFinal-Recipient: rfc822; bob@example.org",
    )
    # When it is classified
    result = classify_message(raw)
    # Then each entry says what happened to it, and the message as a whole is a bounce
    assert [(entry.recipient, entry.action) for entry in result.bounces] == [
        ("joe@example.org", "delayed"), ("bob@example.org", "failed")]
    assert result.delayed is False


def test_a_prose_delay_warning_is_a_delay() -> None:
    # Given Exim's delay warning (no delivery-status part), as in test_delay_warning_is_a_soft_bounce
    raw = b"""\
From: Mail Delivery System <Mailer-Daemon@mail.example.net>
To: alice@sender.example
Subject: Warning: message 1abc-0001 delayed 24 hours

This message was created automatically by mail delivery software.
A message that you sent has not yet been delivered to one or more of its
recipients after more than 24 hours on the queue on mail.example.net.

  kim@example.com
    Delay reason: SMTP error from remote mail server after RCPT TO:<kim@example.com>:
    451 4.3.0 Temporary local problem - please try later

No action is required on your part. Delivery attempts will continue for
some time, and this warning may be repeated at intervals if the message
remains undelivered.
"""
    # When it is classified
    result = classify_message(raw)
    # Then it is flagged as a delay
    assert (single(result).action, result.delayed) == ("delayed", True)


VERIZON = b"""\
Return-Path: <>
From: post_master@vtext.com
To: alice@sender.example
Subject: Re: Spring newsletter
Message-ID: <ndr-1@vtext.com>

Error: No valid recipients for this MM

Message details:
  Subject: Spring newsletter
  Sent date: Wed Jun 12 02:22:12 GMT 2013
  MAIL FROM: alice@sender.example
  RCPT TO: 2125550100@vtext.com
  From: alice@sender.example
  To: 2125550100@vtext.com
  Size (bytes): 512
"""


def test_a_report_spelling_out_the_envelope_is_a_bounce_even_with_a_reply_subject() -> None:
    # Given a gateway notice with a "Re:" subject, whose body lists the MAIL FROM / RCPT TO envelope
    # and puts the error before the recipient ("Size (bytes): 512" is no SMTP reply)
    result = classify_message(VERIZON)
    # When it is classified, then it is a hard bounce of the listed recipient
    entry = single(result)
    assert (entry.recipient, entry.type, entry.reason) == ("2125550100@vtext.com", "hard", "userunknown")


def test_a_person_quoting_an_envelope_is_still_a_message() -> None:
    # Given a person's reply that quotes MAIL FROM / RCPT TO lines, from a person's mailbox
    raw = (b"From: Dave <dave@example.org>\nTo: alice@sender.example\nSubject: Re: SMTP question\n\n"
           b"I typed:\nMAIL FROM: <alice@sender.example>\nRCPT TO: <dave@example.org>\nand it worked.\n")
    # When it is classified, then one clue is not enough: it is a message
    assert classify_message(raw).kind == "message"


def test_a_providers_documented_code_family_names_the_reason() -> None:
    # Given Cox's "AUP#IPBLnnnn" (the sending IP is on a DNS blocklist)
    raw = report("5.7.1", "554 5.7.1 cox.net rejected IP 192.0.2.9 AUP#IPBL0010", recipient="bob@cox.net")
    # When it is classified, then it is a block
    entry = single(classify_message(raw))
    assert (entry.type, entry.reason) == ("block", "blocked")


def test_a_provider_catalogue_applies_to_a_notice_sent_by_the_providers_host() -> None:
    # Given a prose notice without Reporting-MTA, handed to us by Cox's own MTA
    raw = b"""\
Received: from mta104.cox.net (mta104.cox.net [192.0.2.46]) by mx.sender.example; Mon, 1 Mar 2021 10:00:00 +0000
From: MAILER-DAEMON@cox.net
To: alice@sender.example
Subject: failure notice

Hi. This is the qmail-send program at cox.net.
I'm afraid I wasn't able to deliver your message to the following addresses.

<carol@example.net>:
192.0.2.55 does not like recipient.
Remote host said: 554 Message rejected AUP#CXBL
Giving up on 192.0.2.55.
"""
    # When it is classified, then Cox's catalogue names the reason
    entry = single(classify_message(raw))
    assert (entry.recipient, entry.type, entry.reason) == ("carol@example.net", "block", "blocked")


@pytest.mark.parametrize("answer", ["550 : User unknown", "550: : User unknown", "550 :User unknown"])
def test_au_domain_filter_answer_is_read_whatever_its_spacing(answer: str) -> None:
    # Given au's documented domain-filter answer, as relays re-quote it
    entry = single(classify_message(report("5.0.0", answer, recipient="bob@ezweb.ne.jp")))
    # When it is classified, then it is the recipient's filter (Sisimai's KDDI catalogue), not a dead address
    assert (entry.type, entry.reason) == ("block", "filtered")


@pytest.mark.parametrize(("field", "diagnostic", "expected"), [
    ("5.3.5", "550 5.1.1 <bob@example.org>... User unknown", "5.1.1"),  # system incorrectly configured
    ("5.5.4", "552 5.2.2 <bob@example.org>... Mailbox full", "5.2.2"),  # invalid command arguments
    ("5.5.2", "550 5.0.0 Rejected", "5.5.2"),  # the quoted code says less: the field stays
])
def test_a_status_field_about_the_reporting_system_yields_to_the_quoted_answer(field: str, diagnostic: str,
                                                                               expected: str) -> None:
    # Given a Status field naming the reporter's own mail-system or protocol trouble (RFC 3463 X.3.x,
    # X.5.1/2/4/5) while the text quotes the next hop's answer
    # When it is classified
    entry = single(classify_message(report(field, diagnostic)))
    # Then a specific quoted code is the better account of the failure; a generic one is not
    assert entry.status == expected


def prose_bounce(sender: str, subject: str, body: str, recipient: str = "bob@example.org") -> bytes:
    """A notification without a delivery-status part: the MTA's own text, then the returned message."""
    return f"""\
From: {sender}
To: alice@sender.example
Subject: {subject}
Message-ID: <prose-1@mx.example.org>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="B"

--B
Content-Type: text/plain; charset=us-ascii

{body}

--B
Content-Type: message/rfc822

From: Alice <alice@sender.example>
To: {recipient}
Subject: Spring newsletter
Message-ID: <orig-7@sender.example>

Hello!

--B--
""".replace("\n", "\r\n").encode()


def test_interscan_unable_to_deliver_names_a_dead_address() -> None:
    # Given Trend Micro InterScan MSS's notice, signed only in its From header, whose one sentence
    # about the recipient is its "Unable to deliver message to <address>"
    raw = prose_bounce('"InterScan MSS" <postmaster@mx.example.org>', "Mail could not be delivered",
                       "Unable to deliver message to <bob@example.org>.")
    # When it is classified
    entry = single(classify_message(raw))
    # Then it is the dead address Trend Micro's wording means
    assert (entry.recipient, entry.reason, entry.type) == ("bob@example.org", "userunknown", "hard")


def test_unable_to_deliver_from_an_unknown_mta_names_nothing_specific() -> None:
    # Given the same sentence from a notifier that is not InterScan
    raw = prose_bounce("MAILER-DAEMON@mx.example.org", "Delivery failure",
                       "Unable to deliver message to <bob@example.org>.")
    # When it is classified, then the sentence alone does not condemn the address
    assert single(classify_message(raw)).type != "hard"


@pytest.mark.parametrize(("information", "reason", "kind"), [
    ("Mail Delivery Failed... User unknown", "filtered", "block"),
    ("The number of messages in recipient's mailbox exceeded the local limit.", "mailboxfull", "soft"),
])
def test_biglobe_non_delivered_information_names_the_reason(information: str, reason: str, kind: str) -> None:
    # Given BIGLOBE's notice: the address, then one "Non-delivered information" sentence
    body = ("   ----- The following addresses had delivery problems -----\n"
            "bob@mail.biglobe.ne.jp\n\n"
            f"   ----- Non-delivered information -----\n{information}\n")
    raw = prose_bounce("postmaster@biglobe.ne.jp", "Returned mail: Delivery failed", body,
                       recipient="bob@mail.biglobe.ne.jp")
    # When it is classified
    entry = single(classify_message(raw))
    # Then the sentence names the reason as BIGLOBE documents it
    assert (entry.recipient, entry.reason, entry.type) == ("bob@mail.biglobe.ne.jp", reason, kind)


def test_a_refused_helo_name_is_the_senders_fault_not_a_dead_domain() -> None:
    # Given sendmail's account of a server refusing our HELO name as "Invalid domain name"
    raw = report("5.0.0", "501 5.0.0 Invalid domain name",
                 notice="Connected to 192.0.2.112 but my name was rejected.\n"
                        "Remote host said: 501 5.0.0 Invalid domain name")
    # When it is classified
    entry = single(classify_message(raw))
    # Then the recipient is not blamed: it is a block against the sender
    assert entry.type == "block"


def test_opensmtpd_invalid_domain_name_is_an_unknown_host() -> None:
    # Given OpenSMTPD's own notice (smtpd/bounce.c), whose relay could not resolve the domain
    raw = prose_bounce("Mailer Daemon <MAILER-DAEMON@mx.sender.example>", "Delivery status notification: error",
                       "    Hi!\n\n"
                       "    This is the MAILER-DAEMON, please DO NOT REPLY to this e-mail.\n\n"
                       "    An error has occurred while attempting to deliver a message for\n"
                       "    the following list of recipients:\n\n"
                       "bob@example.invalid: Invalid domain name\n\n"
                       "    Below is a copy of the original message:\n",
                       recipient="bob@example.invalid")
    # When it is classified
    entry = single(classify_message(raw))
    # Then the domain is the dead part of the address
    assert (entry.recipient, entry.reason, entry.type) == ("bob@example.invalid", "hostunknown", "hard")
