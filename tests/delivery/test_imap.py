"""The IMAP reader against a real Dovecot: checkpoints, resyncs, TLS and every failure mode."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from engine.delivery.inbound.imap import (
    Checkpoint,
    FetchResult,
    ImapSettings,
    MailboxError,
    MailboxReader,
    check_login,
    encode_mailbox_name,
)
from tests.delivery import dovecot as dovecot_module
from tests.delivery.dovecot import Dovecot, DovecotUnavailable, free_port

USER = "sender@example.test"
PASSWORD = "s3cret pass"


def message(n: int) -> bytes:
    return (
        f"From: Contact {n} <contact{n}@example.org>\r\n"
        f"To: {USER}\r\n"
        f"Subject: Re: hello {n}\r\n"
        f"Message-ID: <reply-{n}@example.org>\r\n"
        "\r\n"
        f"Reply number {n}.\r\n"
    ).encode()


@pytest.fixture
def mailbox(dovecot: Dovecot) -> Dovecot:
    dovecot.add_user(USER, PASSWORD)
    return dovecot


def raws(result: FetchResult) -> list[bytes]:
    return [raw for _uid, raw in result.messages]


async def test_fetches_new_messages_then_nothing(mailbox: Dovecot) -> None:
    uids = [mailbox.append(USER, message(n)) for n in (1, 2)]
    reader = MailboxReader()

    first = await reader.fetch_new(mailbox.settings(USER), None)
    assert [uid for uid, _raw in first.messages] == uids
    assert raws(first) == [message(1), message(2)]  # the full RFC 822 bytes, unchanged
    assert first.checkpoint == Checkpoint(mailbox.uidvalidity(USER), uids[-1])
    assert first.resynced and not first.more

    second = await reader.fetch_new(mailbox.settings(USER), first.checkpoint)
    assert second.messages == []
    assert second.checkpoint == first.checkpoint
    assert not second.resynced


async def test_a_new_message_is_fetched_exactly_once(mailbox: Dovecot) -> None:
    mailbox.append(USER, message(1))
    reader = MailboxReader()
    checkpoint = (await reader.fetch_new(mailbox.settings(USER), None)).checkpoint

    mailbox.append(USER, message(2))
    got = await reader.fetch_new(mailbox.settings(USER), checkpoint)
    assert raws(got) == [message(2)]
    again = await reader.fetch_new(mailbox.settings(USER), got.checkpoint)
    assert again.messages == []


async def test_the_highest_message_is_not_returned_again_when_newer_ones_vanished(mailbox: Dovecot) -> None:
    # "UID n:*" always matches the highest message, even when its UID is below n. With UIDs
    # 1-2 read and 3 expunged, UIDNEXT is 4, so the reader must ask and filter the answer.
    mailbox.append(USER, message(1))
    mailbox.append(USER, message(2))
    reader = MailboxReader()
    checkpoint = (await reader.fetch_new(mailbox.settings(USER), None)).checkpoint
    mailbox.expunge(USER, mailbox.append(USER, message(3)))

    got = await reader.fetch_new(mailbox.settings(USER), checkpoint)
    assert got.messages == []
    assert got.checkpoint.last_uid == checkpoint.last_uid


async def test_the_checkpoint_works_across_reader_instances(mailbox: Dovecot) -> None:
    mailbox.append(USER, message(1))
    stored = (await MailboxReader().fetch_new(mailbox.settings(USER), None)).checkpoint
    stored = Checkpoint(uidvalidity=stored.uidvalidity, last_uid=stored.last_uid)  # as if reloaded
    mailbox.append(USER, message(2))

    got = await MailboxReader().fetch_new(mailbox.settings(USER), stored)
    assert raws(got) == [message(2)]


async def test_a_uidvalidity_change_resyncs_the_whole_folder(mailbox: Dovecot) -> None:
    folder = "Replies"
    mailbox.append(USER, message(1), folder=folder)
    reader = MailboxReader()
    before = await reader.fetch_new(mailbox.settings(USER, folder=folder), None)
    assert raws(before) == [message(1)]

    mailbox.recreate_folder(USER, folder)  # new UIDVALIDITY: the old UIDs mean nothing now
    mailbox.append(USER, message(2), folder=folder)
    mailbox.append(USER, message(3), folder=folder)

    after = await reader.fetch_new(mailbox.settings(USER, folder=folder), before.checkpoint)
    assert after.resynced
    assert after.checkpoint.uidvalidity != before.checkpoint.uidvalidity
    assert raws(after) == [message(2), message(3)]  # everything, from the first message


async def test_reading_leaves_messages_unseen(mailbox: Dovecot) -> None:
    uid = mailbox.append(USER, message(1))
    await MailboxReader().fetch_new(mailbox.settings(USER), None)
    assert "\\Seen" not in mailbox.flags(USER, uid)


async def test_large_backlogs_come_in_capped_batches(mailbox: Dovecot) -> None:
    for n in range(1, 6):
        mailbox.append(USER, message(n))
    reader = MailboxReader(max_messages=2, batch_size=1)
    checkpoint: Checkpoint | None = None
    seen: list[bytes] = []
    mores: list[bool] = []
    for _ in range(3):
        result = await reader.fetch_new(mailbox.settings(USER), checkpoint)
        seen.extend(raws(result))
        mores.append(result.more)
        checkpoint = result.checkpoint
    assert seen == [message(n) for n in range(1, 6)]
    assert mores == [True, True, False]


async def test_folder_names_with_spaces_and_accents(mailbox: Dovecot) -> None:
    folder = "Réponses & clients"
    mailbox.append(USER, message(1), folder=folder)
    got = await MailboxReader().fetch_new(mailbox.settings(USER, folder=folder), None)
    assert raws(got) == [message(1)]


async def test_a_missing_folder_is_a_folder_error(mailbox: Dovecot) -> None:
    with pytest.raises(MailboxError) as caught:
        await MailboxReader().fetch_new(mailbox.settings(USER, folder="Nope"), None)
    assert caught.value.kind == "folder"


async def test_a_wrong_password_is_an_auth_error(mailbox: Dovecot) -> None:
    with pytest.raises(MailboxError) as caught:
        await MailboxReader().fetch_new(mailbox.settings(USER, password="wrong"), None)
    assert caught.value.kind == "auth"
    assert USER in str(caught.value)
    assert "wrong" not in str(caught.value)  # the password never leaks into messages


async def test_a_closed_port_is_a_connection_error(mailbox: Dovecot) -> None:
    closed = replace(mailbox.settings(USER), port=free_port(), timeout=2)
    with pytest.raises(MailboxError) as caught:
        await MailboxReader().fetch_new(closed, None)
    assert caught.value.kind == "connection"


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections (kernel backlog) but never says a word."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


async def test_a_server_that_never_greets_is_a_timeout(mailbox: Dovecot, silent_port: int) -> None:
    silent = replace(mailbox.settings(USER), port=silent_port, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(MailboxError) as caught:
        await MailboxReader().fetch_new(silent, None)
    assert caught.value.kind == "timeout"
    assert time.monotonic() - started < 3


class ScriptedServer:
    """A real TCP server on loopback that greets, reads one command, then hangs up or goes mute."""

    def __init__(self, greeting: bytes, hang_up: bool) -> None:
        self._greeting = greeting
        self._hang_up = hang_up
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self._sock.settimeout(0.1)
        self.port: int = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(0.1)
                conn.sendall(self._greeting)
                with contextlib.suppress(OSError):
                    conn.recv(1024)
                while not self._hang_up and not self._stop.is_set():
                    with contextlib.suppress(OSError):
                        if not conn.recv(1024):
                            break

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


@pytest.fixture
def scripted() -> Iterator[Callable[[bytes, bool], ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def make(greeting: bytes, hang_up: bool) -> ScriptedServer:
        servers.append(ScriptedServer(greeting, hang_up))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


async def test_a_server_hanging_up_fails_fast(scripted: Callable[[bytes, bool], ScriptedServer]) -> None:
    server = scripted(b"* OK [CAPABILITY IMAP4rev1] ready\r\n", True)
    settings = ImapSettings("127.0.0.1", server.port, USER, PASSWORD, "none", timeout=10)
    started = time.monotonic()
    with pytest.raises(MailboxError) as caught:
        await MailboxReader().fetch_new(settings, None)
    assert caught.value.kind == "connection"
    assert time.monotonic() - started < 3  # not the 10 s timeout


async def test_a_server_that_greets_then_goes_mute_is_a_timeout(
    scripted: Callable[[bytes, bool], ScriptedServer],
) -> None:
    # aioimaplib's own hello wait deadlocks here (its CAPABILITY task holds a lock forever)
    server = scripted(b"* OK ready\r\n", False)
    settings = ImapSettings("127.0.0.1", server.port, USER, PASSWORD, "none", timeout=0.5)
    started = time.monotonic()
    ok, error = await check_login(settings)
    assert not ok and error is not None and error.startswith("timeout:")
    assert time.monotonic() - started < 3


async def test_check_login(mailbox: Dovecot) -> None:
    assert await check_login(mailbox.settings(USER)) == (True, None)

    ok, error = await MailboxReader().check_login(mailbox.settings(USER, password="wrong"))
    assert not ok and error is not None and error.startswith("auth:")

    ok, error = await check_login(mailbox.settings(USER, folder="Missing"))
    assert not ok and error is not None and error.startswith("folder:")

    closed = replace(mailbox.settings(USER), port=free_port(), timeout=2)
    ok, error = await check_login(closed)
    assert not ok and error is not None and error.startswith("connection:")


async def test_starttls_is_never_skipped_when_the_server_lacks_it(mailbox: Dovecot) -> None:
    wants_tls = replace(mailbox.settings(USER), security="starttls", timeout=2)
    with pytest.raises(MailboxError) as caught:
        await MailboxReader().fetch_new(wants_tls, None)
    assert caught.value.kind == "tls"


async def test_a_new_password_is_picked_up(mailbox: Dovecot) -> None:
    mailbox.add_user(USER, "s3cret pasz")  # same size: only the mtime can tell Dovecot
    assert await check_login(mailbox.settings(USER)) == (True, None)
    ok, _error = await check_login(mailbox.settings(USER, password=PASSWORD))
    assert not ok


# -- TLS ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dovecot_tls() -> Iterator[Dovecot]:
    try:
        server = Dovecot(tls=True)
    except DovecotUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    with server:
        server.add_user(USER, PASSWORD)
        server.append(USER, message(1))
        yield server


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_reads_over_tls(dovecot_tls: Dovecot, security: str) -> None:
    settings = dovecot_tls.settings(USER, security=security)  # type: ignore[arg-type]
    got = await MailboxReader().fetch_new(settings, None)
    assert raws(got) == [message(1)]
    assert await check_login(settings) == (True, None)


async def test_starttls_really_encrypts(dovecot_tls: Dovecot) -> None:
    before = dovecot_tls.log().count(", TLS")
    await check_login(dovecot_tls.settings(USER, security="starttls"))
    assert dovecot_tls.log().count(", TLS") > before  # Dovecot logs the login as TLS


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_an_untrusted_certificate_is_a_tls_error(dovecot_tls: Dovecot, security: str) -> None:
    trusted = dovecot_tls.settings(USER, security=security)  # type: ignore[arg-type]
    # the system CAs do not know this server's self-signed certificate
    untrusted = replace(trusted, timeout=2, ssl_context=ssl.create_default_context())
    ok, error = await check_login(untrusted)
    assert not ok and error is not None and error.startswith("tls:")


def test_a_missing_dovecot_binary_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("DOVECOT_BIN", raising=False)
    monkeypatch.setattr(dovecot_module, "DOVECOT_CANDIDATES", (str(tmp_path / "dovecot"),))
    with pytest.raises(DovecotUnavailable, match="apt-get install -y dovecot-imapd"):
        Dovecot()


def test_encode_mailbox_name() -> None:
    assert encode_mailbox_name("INBOX") == "INBOX"
    assert encode_mailbox_name("A&B") == "A&-B"
    # RFC 3501 section 5.1.3's example
    assert encode_mailbox_name("~peter/mail/台北/日本語") == "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
