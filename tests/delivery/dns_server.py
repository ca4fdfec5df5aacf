"""A real, tiny authoritative DNS server on loopback, for MX checks in tests.

It answers real DNS packets over UDP and TCP (same port), parsed and built with dnspython's
``dns.message`` and served from a ``dns.zone.Zone`` built from a plain dict, so the resolver
under test goes through its whole network path: no mocks. Names can also be told to answer
SERVFAIL or to never answer at all, which is how the tests reach the "unknown" verdicts.

It runs in daemon threads rather than on the test's event loop so that one server works for
async and sync tests alike, and for fixtures of any scope.

Usage::

    with DnsServer(DEFAULT_RECORDS, servfail=[SERVFAIL], silent=[SILENT]) as server:
        checker = MxChecker(nameservers=server.nameservers, timeout=0.5)
"""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Literal, cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone

# name -> {record type -> [rdata in zone-file text form]}
Records = Mapping[str, Mapping[str, Sequence[str]]]
Behaviour = Literal["servfail", "silent"]

# The default zone: one name per rule of the MX check. ``.test`` is reserved (RFC 2606).
MX_DOMAIN = "has-mx.test"  # two MX hosts
NULL_MX = "null-mx.test"  # RFC 7505 null MX
A_ONLY = "a-only.test"  # no MX, an A record: valid by the address fallback
AAAA_ONLY = "aaaa-only.test"  # no MX, an AAAA record
NO_MAIL = "no-mail.test"  # exists (TXT only) but has neither MX nor A/AAAA
CNAME_TO_MX = "alias.test"  # a CNAME to MX_DOMAIN
NXDOMAIN = "missing.test"  # not in the zone at all
SERVFAIL = "servfail.test"  # answers SERVFAIL to everything
SILENT = "silent.test"  # never answers: the resolver times out

DEFAULT_RECORDS: dict[str, dict[str, list[str]]] = {
    MX_DOMAIN: {"MX": ["20 mx2.has-mx.test.", "10 mx1.has-mx.test."]},
    "mx1.has-mx.test": {"A": ["192.0.2.10"]},
    "mx2.has-mx.test": {"A": ["192.0.2.11"]},
    NULL_MX: {"MX": ["0 ."]},
    A_ONLY: {"A": ["192.0.2.20"]},
    AAAA_ONLY: {"AAAA": ["2001:db8::20"]},
    NO_MAIL: {"TXT": ['"v=spf1 -all"']},
    CNAME_TO_MX: {"CNAME": [f"{MX_DOMAIN}."]},
}
DEFAULT_SERVFAIL = (SERVFAIL,)
DEFAULT_SILENT = (SILENT,)


def _key(name: str | dns.name.Name) -> str:
    text = name.to_text() if isinstance(name, dns.name.Name) else name
    return text.strip().rstrip(".").lower()


def build_zone(records: Records, ttl: int = 300, ttls: Mapping[str, int] | None = None) -> dns.zone.Zone:
    """Parse the dict into a zone rooted at ``.``, so any name (``example.com``) may be served.

    Every record gets ``ttl`` seconds unless ``ttls`` names its owner with a TTL of its own.
    """
    ttls = ttls or {}
    lines = [
        f"{_key(name)}. {ttls.get(_key(name), ttl)} IN {rdtype.upper()} {rdata}"
        for name, by_type in records.items()
        for rdtype, values in by_type.items()
        for rdata in values
    ]
    return dns.zone.from_text("\n".join(lines) + "\n", origin=dns.name.root, relativize=False, check_origin=False)


