"""MX checks against a real DNS server on loopback: every rule, the "unknown" cases and the cache.

Cache expiry is driven by a ManualClock injected into the checker, never by sleeping: the server
counts the questions it receives, which is how each test proves that a verdict came from the
cache (no new question) or from DNS (one more).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from engine.clock import ManualClock
from engine.delivery.lookups.mx import MxChecker, normalise_domain, parse_nameserver
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
    clock: Callable[[], datetime] | None = None,
    max_concurrency: int = 32,
) -> MxChecker:
    return MxChecker(server.nameservers, timeout=timeout, clock=clock, max_concurrency=max_concurrency)


@pytest.fixture
def manual() -> ManualClock:
    return ManualClock(START)


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


async def test_a_definite_verdict_lives_for_the_answers_ttl(dns_server: DnsServer, manual: ManualClock) -> None:
    dns_server.set_records(MX_DOMAIN, {"MX": ["10 mx1.has-mx.test."]}, ttl=600)
    mx = checker(dns_server, clock=manual.now)
    first = await mx.check(MX_DOMAIN)
    assert (first.status, first.expires_at, first.retry_at) == ("valid", START + timedelta(seconds=600), None)
    dns_server.set_records(MX_DOMAIN, {"MX": ["0 ."]}, ttl=600)  # the domain stops taking mail

    manual.advance(timedelta(seconds=599))
    assert await mx.check(MX_DOMAIN) == first  # still cached
    assert dns_server.count(MX_DOMAIN, "MX") == 1

    manual.advance(timedelta(seconds=1))
    again = await mx.check(MX_DOMAIN)
    assert (again.reason, again.expires_at) == ("null_mx", manual.now() + timedelta(seconds=600))
    assert dns_server.count(MX_DOMAIN, "MX") == 2


@pytest.mark.parametrize(
    ("ttl", "kept"),
    [(0, 60), (5, 60), (60, 60), (3600, 3600), (86_400, 86_400), (30 * 86_400, 86_400)],
)
async def test_the_ttl_is_bounded(dns_server: DnsServer, manual: ManualClock, ttl: int, kept: int) -> None:
    # a zero TTL must not turn every tick into a query; a month-long one must not hide a change
    dns_server.set_records(MX_DOMAIN, {"MX": ["10 mx1.has-mx.test."]}, ttl=ttl)
    result = await checker(dns_server, clock=manual.now).check(MX_DOMAIN)
    assert result.expires_at == START + timedelta(seconds=kept)


async def test_a_cname_chain_lives_as_long_as_its_shortest_link(dns_server: DnsServer, manual: ManualClock) -> None:
    dns_server.set_records(CNAME_TO_MX, {"CNAME": [f"{MX_DOMAIN}."]}, ttl=120)
    result = await checker(dns_server, clock=manual.now).check(CNAME_TO_MX)
    assert (result.status, result.expires_at) == ("valid", START + timedelta(seconds=120))


async def test_a_negative_answer_without_an_soa_gets_the_default(dns_server: DnsServer, manual: ManualClock) -> None:
    mx = checker(dns_server, clock=manual.now)
    for domain in (NXDOMAIN, NO_MAIL):
        assert (await mx.check(domain)).expires_at == START + timedelta(hours=1)


@pytest.mark.parametrize(("minimum", "soa_ttl", "kept"), [(900, None, 900), (900, 200, 200), (100, 7200, 100)])
async def test_a_negative_answer_lives_for_the_soa_negative_ttl(
    dns_server: DnsServer, manual: ManualClock, minimum: int, soa_ttl: int | None, kept: int
) -> None:
    # RFC 2308: the smaller of the SOA record's TTL and its MINIMUM field
    dns_server.set_negative_ttl(minimum, soa_ttl=soa_ttl)
    mx = checker(dns_server, clock=manual.now)
    for domain in (NXDOMAIN, NO_MAIL):
        assert (await mx.check(domain)).expires_at == START + timedelta(seconds=kept)


async def test_an_address_fallback_lives_as_long_as_the_missing_mx(dns_server: DnsServer, manual: ManualClock) -> None:
    # "valid by the A record" rests on "no MX" too: an MX published later must be seen then
    dns_server.set_negative_ttl(120)
    dns_server.set_records(A_ONLY, {"A": ["192.0.2.20"]}, ttl=3600)
    result = await checker(dns_server, clock=manual.now).check(A_ONLY)
    assert (result.reason, result.expires_at) == ("address_fallback", START + timedelta(seconds=120))


async def test_unknown_waits_for_retry_at_and_backs_off(dns_server: DnsServer, manual: ManualClock) -> None:
    mx = checker(dns_server, clock=manual.now)
    waits = [timedelta(minutes=minutes) for minutes in (5, 15, 45, 120, 120)]  # the last one repeats
    for attempt, wait in enumerate(waits, start=1):
        result = await mx.check(SERVFAIL)
        assert (result.status, result.retry_at) == ("unknown", manual.now() + wait)
        assert result.expires_at == result.retry_at
        assert dns_server.count(SERVFAIL, "MX") == attempt

        manual.advance(wait - timedelta(seconds=1))
        assert await mx.check(SERVFAIL) == result  # held: not asked again before retry_at
        assert dns_server.count(SERVFAIL, "MX") == attempt
        manual.advance(timedelta(seconds=1))


async def test_unknown_is_retried_at_retry_at_and_an_answer_ends_the_backoff(
    dns_server: DnsServer, manual: ManualClock
) -> None:
    mx = checker(dns_server, clock=manual.now)
    first = await mx.check(SERVFAIL)
    dns_server.set_behaviour(SERVFAIL, None)
    dns_server.set_records(SERVFAIL, {"MX": ["10 mx1.has-mx.test."]})
    assert (await mx.check(SERVFAIL)).status == "unknown"  # DNS recovered, but the hold stands

    assert first.retry_at is not None
    manual.set(first.retry_at)
    recovered = await mx.check(SERVFAIL)
    assert (recovered.status, recovered.retry_at) == ("valid", None)

    # a later failure starts the schedule again at its first, shortest wait
    dns_server.set_behaviour(SERVFAIL, "servfail")
    assert recovered.expires_at is not None
    manual.set(recovered.expires_at)
    assert (await mx.check(SERVFAIL)).retry_at == manual.now() + timedelta(minutes=5)


async def test_a_failure_long_after_the_last_one_starts_the_backoff_again(
    dns_server: DnsServer, manual: ManualClock
) -> None:
    mx = checker(dns_server, clock=manual.now)
    await mx.check(SERVFAIL)
    manual.advance(timedelta(minutes=5))
    assert (await mx.check(SERVFAIL)).retry_at == manual.now() + timedelta(minutes=15)
    manual.advance(timedelta(days=1))  # nobody asked about the domain for a day
    assert (await mx.check(SERVFAIL)).retry_at == manual.now() + timedelta(minutes=5)


async def test_a_silent_server_costs_one_timeout_per_domain_per_retry_period(
    dns_server: DnsServer, manual: ManualClock
) -> None:
    domains = [f"quiet{number}.test" for number in range(4)]
    for domain in domains:
        dns_server.set_behaviour(domain, "silent")
    mx = checker(dns_server, timeout=0.3, clock=manual.now)

    started = time.monotonic()
    results = await mx.check_many(domains)
    assert time.monotonic() - started < 2.0  # concurrently: about one timeout, not four
    assert {(result.status, result.reason) for result in results.values()} == {("unknown", "timeout")}
    asked = {domain: dns_server.count(domain) for domain in domains}
    assert all(count >= 1 for count in asked.values())

    for _ in range(5):  # five ticks within the retry period: no query, no waiting
        manual.advance(timedelta(seconds=59))
        started = time.monotonic()
        assert await mx.check_many(domains) == results
        assert time.monotonic() - started < 0.25
        assert {domain: dns_server.count(domain) for domain in domains} == asked

    manual.set(START + timedelta(minutes=5))
    retried = await mx.check_many(domains)
    assert all(dns_server.count(domain) > asked[domain] for domain in domains)
    assert {result.retry_at for result in retried.values()} == {manual.now() + timedelta(minutes=15)}


async def test_check_many_answers_each_spelling_from_one_lookup(dns_server: DnsServer, manual: ManualClock) -> None:
    mx = checker(dns_server, clock=manual.now)
    asked = [MX_DOMAIN, " Has-MX.Test. ", MX_DOMAIN, NXDOMAIN, SERVFAIL, NULL_MX]
    results = await mx.check_many(asked)
    assert list(results) == [MX_DOMAIN, " Has-MX.Test. ", NXDOMAIN, SERVFAIL, NULL_MX]  # keyed as asked
    assert results[" Has-MX.Test. "] is results[MX_DOMAIN]
    statuses = [results[domain].status for domain in (MX_DOMAIN, NXDOMAIN, SERVFAIL, NULL_MX)]
    assert statuses == ["valid", "invalid", "unknown", "invalid"]
    assert all(dns_server.count(domain, "MX") == 1 for domain in (MX_DOMAIN, NXDOMAIN, SERVFAIL, NULL_MX))
    assert await mx.check_many([]) == {}


async def test_check_many_answers_from_the_cache_when_fresh(dns_server: DnsServer, manual: ManualClock) -> None:
    mx = checker(dns_server, clock=manual.now)
    first = await mx.check(MX_DOMAIN)
    results = await mx.check_many([MX_DOMAIN, A_ONLY])
    assert results[MX_DOMAIN] is first
    assert dns_server.count(MX_DOMAIN) == 1 and dns_server.count(A_ONLY, "A") == 1


async def test_concurrent_callers_share_one_lookup_per_domain(dns_server: DnsServer, manual: ManualClock) -> None:
    # different ticks or services asking at once: each domain is asked of DNS once in all
    mx = checker(dns_server, clock=manual.now)
    domains = [MX_DOMAIN, A_ONLY, NO_MAIL, NXDOMAIN]
    many = asyncio.gather(mx.check_many(domains), mx.check_many(reversed(domains)))
    singles = asyncio.gather(*(mx.check(domain) for domain in domains))
    (first, second), one_by_one = await asyncio.gather(many, singles)
    assert first == second and list(first.values()) == one_by_one
    assert all(dns_server.count(domain, "MX") == 1 for domain in domains)


async def test_a_silent_domain_is_waited_for_once_by_all_its_callers(dns_server: DnsServer) -> None:
    mx = checker(dns_server, timeout=0.3)
    started = time.monotonic()
    batches, single = await asyncio.gather(
        asyncio.gather(*(mx.check_many([SILENT, MX_DOMAIN]) for _ in range(5))), mx.check(SILENT)
    )
    assert time.monotonic() - started < 1.5  # one shared timeout, not six in a row
    assert single.status == "unknown"
    assert all(batch[SILENT] is single for batch in batches)


async def test_lookups_in_flight_are_bounded(dns_server: DnsServer) -> None:
    # with room for two at a time, four silent domains take two timeouts end to end
    domains = [f"quiet{number}.test" for number in range(4)]
    for domain in domains:
        dns_server.set_behaviour(domain, "silent")
    mx = checker(dns_server, timeout=0.4, max_concurrency=2)
    started = time.monotonic()
    await mx.check_many(domains)
    assert time.monotonic() - started >= 0.8


async def test_a_cancelled_caller_leaves_the_lookup_to_the_others(dns_server: DnsServer, manual: ManualClock) -> None:
    mx = checker(dns_server, timeout=0.3, clock=manual.now)
    abandoned = asyncio.ensure_future(mx.check(SILENT))
    kept = asyncio.ensure_future(mx.check(SILENT))
    await asyncio.sleep(0)  # both are waiting on the shared lookup
    abandoned.cancel()
    result = await kept
    assert abandoned.cancelled() and result.status == "unknown"
    asked = dns_server.count(SILENT)
    assert await mx.check(SILENT) is result  # cached by the lookup itself
    assert dns_server.count(SILENT) == asked


async def test_clear_cache(dns_server: DnsServer) -> None:
    mx = checker(dns_server)
    await mx.check(MX_DOMAIN)
    mx.clear_cache()
    await mx.check(MX_DOMAIN)
    assert dns_server.count(MX_DOMAIN, "MX") == 2


async def test_without_a_clock_times_are_aware_and_ahead(dns_server: DnsServer) -> None:
    before = datetime.now(UTC)
    result = await checker(dns_server).check(SERVFAIL)
    assert result.retry_at is not None and result.retry_at.tzinfo is not None
    assert result.retry_at - before >= timedelta(minutes=5)


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
