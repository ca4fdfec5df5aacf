"""SmtpMailer against a real aiosmtpd server on loopback: every reply becomes a value."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from engine.delivery.content.mime import build_message, message_id_for
from engine.delivery.outbound.smtp import SendResult, SmtpMailer, SmtpSettings
from tests.delivery.smtp_server import (
    SinkBehaviour,
    SmtpSink,
    free_port,
    make_self_signed_cert,
    server_tls_context,
)

FROM = "alice@sender.test"
TO = "bob@example.test"


def raw_message(n: int = 1) -> bytes:
    return (
        f"Message-ID: <m{n}@sender.test>\r\nFrom: {FROM}\r\nTo: {TO}\r\nSubject: n{n}\r\n\r\n"
        "Hello\r\n.a line starting with a dot\r\n..two dots\r\n"
    ).encode()


def plain(sink: SmtpSink, **overrides: object) -> SmtpSettings:
    values: dict[str, object] = {
        "host": sink.host,
        "port": sink.port,
        "security": "none",
        "timeout": 5.0,
        "local_hostname": "client.test",
    }
    values.update(overrides)
    return SmtpSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as server:
        yield server


@pytest.fixture
async def mailer() -> AsyncIterator[SmtpMailer]:
    smtp = SmtpMailer(local_hostname="client.test")
    yield smtp
    await smtp.close()


async def send(mailer: SmtpMailer, settings: SmtpSettings, n: int = 1, to: str = TO) -> SendResult:
    return await mailer.send("snd_1", settings, FROM, [to], raw_message(n))


async def test_sent_records_envelope_and_exact_bytes(sink: SmtpSink, mailer: SmtpMailer) -> None:
    result = await send(mailer, plain(sink))
    assert result.outcome == "sent"
    assert result.code == 250
    assert result.retryable is False
    [message] = sink.messages
    assert message.mail_from == FROM
    assert message.rcpt_tos == (TO,)
    assert message.data == raw_message(1)  # dot-stuffing undone by the server: byte-exact
    assert message.message_id == "<m1@sender.test>"


async def test_connection_is_reused_across_three_sends(sink: SmtpSink, mailer: SmtpMailer) -> None:
    settings = plain(sink)
    results = [await send(mailer, settings, n) for n in (1, 2, 3)]
    assert [r.outcome for r in results] == ["sent"] * 3
    assert sink.sessions == 1
    assert {m.session for m in sink.messages} == {1}
    assert mailer.idle_connections("snd_1") == 1


async def test_pools_are_per_sender(sink: SmtpSink, mailer: SmtpMailer) -> None:
    settings = plain(sink)
    await mailer.send("snd_a", settings, FROM, [TO], raw_message(1))
    await mailer.send("snd_b", settings, FROM, [TO], raw_message(2))
    await mailer.send("snd_a", settings, FROM, [TO], raw_message(3))
    assert sink.sessions == 2


async def test_421_greeting_is_connect_failed_then_recovers(sink: SmtpSink, mailer: SmtpMailer) -> None:
    sink.behaviour = SinkBehaviour(connect_reply="421 4.3.2 Service not available, try later")
    result = await send(mailer, plain(sink))
    assert (result.outcome, result.code, result.stage) == ("connect_failed", 421, "connect")
    assert result.retryable
    assert sink.messages == []
    sink.behaviour = SinkBehaviour()
    assert (await send(mailer, plain(sink))).outcome == "sent"


async def test_connection_refused_is_connect_failed(mailer: SmtpMailer) -> None:
    settings = SmtpSettings(host="127.0.0.1", port=free_port(), security="none", timeout=2.0)
    result = await mailer.send("snd_1", settings, FROM, [TO], raw_message())
    assert (result.outcome, result.code) == ("connect_failed", None)
    assert result.retryable


async def test_451_at_rcpt_is_deferred_and_connection_kept(sink: SmtpSink, mailer: SmtpMailer) -> None:
    sink.behaviour = SinkBehaviour(rcpt_reply="451 4.7.1 Greylisted, try again later")
    result = await send(mailer, plain(sink))
    assert (result.outcome, result.code, result.stage) == ("deferred", 451, "rcpt")
    assert result.enhanced_status == "4.7.1"
    sink.behaviour = SinkBehaviour()
    assert (await send(mailer, plain(sink), 2)).outcome == "sent"
    assert sink.sessions == 1  # RSET left the session reusable
    assert [m.message_id for m in sink.messages] == ["<m2@sender.test>"]


async def test_550_at_rcpt_is_rejected(sink: SmtpSink, mailer: SmtpMailer) -> None:
    sink.behaviour = SinkBehaviour(rcpt_replies={TO: "550 5.1.1 <bob@example.test>: no such user"})
    result = await send(mailer, plain(sink))
    assert (result.outcome, result.code, result.stage) == ("rejected", 550, "rcpt")
    assert result.enhanced_status == "5.1.1"
    assert result.retryable is False
    assert result.refused == ((TO, 550, "5.1.1 <bob@example.test>: no such user"),)
    assert (await send(mailer, plain(sink), 2, to="carol@example.test")).outcome == "sent"
    assert sink.sessions == 1


async def test_partial_refusal_is_sent_with_refused_listed(sink: SmtpSink, mailer: SmtpMailer) -> None:
    sink.behaviour = SinkBehaviour(rcpt_replies={"x@example.test": "550 5.1.1 unknown"})
    result = await mailer.send("snd_1", plain(sink), FROM, [TO, "x@example.test"], raw_message())
    assert result.outcome == "sent"
    assert result.refused == (("x@example.test", 550, "5.1.1 unknown"),)
    assert sink.messages[0].rcpt_tos == (TO,)


@pytest.mark.parametrize(
    ("reply", "outcome"),
    [("452 4.3.1 Insufficient storage", "deferred"), ("554 5.7.1 Message refused as spam", "rejected")],
)
async def test_refusal_at_data(sink: SmtpSink, mailer: SmtpMailer, reply: str, outcome: str) -> None:
    sink.behaviour = SinkBehaviour(data_reply=reply)
    result = await send(mailer, plain(sink))
    assert (result.outcome, result.code, result.stage) == (outcome, int(reply[:3]), "data")
    assert sink.messages == []


@pytest.mark.parametrize(
    ("reply", "outcome"),
    [
        ("451 4.3.0 Sender temporarily blocked", "deferred"),
        ("553 5.7.1 Sender not allowed", "rejected"),
        ("530 5.7.0 Authentication required", "auth_failed"),
    ],
)
async def test_refusal_at_mail(sink: SmtpSink, mailer: SmtpMailer, reply: str, outcome: str) -> None:
    sink.behaviour = SinkBehaviour(mail_reply=reply)
    result = await send(mailer, plain(sink))
    assert (result.outcome, result.code, result.stage) == (outcome, int(reply[:3]), "mail")


async def test_drop_after_data_is_uncertain(sink: SmtpSink, mailer: SmtpMailer) -> None:
    sink.behaviour = SinkBehaviour(drop_after_data=True)
    result = await send(mailer, plain(sink))
    assert (result.outcome, result.code, result.stage) == ("uncertain", None, "data")
    assert result.retryable is False
    assert len(sink.messages) == 1  # the server did get it: exactly why it must not be resent
    assert mailer.idle_connections("snd_1") == 0
    sink.behaviour = SinkBehaviour()
    assert (await send(mailer, plain(sink), 2)).outcome == "sent"
    assert sink.sessions == 2  # the broken connection was dropped and a new one opened


async def test_stall_before_data_is_deferred(sink: SmtpSink, mailer: SmtpMailer) -> None:
    sink.behaviour = SinkBehaviour(stall_at="rcpt", stall_seconds=10)
    result = await send(mailer, plain(sink, timeout=0.5))
    assert (result.outcome, result.stage) == ("deferred", "rcpt")
    assert "Timeout" in result.message or "timed out" in result.message.lower()
    assert mailer.idle_connections("snd_1") == 0


async def test_stall_after_data_is_uncertain(sink: SmtpSink, mailer: SmtpMailer) -> None:
    sink.behaviour = SinkBehaviour(stall_at="data", stall_seconds=10)
    result = await send(mailer, plain(sink, timeout=0.5))
    assert (result.outcome, result.stage) == ("uncertain", "data")


async def test_stalled_greeting_is_connect_failed(sink: SmtpSink, mailer: SmtpMailer) -> None:
    sink.behaviour = SinkBehaviour(stall_at="connect", stall_seconds=10)
    result = await send(mailer, plain(sink, timeout=0.5))
    assert (result.outcome, result.stage) == ("connect_failed", "connect")


async def test_server_closing_an_idle_connection_is_transparent(mailer: SmtpMailer) -> None:
    with SmtpSink(idle_timeout=0.3) as sink:
        assert (await send(mailer, plain(sink), 1)).outcome == "sent"
        await asyncio.sleep(0.8)
        assert (await send(mailer, plain(sink), 2)).outcome == "sent"
        assert sink.sessions == 2


async def test_changed_settings_open_a_new_connection(sink: SmtpSink, mailer: SmtpMailer) -> None:
    await send(mailer, plain(sink), 1)
    await send(mailer, plain(sink, timeout=7.0), 2)
    assert sink.sessions == 2
    assert mailer.idle_connections("snd_1") == 1


async def test_concurrent_sends_respect_the_connection_cap(sink: SmtpSink) -> None:
    mailer = SmtpMailer(max_connections=2, local_hostname="client.test")
    try:
        results = await asyncio.gather(*(send(mailer, plain(sink), n) for n in range(6)))
    finally:
        await mailer.close()
    assert [r.outcome for r in results] == ["sent"] * 6
    assert sink.sessions <= 2
    assert len(sink.messages) == 6


async def test_close_ends_the_pool(sink: SmtpSink) -> None:
    mailer = SmtpMailer(local_hostname="client.test")
    await send(mailer, plain(sink))
    assert mailer.idle_connections("snd_1") == 1
    await mailer.close()
    assert mailer.idle_connections("snd_1") == 0
    assert (await send(mailer, plain(sink), 2)).outcome == "sent"  # still usable afterwards
    await mailer.close()


async def test_unusable_envelope_address_is_rejected_without_connecting(mailer: SmtpMailer) -> None:
    settings = SmtpSettings(host="127.0.0.1", port=free_port(), security="none")
    result = await mailer.send("snd_1", settings, FROM, ["bob@example.test\r\nRCPT TO:<x@y.z>"], b"x")
    assert result.outcome == "rejected"


async def test_internationalised_recipient_uses_smtputf8(sink: SmtpSink, mailer: SmtpMailer) -> None:
    result = await send(mailer, plain(sink), to="jürgen@exämple.test")
    assert result.outcome == "sent"
    assert sink.messages[0].rcpt_tos == ("jürgen@exämple.test",)


async def test_non_ascii_address_without_smtputf8_is_unsendable_not_refused(mailer: SmtpMailer) -> None:
    """The server's limit, not the recipient's fault: never a bounce of the address."""
    with SmtpSink(smtputf8=False) as server:
        result = await send(mailer, plain(server), to="jürgen@example.test")
    assert (result.outcome, result.code) == ("unsendable", None) and "SMTPUTF8" in result.message


# -- authentication ---------------------------------------------------------------------------


@pytest.fixture
def auth_sink() -> Iterator[SmtpSink]:
    with SmtpSink(users={"alice": "s3cret"}) as server:
        yield server


async def test_auth_success(auth_sink: SmtpSink, mailer: SmtpMailer) -> None:
    result = await send(mailer, plain(auth_sink, username="alice", password="s3cret"))
    assert result.outcome == "sent"
    assert auth_sink.messages[0].auth_user == "alice"


async def test_auth_failure_is_auth_failed(auth_sink: SmtpSink, mailer: SmtpMailer) -> None:
    result = await send(mailer, plain(auth_sink, username="alice", password="wrong"))
    assert (result.outcome, result.code, result.stage) == ("auth_failed", 535, "auth")
    assert auth_sink.messages == []
    assert mailer.idle_connections("snd_1") == 0


async def test_missing_credentials_is_auth_failed(auth_sink: SmtpSink, mailer: SmtpMailer) -> None:
    result = await send(mailer, plain(auth_sink))
    assert (result.outcome, result.code) == ("auth_failed", 530)


async def test_check_login(auth_sink: SmtpSink, mailer: SmtpMailer) -> None:
    assert await mailer.check_login(plain(auth_sink, username="alice", password="s3cret")) == (True, None)
    ok, error = await mailer.check_login(plain(auth_sink, username="alice", password="nope"))
    assert ok is False
    assert error is not None and "invalid" in error.lower()
    # aiosmtplib tries each offered mechanism (PLAIN, then LOGIN) before giving up.
    assert auth_sink.auth_attempts[0] == ("alice", True)
    assert auth_sink.auth_attempts[1:] and all(a == ("alice", False) for a in auth_sink.auth_attempts[1:])
    refused = SmtpSettings(host="127.0.0.1", port=free_port(), security="none", timeout=2.0)
    ok, error = await mailer.check_login(refused)
    assert ok is False and error


# -- TLS --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_self_signed_cert(tmp_path_factory.mktemp("tls"))


async def test_starttls_with_self_signed_cert(certificate: tuple[Path, Path], mailer: SmtpMailer) -> None:
    cert, key = certificate
    with SmtpSink(tls_context=server_tls_context(cert, key), users={"alice": "s3cret"}) as sink:
        skip_checks = plain(sink, security="starttls", validate_certs=False, username="alice", password="s3cret")
        assert (await send(mailer, skip_checks)).outcome == "sent"
        trusted = plain(sink, security="starttls", cert_bundle=str(cert), username="alice", password="s3cret")
        assert (await mailer.send("snd_2", trusted, FROM, [TO], raw_message(2))).outcome == "sent"
        untrusted = plain(sink, security="starttls", username="alice", password="s3cret")
        result = await mailer.send("snd_3", untrusted, FROM, [TO], raw_message(3))
        assert (result.outcome, result.stage) == ("connect_failed", "connect")
        assert "certificate" in result.message.lower()
        assert [m.tls for m in sink.messages] == [True, True]
        assert [m.auth_user for m in sink.messages] == ["alice", "alice"]


async def test_starttls_required_but_not_offered(sink: SmtpSink, mailer: SmtpMailer) -> None:
    result = await send(mailer, plain(sink, security="starttls", validate_certs=False))
    assert (result.outcome, result.stage) == ("connect_failed", "connect")
    assert "STARTTLS" in result.message
    assert sink.messages == []


async def test_implicit_tls(certificate: tuple[Path, Path], mailer: SmtpMailer) -> None:
    cert, key = certificate
    with SmtpSink(tls_context=server_tls_context(cert, key), implicit_tls=True) as sink:
        result = await send(mailer, plain(sink, security="tls", cert_bundle=str(cert)))
        assert result.outcome == "sent"
        assert sink.messages[0].tls


# -- end to end with the message builder ------------------------------------------------------


async def test_built_message_round_trips(sink: SmtpSink, mailer: SmtpMailer) -> None:
    built = build_message(
        message_id=message_id_for("enr_1", 1, "sender.test"),
        date=datetime(2026, 1, 5, 9, 0, tzinfo=UTC),
        from_email=FROM,
        from_name="Alice Ünïcode",
        to_email=TO,
        to_name="Bob",
        subject="Héllo Bob",
        body_html="<p>Hi Bob,</p><p>. a dot line</p>",
    )
    assert (await mailer.send("snd_1", plain(sink), FROM, [TO], built.raw)).outcome == "sent"
    [received] = sink.by_message_id("<enr_1.1@sender.test>")
    assert received.data == built.raw
    parsed = message_from_bytes(received.data, policy=policy.default)
    assert parsed["Subject"] == "Héllo Bob"
    assert parsed["From"].addresses[0].display_name == "Alice Ünïcode"
