"""Webhook destinations: the address classifier, creation-time URL checks, and resolve() for real.

resolve() runs on IP literals (no DNS) and on ``localhost`` (the system resolver, /etc/hosts). The
pinned-connection test talks TLS to a real server on loopback whose certificate names only
``localhost``: it proves that the request goes to the vetted address while SNI and certificate
verification use the name.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from engine.delivery.lookups.destinations import (
    DestinationRefused,
    Verdict,
    allows_private,
    classify,
    literal,
    normalise,
    refusal,
    resolve,
    url_problem,
)
from tests.delivery.smtp_server import make_self_signed_cert

ALWAYS = [
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "unspecified"),
    ("::", "unspecified"),
    ("169.254.169.254", "link-local (cloud metadata)"),
    ("169.254.0.1", "link-local (cloud metadata)"),
    ("fe80::1", "link-local (cloud metadata)"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("ff02::1", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.254", "reserved"),
    ("255.255.255.255", "broadcast"),
    ("100::1", "reserved"),  # IPv6 discard-only
]
PRIVATE = [
    ("127.0.0.1", "loopback"),
    ("127.255.0.9", "loopback"),
    ("::1", "loopback"),
    ("10.1.2.3", "private (RFC 1918)"),
    ("172.16.0.1", "private (RFC 1918)"),
    ("172.31.255.255", "private (RFC 1918)"),
    ("192.168.1.1", "private (RFC 1918)"),
    ("100.64.0.1", "shared address space (CGNAT; Alibaba Cloud metadata)"),
    ("100.100.100.200", "shared address space (CGNAT; Alibaba Cloud metadata)"),
    ("100.127.255.255", "shared address space (CGNAT; Alibaba Cloud metadata)"),
    ("fd00:ec2::254", "unique-local (AWS IPv6 metadata)"),
    ("fc00::1", "unique-local (AWS IPv6 metadata)"),
    ("fec0::1", "site-local"),
    ("192.0.2.1", "private"),  # documentation: ipaddress calls it private
    ("198.18.0.1", "private"),  # benchmarking
    ("2001:db8::1", "private"),
]
PUBLIC = ["93.184.216.34", "8.8.8.8", "172.32.0.1", "100.128.0.1", "169.255.0.1", "2606:4700::1111",
          "2a00:1450:4001:80b::200e"]


@pytest.mark.parametrize(("text", "reason"), ALWAYS)
def test_always_refused_whatever_the_option(text: str, reason: str) -> None:
    a = ipaddress.ip_address(text)
    assert classify(a) == Verdict(reason, True)
    assert refusal(a, allow_private=True) == reason
    assert refusal(a, allow_private=False) == reason


@pytest.mark.parametrize(("text", "reason"), PRIVATE)
def test_private_refused_only_when_the_option_is_off(text: str, reason: str) -> None:
    a = ipaddress.ip_address(text)
    assert classify(a) == Verdict(reason, False)
    assert refusal(a, allow_private=True) is None
    refused = refusal(a, allow_private=False)
    assert refused is not None and refused.startswith(reason) and "webhook_allow_private_addresses" in refused


@pytest.mark.parametrize("text", PUBLIC)
def test_public_addresses_are_allowed(text: str) -> None:
    a = ipaddress.ip_address(text)
    assert classify(a) is None
    assert refusal(a, allow_private=False) is None


@pytest.mark.parametrize(("text", "carried"), [
    ("::ffff:169.254.169.254", "169.254.169.254"),  # IPv4-mapped
    ("::ffff:a9fe:a9fe", "169.254.169.254"),
    ("::169.254.169.254", "169.254.169.254"),  # IPv4-compatible (deprecated)
    ("64:ff9b::169.254.169.254", "169.254.169.254"),  # NAT64 well-known prefix
    ("2002:a9fe:a9fe::1", "169.254.169.254"),  # 6to4
    ("::ffff:127.0.0.1", "127.0.0.1"),
    ("::ffff:10.0.0.1", "10.0.0.1"),
    ("64:ff9b::93.184.216.34", "93.184.216.34"),
])
def test_ipv6_forms_carrying_ipv4_are_judged_by_the_ipv4_address(text: str, carried: str) -> None:
    a = ipaddress.ip_address(text)
    assert normalise(a) == ipaddress.IPv4Address(carried)
    assert classify(a) == classify(ipaddress.IPv4Address(carried))
    assert normalise(ipaddress.ip_address("::1")) == ipaddress.ip_address("::1")  # loopback, not 0.0.0.1
    assert normalise(ipaddress.ip_address("2606:4700::1111")) == ipaddress.ip_address("2606:4700::1111")


def test_mapped_metadata_and_loopback_are_refused() -> None:
    assert refusal(ipaddress.ip_address("::ffff:169.254.169.254"), True) == "link-local (cloud metadata)"
    assert refusal(ipaddress.ip_address("::ffff:127.0.0.1"), True) is None
    assert refusal(ipaddress.ip_address("::ffff:127.0.0.1"), False) is not None
    assert refusal(ipaddress.ip_address("64:ff9b::93.184.216.34"), False) is None  # an IPv6-only host's DNS64


@pytest.mark.parametrize(("host", "address"), [
    ("169.254.169.254", "169.254.169.254"), ("::1", "::1"), ("2130706433", "127.0.0.1"),
    ("0x7f.1", "127.0.0.1"), ("127.1", "127.0.0.1"), ("0251.0376.0251.0376", "169.254.169.254"),
    ("hooks.example.com", None), ("localhost", None), ("deadbeef.cafe", None),
])
def test_ip_literals_include_legacy_ipv4_spellings(host: str, address: str | None) -> None:
    assert literal(host) == (ipaddress.ip_address(address) if address else None)


def test_url_problem_judges_ip_literals_only() -> None:
    assert url_problem("http://169.254.169.254/latest/meta-data", True) == (
        "webhooks may not call 169.254.169.254: link-local (cloud metadata)")
    assert url_problem("http://[::ffff:169.254.169.254]/", True) == (
        "webhooks may not call ::ffff:a9fe:a9fe (169.254.169.254): link-local (cloud metadata)")
    assert url_problem("http://2852039166/", True) is not None  # 169.254.169.254 as one number
    assert url_problem("http://127.0.0.1:8080/hook", True) is None
    problem = url_problem("http://127.0.0.1:8080/hook", False)
    assert problem is not None and problem.startswith("webhooks may not call 127.0.0.1: loopback")
    assert url_problem("http://[fd00:ec2::254]/", False) is not None
    assert url_problem("http://localhost:8080/hook", False) is None  # names: checked at delivery
    assert url_problem("https://hooks.example.com/x", False) is None
    assert url_problem("https://93.184.216.34/x", False) is None
    assert url_problem("http://[::1/", True) is not None  # httpx cannot read it: it could never be sent
    assert url_problem("http://:80/", True) == "URL has no host"


def test_the_option_defaults_to_allowing_private_addresses() -> None:
    assert allows_private({}) is True
    assert allows_private({"webhook_allow_private_addresses": False}) is False


async def test_resolve_ip_literals_without_dns() -> None:
    d = await resolve("https://93.184.216.34/x?y=1", allow_private=False)
    assert (d.host, d.port, d.address) == ("93.184.216.34", 443, ipaddress.ip_address("93.184.216.34"))
    d = await resolve("http://[2606:4700::1111]:8080/x", allow_private=False)
    assert (d.host, d.port, str(d.address)) == ("2606:4700::1111", 8080, "2606:4700::1111")
    assert d.host_header == "[2606:4700::1111]:8080" and d.extensions == {}
    assert str(d.target()) == "http://[2606:4700::1111]:8080/x"
    d = await resolve("http://127.0.0.1:9/h", allow_private=True)
    assert str(d.address) == "127.0.0.1" and d.host_header == "127.0.0.1:9"
    with pytest.raises(DestinationRefused, match=r"127\.0\.0\.1: loopback"):
        await resolve("http://127.0.0.1:9/h", allow_private=False)
    with pytest.raises(DestinationRefused, match=r"169\.254\.169\.254: link-local \(cloud metadata\)"):
        await resolve("http://169.254.169.254/latest/meta-data", allow_private=True)
    with pytest.raises(DestinationRefused, match=r"^::ffff:a9fe:a9fe \(169\.254\.169\.254\): link-local"):
        await resolve("http://[::ffff:169.254.169.254]/", allow_private=True)
    with pytest.raises(DestinationRefused, match="invalid port"):
        await resolve("http://93.184.216.34:99999/", allow_private=True)


async def test_resolve_localhost_through_the_system_resolver() -> None:
    d = await resolve("https://localhost:8443/hook", allow_private=True)
    assert d.host == "localhost" and d.port == 8443 and d.address.is_loopback
    assert d.host_header == "localhost:8443" and d.extensions == {"sni_hostname": "localhost"}
    assert d.target().host == str(d.address) and d.target().path == "/hook"
    with pytest.raises(DestinationRefused, match=r"^localhost resolves to .*: loopback, and private"):
        await resolve("http://localhost/hook", allow_private=False)


class TlsReceiver:
    """An HTTPS endpoint on 127.0.0.1 that records the SNI name and the Host header of each request."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(str(cert), str(key))
        self.context.sni_callback = lambda sock, name, ctx: self.sni.append(name)  # type: ignore[assignment]
        self.sni: list[str | None] = []
        self.hosts: list[str] = []

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in head[1:] if line)}
            await reader.readexactly(int(headers.get("content-length", "0")))
            self.hosts.append(headers["host"])
            writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def tls_receiver(tmp_path: Path) -> AsyncIterator[tuple[TlsReceiver, int, ssl.SSLContext]]:
    cert, key = make_self_signed_cert(tmp_path, "localhost", with_ip=False)  # the name only: no 127.0.0.1
    receiver = TlsReceiver(cert, key)
    server = await asyncio.start_server(receiver._client, "127.0.0.1", 0, ssl=receiver.context)
    trust = ssl.create_default_context(cafile=str(cert))
    try:
        yield receiver, server.sockets[0].getsockname()[1], trust
    finally:
        server.close()
        await server.wait_closed()


