"""MX checks against a real DNS server on loopback: every rule, the "unknown" cases and the cache."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from engine.clock import ManualClock
from engine.delivery.mx import MxChecker, normalise_domain, parse_nameserver
from tests.delivery.dns_server import (
    A_ONLY,
    AAAA_ONLY,
    CNAME_TO_MX,
    MX_DOMAIN,
    NO_MAIL,
    NULL_MX,
    NXDOMAIN,
    SERVFAIL,
    SILENT,
    DnsServer,
)

START = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


def checker(
    server: DnsServer,
    *,
    timeout: float = 0.5,
    cache_ttl: float = 3600,
    clock: Callable[[], datetime] | None = None,
) -> MxChecker:
    return MxChecker(server.nameservers, timeout=timeout, cache_ttl=cache_ttl, clock=clock)


@pytest.mark.parametrize(
    ("domain", "status", "reason", "hosts"),
    [
        (MX_DOMAIN, "valid", "mx", ("mx1.has-mx.test", "mx2.has-mx.test")),
        (CNAME_TO_MX, "valid", "mx", ("mx1.has-mx.test", "mx2.has-mx.test")),
        (A_ONLY, "valid", "address_fallback", (A_ONLY,)),
        (AAAA_ONLY, "valid", "address_fallback", (AAAA_ONLY,)),
        (NULL_MX, "invalid", "null_mx", ()),
        (NO_MAIL, "invalid", "no_mail_host", ()),
        (NXDOMAIN, "invalid", "nxdomain", ()),
        (SERVFAIL, "unknown", "server_failure", ()),
    ],
)
async def test_each_rule(dns_server: DnsServer, domain: str, status: str, reason: str, hosts: tuple[str, ...]) -> None:
    result = await checker(dns_server).check(domain)
    assert (result.domain, result.status, result.reason, result.hosts) == (domain, status, reason, hosts)


async def test_hosts_are_ordered_by_preference(dns_server: DnsServer) -> None:
    # the zone lists the preference-20 host first on purpose
    result = await checker(dns_server).check(MX_DOMAIN)
    assert result.hosts[0] == "mx1.has-mx.test"


async def test_a_timeout_is_unknown_never_invalid(dns_server: DnsServer) -> None:
    started = time.monotonic()
    result = await checker(dns_server, timeout=0.3).check(SILENT)
    assert (result.status, result.reason) == ("unknown", "timeout")
    assert time.monotonic() - started < 2.0
    assert dns_server.count(SILENT, "MX") >= 1  # it was really asked, and never answered


async def test_an_unreachable_nameserver_is_unknown() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # nothing listens there any more: the resolver gets "port unreachable" or no answer at all
    result = await MxChecker(nameservers=[f"127.0.0.1:{port}"], timeout=0.5).check(MX_DOMAIN)
    assert result.status == "unknown"


async def test_a_null_mx_beside_a_real_mx_is_ignored(dns_server: DnsServer) -> None:
    dns_server.set_records("mixed.test", {"MX": ["0 .", "10 mx1.has-mx.test."]})
    result = await checker(dns_server).check("mixed.test")
    assert (result.status, result.hosts) == ("valid", ("mx1.has-mx.test",))


async def test_domain_is_normalised(dns_server: DnsServer) -> None:
    result = await checker(dns_server).check(" Has-MX.Test. ")
    assert (result.domain, result.status) == (MX_DOMAIN, "valid")


@pytest.mark.parametrize("domain", ["", "a..b", "x" * 64 + ".test"])
async def test_malformed_domains_are_invalid_without_a_query(dns_server: DnsServer, domain: str) -> None:
    result = await checker(dns_server).check(domain)
    assert (result.status, result.reason) == ("invalid", "malformed_domain")
    assert dns_server.queries == []


async def test_valid_and_invalid_verdicts_are_cached(dns_server: DnsServer) -> None:
    mx = checker(dns_server)
    for domain in (MX_DOMAIN, NXDOMAIN, NO_MAIL):
        first = await mx.check(domain)
        asked = dns_server.count(domain)
        assert await mx.check(domain) == first
        assert dns_server.count(domain) == asked  # answered from the cache


async def test_unknown_is_not_cached(dns_server: DnsServer) -> None:
    mx = checker(dns_server)
    assert (await mx.check(SERVFAIL)).status == "unknown"
    dns_server.set_behaviour(SERVFAIL, None)
    dns_server.set_records(SERVFAIL, {"MX": ["10 mx1.has-mx.test."]})
    assert (await mx.check(SERVFAIL)).status == "valid"  # asked again, now answered


async def test_cache_expires_by_the_injected_clock(dns_server: DnsServer) -> None:
    clock = ManualClock(START)
    mx = checker(dns_server, cache_ttl=600, clock=clock.now)
    assert (await mx.check(MX_DOMAIN)).status == "valid"
    dns_server.set_records(MX_DOMAIN, {"MX": ["0 ."]})  # the domain stops taking mail

    clock.advance(timedelta(seconds=599))
    assert (await mx.check(MX_DOMAIN)).status == "valid"  # still cached
    assert dns_server.count(MX_DOMAIN, "MX") == 1

    clock.advance(timedelta(seconds=1))
    assert (await mx.check(MX_DOMAIN)).reason == "null_mx"
    assert dns_server.count(MX_DOMAIN, "MX") == 2


async def test_clear_cache(dns_server: DnsServer) -> None:
    mx = checker(dns_server)
    await mx.check(MX_DOMAIN)
    mx.clear_cache()
    await mx.check(MX_DOMAIN)
    assert dns_server.count(MX_DOMAIN, "MX") == 2


async def test_concurrent_checks_of_one_domain_share_one_lookup(dns_server: DnsServer) -> None:
    mx = checker(dns_server, cache_ttl=0)  # no cache: only the in-flight sharing can help
    results = await asyncio.gather(*(mx.check(MX_DOMAIN) for _ in range(10)))
    assert {r.status for r in results} == {"valid"}
    assert dns_server.count(MX_DOMAIN, "MX") == 1


async def test_a_naive_clock_is_refused(dns_server: DnsServer) -> None:
    mx = checker(dns_server, clock=lambda: datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        await mx.check(MX_DOMAIN)


async def test_tcp_is_served_too(dns_server: DnsServer) -> None:
    import dns.asyncquery
    import dns.message

    query = dns.message.make_query(MX_DOMAIN, "MX")
    response = await dns.asyncquery.tcp(query, "127.0.0.1", port=dns_server.port, timeout=2)
    assert len(response.answer[0]) == 2


@pytest.mark.parametrize(
    ("spec", "address", "port"),
    [
        ("127.0.0.1:5353", "127.0.0.1", 5353),
        ("10.0.0.1", "10.0.0.1", 53),
        ("::1", "::1", 53),
        ("[::1]:5353", "::1", 5353),
    ],
)
def test_parse_nameserver(spec: str, address: str, port: int) -> None:
    nameserver = parse_nameserver(spec)
    assert (nameserver.address, nameserver.port) == (address, port)


@pytest.mark.parametrize("spec", ["", "127.0.0.1:0", "[::1", "127.0.0.1:x"])
def test_parse_nameserver_rejects_garbage(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_nameserver(spec)


def test_normalise_domain() -> None:
    assert normalise_domain(" Example.COM. ") == "example.com"
