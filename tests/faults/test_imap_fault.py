"""The IMAP server dropping the connection in the middle of a FETCH: Dovecot's ``imap`` process
serving the poll is killed (SIGKILL) while the reply's FETCH data is on its way.

The engine reaches Dovecot through a small TCP relay of the test's: it passes every byte, and
only lets the test see the moment the FETCH answer starts, hold the rest back and kill the server
process then. The process is really gone; the client gets half a FETCH and a closed connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import CampaignEngine, ManualClock
from tests.conftest import SECRET
from tests.delivery.dovecot import Dovecot, DovecotUnavailable
from tests.faults.helpers import HookedSink, assert_log_sound, log_prefix, start_campaign, tapped_logs

FETCH_DATA = re.compile(rb"\* \d+ FETCH \(")


def imap_processes(dovecot: Dovecot) -> list[int]:
    """The pids of this Dovecot's ``imap`` processes (its process group; other Dovecots may run)."""
    group = dovecot._process.pid if dovecot._process is not None else None  # noqa: SLF001 - the test's own server
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            comm = stat[stat.index("(") + 1:stat.rindex(")")]
            pgrp = int(stat[stat.rindex(")") + 2:].split()[2])
            if comm == "imap" and pgrp == group:
                found.append(int(entry.name))
    return found


class Relay:
    """A TCP relay to Dovecot that, while ``cut_fetch`` is set, kills the serving ``imap`` process as
    soon as a FETCH answer starts and hands the client only the first bytes of it."""

    def __init__(self, dovecot: Dovecot) -> None:
        self.dovecot = dovecot
        self.cut_fetch = False
        self.killed: list[int] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        server_in, server_out = await asyncio.open_connection(self.dovecot.host, self.dovecot.port)
        upstream = asyncio.create_task(self._pipe(client_in, server_out))
        try:
            while data := await server_in.read(65536):
                match = FETCH_DATA.search(data) if self.cut_fetch else None
                if match is None:
                    client_out.write(data)
                    await client_out.drain()
                    continue
                self.cut_fetch = False
                client_out.write(data[:match.end() + 20])  # the FETCH has begun for the client
                await client_out.drain()
                for pid in imap_processes(self.dovecot):
                    os.kill(pid, signal.SIGKILL)
                    self.killed.append(pid)
                # the server side goes away with its process; wait for that, then hang up
                await asyncio.wait_for(self._drain_until_eof(server_in), 10)
                break
        finally:
            upstream.cancel()
            with contextlib.suppress(BaseException):
                await upstream
            client_out.close()
            server_out.close()

    @staticmethod
    async def _drain_until_eof(reader: asyncio.StreamReader) -> None:
        while await reader.read(65536):
            pass

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    try:
        server = Dovecot()
    except DovecotUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    with server:
        server.add_user("rep", "imap-pass")
        yield server


def reply(to_message_id: str, sender: str) -> bytes:
    return (f"From: {sender}\r\nTo: rep@sales.io\r\nSubject: Re: Step 1\r\nMessage-ID: <re.{sender}>\r\n"
            f"In-Reply-To: {to_message_id}\r\nReferences: {to_message_id}\r\nContent-Type: text/plain\r\n\r\n"
            "Interested, call me.\r\n").encode()


async def test_connection_dropped_mid_fetch(dovecot: Dovecot, clock: ManualClock, tmp_path: Path) -> None:
    """Given two replies waiting in the mailbox, when the IMAP process dies in the middle of the
    FETCH, then the poll records nothing (the checkpoint stays) and logs the dropped connection;
    the next poll reads both replies, once, and a third finds nothing new."""
    relay = Relay(dovecot)
    await relay.start()
    try:
        with HookedSink() as sink, tapped_logs() as logs:
            async with CampaignEngine(f"sqlite+aiosqlite:///{tmp_path}/engine.db", clock=clock, secret_key=SECRET,
                                      imap_timeout=10) as engine:
                setup = await start_campaign(engine, sink, ["ann@corp.io", "bob@corp.io"], steps=2, imap={
                    "host": "127.0.0.1", "port": relay.port, "username": "rep", "password": "imap-pass",
                    "security": "none"})
                while (await engine.tick()).sent:
                    pass
                assert len(sink.messages) == 2
                for message in sink.messages:
                    dovecot.append("rep", reply(str(message.message_id), message.rcpt_tos[0]))
                acknowledged = await log_prefix(engine)

                relay.cut_fetch = True
                failed = await engine.poll_mailboxes()
                assert relay.killed, "the FETCH never started: no fault was injected"
                assert (failed.messages, failed.replies) == (0, 0)
                assert "connection" in failed.errors[setup.sender_id]
                dropped = logs.named("imap_failed")
                assert dropped and dropped[0]["kind"] == "connection" and dropped[0]["port"] == relay.port
                assert "imap-pass" not in repr(logs.entries)
                appended = (await log_prefix(engine))[len(acknowledged):]
                # one dropped connection is a passing fault: nothing appended, the sender keeps sending
                assert [kind for _position, kind, _hash in appended] == []
                sender = await engine.get_sender(setup.workspace_id, setup.sender_id)
                assert sender["status"] == "active"

                again = await engine.poll_mailboxes()  # the fault is over: Dovecot forks a new imap
                assert (again.messages, again.replies, again.errors) == (2, 2, {})
                assert (await engine.poll_mailboxes()).messages == 0
                counts = await assert_log_sound(engine, sink, acknowledged)
                assert counts["email.replied"] == 2
                statuses = {e["contact_id"]: e["status"]
                            for e in (await engine.list_enrollments(setup.workspace_id, setup.campaign_id))["data"]}
                assert set(statuses.values()) == {"replied"}
    finally:
        await relay.close()
