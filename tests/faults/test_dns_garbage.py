"""The DNS server answering garbage to the MX checks made before a first step is claimed.

A loopback server of the test's answers every query with one kind of garbage, and, once the
fault is over, with the real answers (``tests.delivery.dns_server`` builds them):

- ``noise``: bytes that are not DNS at all;
- ``truncated``: a header that matches the query, flags the answer as cut short (TC), and the
  resolver's retry over TCP gets a length-prefixed message that is not DNS either;
- ``broken``: the query's own header and question, claiming an answer whose record is cut off.

Garbage must never pass for an answer: no domain is judged invalid on it (an enrollment skipped
as ``mx_invalid`` would be lost for good), the email waits for the checker's retry, and the log
says why.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Literal, cast

import pytest

from engine import CampaignEngine, ManualClock
from tests.conftest import SECRET
from tests.delivery.dns_server import DnsServer
from tests.faults.helpers import HookedSink, assert_log_sound, log_prefix, start_campaign, tapped_logs

Mode = Literal["noise", "truncated", "broken", "answer"]
NOISE = bytes(range(7, 250, 3)) * 3
MX_DOMAIN = "corp.io"
RECORDS = {MX_DOMAIN: {"MX": ["10 mx.corp.io."]}, "mx.corp.io": {"A": ["192.0.2.10"]}}


class GarbageDns:
    """UDP and TCP on one loopback port; ``mode`` says what every query gets (see the module)."""

    def __init__(self) -> None:
        self.mode: Mode = "noise"
        self.zone = DnsServer(RECORDS)  # only its respond(): the real answers, once allowed
        self.queries = 0
        self.tcp_queries = 0
        outer = self

        class Udp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = cast(tuple[bytes, socket.socket], self.request)
                sock.sendto(outer.udp_answer(data), self.client_address)

        class Tcp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                sock = cast(socket.socket, self.request)
                sock.settimeout(5)
                with contextlib.suppress(OSError):
                    size = struct.unpack("!H", sock.recv(2))[0]
                    query = b""
                    while len(query) < size:
                        query += sock.recv(size - len(query))
                    answer = outer.tcp_answer(query)
                    sock.sendall(struct.pack("!H", len(answer)) + answer)

        self.udp = socketserver.ThreadingUDPServer(("127.0.0.1", 0), Udp)
        self.udp.daemon_threads = True
        port = self.udp.server_address[1]
        self.tcp = socketserver.ThreadingTCPServer(("127.0.0.1", port), Tcp)
        self.tcp.daemon_threads = True
        self.address = f"127.0.0.1:{port}"
        self.threads = [threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
                        for server in (self.udp, self.tcp)]

    def udp_answer(self, query: bytes) -> bytes:
        self.queries += 1
        if self.mode == "answer":
            response = self.zone.respond(query)
            return response.to_wire() if response is not None else b""
        if self.mode == "noise":
            return NOISE
        question = query[12:12 + query[12:].index(b"\x00") + 5]  # name, type, class
        if self.mode == "truncated":  # the query's id and question, QR + TC: "ask again over TCP"
            return query[:2] + b"\x83\x00" + b"\x00\x01\x00\x00\x00\x00\x00\x00" + question
        # "broken": the query's header with QR and ANCOUNT=1, its question, then a record cut short
        return query[:2] + b"\x81\x80" + b"\x00\x01\x00\x01\x00\x00\x00\x00" + question + b"\xc0\x0c\x00"

    def tcp_answer(self, query: bytes) -> bytes:
        self.tcp_queries += 1
        if self.mode == "answer":
            response = self.zone.respond(query)
            return response.to_wire() if response is not None else b""
        return query[:2] + NOISE

    def __enter__(self) -> GarbageDns:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        for server in (self.udp, self.tcp):
            server.shutdown()
            server.server_close()


@pytest.fixture
def garbage_dns() -> Iterator[GarbageDns]:
    with GarbageDns() as server:
        yield server


@pytest.mark.parametrize("mode", ["noise", "truncated", "broken"])
async def test_garbage_answers_to_mx_checks(mode: Mode, garbage_dns: GarbageDns, clock: ManualClock,
                                            tmp_path: Path) -> None:
    """Given a campaign that checks MX before the first step, when the DNS server answers garbage,
    then the tick claims nothing, skips nobody, logs the failed lookup and names the retry time;
    when the server answers properly again, the tick at that time sends each email once."""
    garbage_dns.mode = mode
    with HookedSink() as sink, tapped_logs() as logs:
        async with CampaignEngine(f"sqlite+aiosqlite:///{tmp_path}/engine.db", clock=clock, secret_key=SECRET,
                                  dns_nameservers=[garbage_dns.address], dns_timeout=0.5) as engine:
            await start_campaign(engine, sink, [f"ann@{MX_DOMAIN}", f"bob@{MX_DOMAIN}"],
                                 settings={"verify_mx": True})
            acknowledged = await log_prefix(engine)

            held = await engine.tick()
            assert garbage_dns.queries, "the checker never asked the server"
            assert (held.claimed, held.sent, held.skipped) == (0, 0, 0)
            assert sink.messages == [] and await log_prefix(engine) == acknowledged
            failed = logs.named("mx_lookup_failed")
            assert failed and failed[0]["domain"] == MX_DOMAIN
            assert failed[0]["reason"] in ("timeout", "server_failure")
            if mode == "truncated":
                assert garbage_dns.tcp_queries, "the resolver never went on to TCP"
            assert held.next_due_at is not None and held.next_due_at > clock.now()

            garbage_dns.mode = "answer"  # the fault is over
            clock.set(held.next_due_at)
            sent = 0
            while report := await engine.tick():
                sent += report.sent
                if not report.sent:
                    break
            assert sent == 2
            counts = await assert_log_sound(engine, sink, acknowledged)
            assert counts["email.sent"] == 2 and not counts["enrollment.skipped"] and not counts["email.cancelled"]