class DnsServer:
    """An authoritative server for the names in ``records`` on ``host``, UDP and TCP, one port.

    Unknown names get NXDOMAIN; names in ``servfail`` get SERVFAIL; names in ``silent`` get no
    answer at all. Every query is recorded in ``queries`` as ``(name, type)`` so tests can prove
    that a cached verdict did not touch the network. Records and behaviours may be changed while
    the server runs.

    Records live ``ttl`` seconds unless ``set_records(..., ttl=)`` gives a name its own, so tests
    can check that a cache follows the answer's TTL. Negative answers (NXDOMAIN, no data) carry no
    SOA unless ``negative_ttl`` (or ``set_negative_ttl``) asks for one: then the authority section
    holds the TLD's SOA with that TTL and MINIMUM, as RFC 2308 negative caching reads it.
    """

    def __init__(
        self,
        records: Records | None = None,
        *,
        servfail: Iterable[str] = (),
        silent: Iterable[str] = (),
        host: str = "127.0.0.1",
        ttl: int = 300,
        negative_ttl: int | None = None,
    ) -> None:
        self.host = host
        self._ttl = ttl
        self._ttls: dict[str, int] = {}
        self._soa: tuple[int, int] | None = None if negative_ttl is None else (negative_ttl, negative_ttl)
        self._lock = threading.Lock()
        self._records: dict[str, dict[str, list[str]]] = {}
        for name, by_type in (records or {}).items():
            self._records[_key(name)] = {t.upper(): list(v) for t, v in by_type.items()}
        self._zone = build_zone(self._records, ttl)
        self._behaviour: dict[str, Behaviour] = {_key(n): "servfail" for n in servfail}
        self._behaviour.update({_key(n): "silent" for n in silent})
        self._queries: list[tuple[str, str]] = []
        self._stopping = threading.Event()
        self._udp: _UdpServer | None = None
        self._tcp: _TcpServer | None = None
        self._threads: list[threading.Thread] = []

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> DnsServer:
        """Bind a free port (the same number for UDP and TCP) and serve in daemon threads."""
        if self._udp is not None:
            raise RuntimeError("DnsServer already started")
        last_error: OSError | None = None
        for _ in range(20):
            udp = _UdpServer((self.host, 0), _UdpHandler, self)
            port = udp.server_address[1]
            try:
                tcp = _TcpServer((self.host, port), _TcpHandler, self)
            except OSError as exc:  # the TCP port of that number is taken: try another
                udp.server_close()
                last_error = exc
                continue
            self._udp, self._tcp = udp, tcp
            break
        else:
            raise RuntimeError(f"no free UDP+TCP port on {self.host}: {last_error}")
        for server in (self._udp, self._tcp):
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop serving and close both sockets; idempotent."""
        self._stopping.set()
        for server in (self._udp, self._tcp):
            if server is not None:
                server.shutdown()
                server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()
        self._udp = self._tcp = None

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._udp is None:
            raise RuntimeError("DnsServer not started")
        return int(self._udp.server_address[1])

    @property
    def address(self) -> str:
        """``"127.0.0.1:PORT"``: the form ``MxChecker`` and ``dns_nameservers`` take."""
        return f"{self.host}:{self.port}"

    @property
    def nameservers(self) -> list[str]:
        return [self.address]

    # -- changing the zone -----------------------------------------------------------------

    def set_records(self, name: str, records: Mapping[str, Sequence[str]], *, ttl: int | None = None) -> None:
        """Replace every record of ``name`` (an empty mapping keeps the name, with no data).

        ``ttl`` gives the name's records a TTL of their own; ``None`` uses the server's.
        """
        with self._lock:
            key = _key(name)
            self._records[key] = {t.upper(): list(v) for t, v in records.items()}
            if ttl is None:
                self._ttls.pop(key, None)
            else:
                self._ttls[key] = ttl
            self._zone = build_zone(self._records, self._ttl, self._ttls)

    def remove(self, name: str) -> None:
        """Delete ``name`` so that it answers NXDOMAIN."""
        with self._lock:
            self._records.pop(_key(name), None)
            self._ttls.pop(_key(name), None)
            self._zone = build_zone(self._records, self._ttl, self._ttls)

    def set_negative_ttl(self, minimum: int | None, *, soa_ttl: int | None = None) -> None:
        """Put an SOA with this MINIMUM (and record TTL, ``soa_ttl`` or the same) in every negative
        answer; ``None`` sends negative answers without an SOA again."""
        with self._lock:
            self._soa = None if minimum is None else (minimum if soa_ttl is None else soa_ttl, minimum)

    def set_behaviour(self, name: str, behaviour: Behaviour | None) -> None:
        """Make ``name`` answer SERVFAIL, never answer, or (``None``) answer from the zone."""
        with self._lock:
            if behaviour is None:
                self._behaviour.pop(_key(name), None)
            else:
                self._behaviour[_key(name)] = behaviour

    # -- what was asked --------------------------------------------------------------------

    @property
    def queries(self) -> list[tuple[str, str]]:
        """Every question received so far, as ``(name, type)``, oldest first."""
        with self._lock:
            return list(self._queries)

    def count(self, name: str, rdtype: str | None = None) -> int:
        """How many questions about ``name`` (of ``rdtype`` if given) were received."""
        key = _key(name)
        return sum(1 for n, t in self.queries if n == key and (rdtype is None or t == rdtype))

    def clear_queries(self) -> None:
        with self._lock:
            self._queries.clear()

    # -- answering -------------------------------------------------------------------------

    def respond(self, wire: bytes) -> dns.message.Message | None:
        """The response to one query in wire form, or ``None`` to stay silent."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None  # not DNS: a real server would drop it too
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response
        question = query.question[0]
        qname, qtype = question.name, question.rdtype
        with self._lock:
            self._queries.append((_key(qname), dns.rdatatype.to_text(qtype)))
            behaviour = self._behaviour.get(_key(qname))
            zone = self._zone
            soa = self._soa
        if behaviour == "silent":
            return None
        if behaviour == "servfail":
            response.set_rcode(dns.rcode.SERVFAIL)
            return response
        if question.rdclass != dns.rdataclass.IN:
            response.set_rcode(dns.rcode.REFUSED)
            return response
        _answer_from_zone(zone, qname, qtype, response)
        negative = response.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN) and not any(
            rrset.rdtype == qtype for rrset in response.answer
        )
        if negative and soa is not None:
            soa_ttl, minimum = soa
            apex = dns.name.Name(qname.labels[-2:])  # the TLD: an owner above every name asked
            mname, rname = (dns.name.Name((label, *apex.labels)) for label in (b"ns", b"hostmaster"))
            rdata = f"{mname} {rname} 1 3600 600 86400 {minimum}"
            response.authority.append(dns.rrset.from_text(apex, soa_ttl, "IN", "SOA", rdata))
        return response