async def test_pinned_https_request_verifies_the_name_not_the_address(
        tls_receiver: tuple[TlsReceiver, int, ssl.SSLContext]) -> None:
    receiver, port, trust = tls_receiver
    d = await resolve(f"https://localhost:{port}/hook", allow_private=True)
    assert d.target().host == "127.0.0.1"
    async with httpx.AsyncClient(verify=trust, trust_env=False) as client:
        r = await client.post(d.target(), content=b"{}", headers={"Host": d.host_header}, extensions=d.extensions)
        assert r.status_code == 204
        assert receiver.sni == ["localhost"] and receiver.hosts == [f"localhost:{port}"]
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):  # the address alone: no
            await client.post(d.target(), content=b"{}", headers={"Host": d.host_header})


async def test_every_vetted_address_is_kept_in_order_for_fallback() -> None:
    """A name with several addresses: the delivery tries them in the resolver's order when one
    refuses connections (nothing was sent to it), each pinned like the first."""
    d = await resolve("https://localhost:8443/hook", allow_private=True)
    each = d.each()
    assert each[0] == d and [x.address for x in each] == [d.address, *d.others]
    assert len({x.address for x in each}) == len(each)  # no address twice
    assert all(x.host_header == "localhost:8443" and x.extensions == {"sni_hostname": "localhost"}
               and x.target().host == str(x.address) for x in each)