def _answer_from_zone(
    zone: dns.zone.Zone,
    qname: dns.name.Name,
    qtype: dns.rdatatype.RdataType,
    response: dns.message.Message,
) -> None:
    """Fill ``response`` like an authoritative server: data, CNAME chain, NODATA or NXDOMAIN."""
    name = qname
    for _ in range(8):  # CNAME chains longer than this are a loop
        node = zone.get_node(name)
        if node is None:
            # A name with no records but with names below it is an "empty non-terminal": it
            # exists (NOERROR, no data), unlike a name with nothing at or below it (NXDOMAIN).
            if not any(other.is_subdomain(name) for other in zone.nodes):
                response.set_rcode(dns.rcode.NXDOMAIN)
            return
        rdataset = node.get_rdataset(dns.rdataclass.IN, qtype)
        if rdataset is not None:
            response.answer.append(dns.rrset.from_rdata_list(name, rdataset.ttl, list(rdataset)))
            return
        cname = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.CNAME)
        if cname is None or qtype == dns.rdatatype.CNAME:
            return  # NODATA
        response.answer.append(dns.rrset.from_rdata_list(name, cname.ttl, list(cname)))
        name = cname[0].target
    response.set_rcode(dns.rcode.SERVFAIL)


class _UdpServer(socketserver.UDPServer):
    def __init__(
        self,
        address: tuple[str, int],
        handler: type[socketserver.BaseRequestHandler],
        dns_server: DnsServer,
    ) -> None:
        self.dns_server = dns_server
        super().__init__(address, handler)


class _TcpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[socketserver.BaseRequestHandler],
        dns_server: DnsServer,
    ) -> None:
        self.dns_server = dns_server
        super().__init__(address, handler)


class _UdpHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = cast(tuple[bytes, socket.socket], self.request)
        server = cast(_UdpServer, self.server).dns_server
        response = server.respond(data)
        if response is None:
            return
        try:
            wire = response.to_wire(max_size=max(512, response.payload))
        except dns.exception.TooBig:
            # too big for UDP: answer truncated so the resolver retries over TCP
            response.answer.clear()
            response.flags |= dns.flags.TC
            wire = response.to_wire()
        sock.sendto(wire, self.client_address)


class _TcpHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock = cast(socket.socket, self.request)
        dns_server = cast(_TcpServer, self.server).dns_server
        sock.settimeout(10)
        try:
            while True:
                header = _recv_exact(sock, 2)
                if header is None:
                    return
                (length,) = struct.unpack("!H", header)
                wire = _recv_exact(sock, length)
                if wire is None:
                    return
                response = dns_server.respond(wire)
                if response is None:
                    dns_server._stopping.wait(10)  # hold the connection open, say nothing
                    return
                out = response.to_wire()
                sock.sendall(struct.pack("!H", len(out)) + out)
        except OSError:
            return


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            return None
        chunks.extend(chunk)
    return bytes(chunks)
