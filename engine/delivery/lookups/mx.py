"""Does a domain accept mail? An MX check that never mistakes a slow DNS for a dead domain.

Campaigns with ``verify_mx`` skip contacts whose domain cannot receive mail (``mx_invalid``).
Dropping a contact is permanent from the user's point of view, so the checker only answers
``"invalid"`` on positive evidence from DNS:

- NXDOMAIN: the domain does not exist;
- a null MX (RFC 7505: the only MX record has preference 0 and exchange ``.``), or MX records
  whose exchanges are all ``.``: the domain says it takes no mail;
- no MX records at all and no A/AAAA either (RFC 5321 section 5.1 falls back to the address
  records when there is no MX).

Anything that is not an answer (a timeout, SERVFAIL, REFUSED, no reachable nameserver) is
``"unknown"``: the caller holds the email until the result's ``retry_at`` and must never treat it
as invalid.

Every verdict is cached per domain, so a tick that sends to ten thousand addresses at one
provider asks DNS once, and checks stay off the claim path:

- a definite answer lives for the DNS answer's own TTL (for a negative answer, the SOA's negative
  TTL per RFC 2308, or ``negative_ttl`` when the server sent no SOA), bounded to
  ``[min_ttl, max_ttl]`` so that a zero TTL does not turn every tick into a query and a week-long
  TTL does not hide a domain that changed;
- an unknown verdict lives until its ``retry_at``: 5 minutes after the first failure, then 15,
  45 and 120 minutes for consecutive failures (``retry_delays``). A nameserver that never
  answers therefore costs one timeout per domain per retry period, not one per tick.

Expiry is measured by the injected clock (the engine's), never the wall clock, so tests, the
forecast and production agree on when a verdict goes stale. Concurrent checks of one domain share
a single lookup, and :meth:`MxChecker.check_many` bounds how many lookups run at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.rdtypes.ANY.SOA
import dns.resolver
import structlog

log = structlog.get_logger("campaign_engine.mx")

MxStatus = Literal["valid", "invalid", "unknown"]

# Stable reason codes: callers may store them in events, so never rename one.
REASON_MX = "mx"  # valid: at least one usable MX host
REASON_ADDRESS_FALLBACK = "address_fallback"  # valid: no MX, but an A or AAAA record
REASON_NXDOMAIN = "nxdomain"  # invalid: the domain does not exist
REASON_NULL_MX = "null_mx"  # invalid: RFC 7505 null MX
REASON_NO_MAIL_HOST = "no_mail_host"  # invalid: neither MX nor A/AAAA
REASON_MALFORMED = "malformed_domain"  # invalid: not a syntactically valid domain name
REASON_TIMEOUT = "timeout"  # unknown: no answer in time
REASON_SERVER_FAILURE = "server_failure"  # unknown: SERVFAIL, REFUSED, unreachable nameservers

# Cache bounds, in seconds. See the module docstring for why each exists.
MIN_TTL = 60.0
MAX_TTL = 86_400.0
NEGATIVE_TTL_WITHOUT_SOA = 3_600.0
RETRY_DELAYS: tuple[float, ...] = (300.0, 900.0, 2_700.0, 7_200.0)
MAX_CONCURRENCY = 32


@dataclass(frozen=True, slots=True)
class MxResult:
    """The verdict for one domain.

    ``status`` is what callers act on; ``reason`` is one of the ``REASON_*`` codes (stable, fit
    for events and skip reports); ``detail`` is a human-readable explanation for logs only;
    ``hosts`` lists the mail exchanges by preference (or the domain itself after the address
    fallback), empty unless the domain is valid.

    ``expires_at`` is when the cached verdict goes stale (by the checker's clock); ``retry_at``
    is set only for ``"unknown"`` and says when to hold the email until: asking again earlier
    returns this same verdict without a query. Both are ``None`` only on results built outside
    the checker.
    """

    domain: str
    status: MxStatus
    reason: str
    detail: str = ""
    hosts: tuple[str, ...] = ()
    expires_at: datetime | None = None
    retry_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class _Verdict:
    """A lookup's outcome before it is stamped with times: the result and how long DNS vouches
    for it (``None`` for unknown, whose lifetime is the retry schedule's, not DNS's)."""

    result: MxResult
    ttl: float | None


@dataclass(frozen=True, slots=True)
class _Entry:
    """One cached verdict; ``failures`` counts consecutive unknowns, to lengthen the next wait."""

    result: MxResult
    failures: int


def parse_nameserver(spec: str) -> dns.nameserver.Do53Nameserver:
    """Turn ``"127.0.0.1:5353"``, ``"10.0.0.1"``, ``"::1"`` or ``"[::1]:5353"`` into a nameserver.

    The contract's ``dns_nameservers`` option uses this host[:port] form so that tests and
    embedders can point the checker at a resolver on a non-standard port.
    """
    spec = spec.strip()
    port = 53
    if spec.startswith("["):
        host, sep, rest = spec[1:].partition("]")
        if not sep:
            raise ValueError(f"bad nameserver {spec!r}: missing ']'")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"bad nameserver {spec!r}")
            port = int(rest[1:])
    elif spec.count(":") == 1:
        host, _, port_text = spec.partition(":")
        port = int(port_text)
    else:
        host = spec  # IPv4 without port, or a bare IPv6 address
    if not host or not 0 < port < 65536:
        raise ValueError(f"bad nameserver {spec!r}")
    return dns.nameserver.Do53Nameserver(host, port)


def normalise_domain(domain: str) -> str:
    """Lower-case, strip spaces and any trailing dot: the cache key and the reported domain."""
    return domain.strip().rstrip(".").lower()


def monotonic_utc_clock() -> Callable[[], datetime]:
    """A UTC clock that moves with ``time.monotonic``: the default when no clock is injected.

    Verdicts carry datetimes, so the checker needs one, but the wall clock can jump (NTP, a VM
    resumed) and would expire the whole cache at once or never; this one is anchored to the wall
    clock once and then only moves forward at the machine's steady rate.
    """
    anchor_wall = datetime.now(UTC)
    anchor_steady = time.monotonic()

    def now() -> datetime:
        return anchor_wall + timedelta(seconds=time.monotonic() - anchor_steady)

    return now


class MxChecker:
    """Checks whether domains can receive mail, with a per-domain cache of every verdict.

    ``nameservers`` (``"host[:port]"`` strings) replace the system resolver configuration;
    ``None`` reads ``/etc/resolv.conf``. ``timeout`` bounds one whole check of one record type
    (every nameserver and retry included). ``clock`` returns an aware ``datetime`` and measures
    every expiry; the engine passes its own so a ManualClock drives the cache in tests. Without
    it, :func:`monotonic_utc_clock` is used.

    ``min_ttl``/``max_ttl`` bound how long a definite answer is kept, ``negative_ttl`` is used for
    a negative answer without an SOA, ``retry_delays`` are the waits after the 1st, 2nd, ...
    consecutive unknown (the last one repeats), and ``max_concurrency`` caps the lookups in
    flight at once across all callers, so a tick with many new domains cannot flood the resolver.
    """

    def __init__(
        self,
        nameservers: list[str] | None = None,
        timeout: float = 3.0,
        clock: Callable[[], datetime] | None = None,
        *,
        min_ttl: float = MIN_TTL,
        max_ttl: float = MAX_TTL,
        negative_ttl: float = NEGATIVE_TTL_WITHOUT_SOA,
        retry_delays: Sequence[float] = RETRY_DELAYS,
        max_concurrency: int = MAX_CONCURRENCY,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if not 0 <= min_ttl <= max_ttl:
            raise ValueError("need 0 <= min_ttl <= max_ttl")
        if not retry_delays or any(delay <= 0 for delay in retry_delays):
            raise ValueError("retry_delays must be positive, and at least one")
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self._config_error: str | None = None
        if nameservers:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = [parse_nameserver(spec) for spec in nameservers]
        else:
            try:
                resolver = dns.asyncresolver.Resolver()
            except dns.resolver.NoResolverConfiguration as exc:
                # no usable /etc/resolv.conf: every check is "unknown", never a crash at start-up
                resolver = dns.asyncresolver.Resolver(configure=False)
                self._config_error = f"no system DNS configuration: {exc}"
        # `timeout` is per nameserver attempt, `lifetime` the whole resolution: bounding both
        # by our timeout keeps a check from lasting longer than the caller allowed.
        resolver.timeout = timeout
        resolver.lifetime = timeout
        resolver.cache = None  # we cache verdicts ourselves, by the injected clock
        self._resolver = resolver
        self._timeout = timeout
        self._clock = clock if clock is not None else monotonic_utc_clock()
        self._min_ttl = min_ttl
        self._max_ttl = max_ttl
        self._negative_ttl_without_soa = negative_ttl
        self._retry_delays = tuple(retry_delays)
        self._max_concurrency = max_concurrency
        # the semaphore belongs to one event loop; it is (re)made for the loop that uses it
        self._semaphore: asyncio.Semaphore | None = None
        self._semaphore_loop: asyncio.AbstractEventLoop | None = None
        self._cache: dict[str, _Entry] = {}
        self._inflight: dict[str, asyncio.Task[MxResult]] = {}
        self._next_prune: datetime | None = None

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("MxChecker clock must return a timezone-aware datetime")
        return now

    def clear_cache(self) -> None:
        """Forget every cached verdict (for example after the DNS configuration changed)."""
        self._cache.clear()

    async def check(self, domain: str) -> MxResult:
        """Return the verdict for ``domain`` (an address's part after ``@``), cached if fresh."""
        return await self._verdict(normalise_domain(domain), self._now())

    async def check_many(self, domains: Iterable[str]) -> dict[str, MxResult]:
        """Check every domain at once and return ``{domain as given: verdict}``.

        Spellings of one domain (``Example.COM.``, ``example.com``) share one verdict and one
        lookup; fresh verdicts come from the cache without a query; the rest are looked up
        concurrently, at most ``max_concurrency`` at a time, and a domain already being looked up
        (by this call or another) is awaited rather than asked again.
        """
        keys = {domain: normalise_domain(domain) for domain in domains}
        distinct = list(dict.fromkeys(keys.values()))
        now = self._now()
        verdicts = await asyncio.gather(*(self._verdict(key, now) for key in distinct))
        by_key = dict(zip(distinct, verdicts, strict=True))
        return {domain: by_key[key] for domain, key in keys.items()}

    async def _verdict(self, key: str, now: datetime) -> MxResult:
        """The fresh cached verdict, else the shared in-flight lookup's, else a new lookup's."""
        self._prune(now)
        entry = self._cache.get(key)
        if entry is not None and entry.result.expires_at is not None and now < entry.result.expires_at:
            return entry.result
        loop = asyncio.get_running_loop()
        task = self._inflight.get(key)
        if task is None or task.get_loop() is not loop:
            task = loop.create_task(self._lookup_and_cache(key))
            self._inflight[key] = task
            task.add_done_callback(lambda done: self._forget_inflight(key, done))
        # shield: one caller being cancelled must not cancel the lookup the others await; the
        # task caches its verdict itself, so even a lookup nobody awaits any more is not wasted
        return await asyncio.shield(task)

    def _forget_inflight(self, key: str, done: asyncio.Task[MxResult]) -> None:
        if self._inflight.get(key) is done:
            del self._inflight[key]

    def _bounded(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._semaphore is None or self._semaphore_loop is not loop:
            self._semaphore = asyncio.Semaphore(self._max_concurrency)
            self._semaphore_loop = loop
        return self._semaphore

    async def _lookup_and_cache(self, key: str) -> MxResult:
        """Ask DNS (within the concurrency bound), stamp the verdict with its times, cache it."""
        async with self._bounded():
            verdict = await self._lookup(key)
        now = self._now()
        previous = self._cache.get(key)
        if verdict.ttl is not None:
            ttl = min(max(verdict.ttl, self._min_ttl), self._max_ttl)
            result = dataclasses.replace(verdict.result, expires_at=now + timedelta(seconds=ttl))
            self._cache[key] = _Entry(result, failures=0)
            return result
        failures = 1
        if previous is not None and previous.failures and previous.result.expires_at is not None:
            # a failure soon after the last retry continues the streak; one long after (nobody
            # asked about the domain for a while) starts again at the shortest wait
            if now - previous.result.expires_at <= timedelta(seconds=self._retry_delays[-1]):
                failures = previous.failures + 1
        delay = self._retry_delays[min(failures, len(self._retry_delays)) - 1]
        retry_at = now + timedelta(seconds=delay)
        result = dataclasses.replace(verdict.result, expires_at=retry_at, retry_at=retry_at)
        self._cache[key] = _Entry(result, failures)
        # No verdict (timeout, SERVFAIL, an answer that is not DNS): the emails wait, and the log
        # says why, since nothing else does until the retry.
        log.warning("mx_lookup_failed", domain=key, reason=result.reason, detail=result.detail[:300],
                    failures=failures, retry_at=retry_at.isoformat())
        return result

    def _prune(self, now: datetime) -> None:
        """Drop verdicts that expired long ago, so a long-running engine's cache stays the size
        of the domains it currently sends to; runs at most once per shortest retry delay."""
        if self._next_prune is not None and now < self._next_prune:
            return
        keep_for = timedelta(seconds=self._retry_delays[-1])
        stale = [
            key
            for key, entry in self._cache.items()
            if entry.result.expires_at is None or now - entry.result.expires_at > keep_for
        ]
        for key in stale:
            del self._cache[key]
        self._next_prune = now + timedelta(seconds=self._retry_delays[0])

    async def _lookup(self, domain: str) -> _Verdict:
        if not domain:
            return _Verdict(MxResult(domain, "invalid", REASON_MALFORMED, "empty domain"), self._max_ttl)
        if self._config_error is not None:
            return _Verdict(MxResult(domain, "unknown", REASON_SERVER_FAILURE, self._config_error), None)
        try:
            name = dns.name.from_text(domain)  # absolute: the search list never applies
        except (dns.exception.DNSException, UnicodeError, ValueError) as exc:
            # a malformed name stays malformed: keep the verdict as long as anything
            return _Verdict(MxResult(domain, "invalid", REASON_MALFORMED, str(exc)), self._max_ttl)

        outcome = await self._query(domain, name, dns.rdatatype.MX)
        if isinstance(outcome, _Verdict):
            return outcome
        if isinstance(outcome, dns.resolver.Answer):
            return _Verdict(_from_mx(domain, outcome), outcome.chaining_result.minimum_ttl)

        # No MX at all: RFC 5321 section 5.1 says deliver to the domain's own address. The
        # verdict rests on every answer consulted, so it lives as long as the shortest of them.
        ttl = outcome
        for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            address = await self._query(domain, name, rdtype)
            if isinstance(address, _Verdict):
                return address
            if isinstance(address, dns.resolver.Answer):
                ttl = min(ttl, address.chaining_result.minimum_ttl)
                result = MxResult(domain, "valid", REASON_ADDRESS_FALLBACK, f"no MX; has {rdtype.name}", (domain,))
                return _Verdict(result, ttl)
            ttl = min(ttl, address)
        return _Verdict(MxResult(domain, "invalid", REASON_NO_MAIL_HOST, "no MX, A or AAAA records"), ttl)

    async def _query(
        self, domain: str, name: dns.name.Name, rdtype: dns.rdatatype.RdataType
    ) -> dns.resolver.Answer | _Verdict | float:
        """One lookup: the answer, the negative TTL of "no records of this type", or a verdict."""
        try:
            return await self._resolver.resolve(name, rdtype, lifetime=self._timeout, search=False)
        except dns.resolver.NoAnswer as exc:
            return self._negative_ttl(exc.response())  # type: ignore[no-untyped-call]  # dnspython leaves it untyped
        except dns.resolver.NXDOMAIN as exc:
            response = exc.responses().get(name)  # type: ignore[no-untyped-call]
            result = MxResult(domain, "invalid", REASON_NXDOMAIN, "the domain does not exist")
            return _Verdict(result, self._negative_ttl(response))
        except dns.resolver.YXDOMAIN as exc:  # name too long after a DNAME: not a usable domain
            return _Verdict(MxResult(domain, "invalid", REASON_MALFORMED, str(exc)), self._negative_ttl(None))
        except dns.exception.Timeout as exc:
            return _Verdict(MxResult(domain, "unknown", REASON_TIMEOUT, str(exc)), None)
        except dns.resolver.NoNameservers as exc:
            return _Verdict(MxResult(domain, "unknown", REASON_SERVER_FAILURE, str(exc)), None)
        except (dns.exception.DNSException, OSError) as exc:
            # anything else is a failure to get an answer, never evidence against the domain
            detail = f"{type(exc).__name__}: {exc}"
            return _Verdict(MxResult(domain, "unknown", REASON_SERVER_FAILURE, detail), None)

    def _negative_ttl(self, response: dns.message.Message | None) -> float:
        """How long a "no such name" or "no such record" answer may be believed (RFC 2308).

        The SOA in the authority section says it: the smaller of the SOA record's own TTL and its
        MINIMUM field; CNAMEs followed on the way cap it too. Without an SOA, ``negative_ttl``.
        dnspython's own ``ChainingResult`` substitutes a fixed 5 minutes when there is no SOA,
        which would hide that the server gave no figure, hence this small reading of our own.
        """
        if response is None:
            return self._negative_ttl_without_soa
        soa_ttls: list[float] = [
            min(rrset.ttl, rdata.minimum)
            for rrset in response.authority
            if rrset.rdtype == dns.rdatatype.SOA
            for rdata in rrset
            if isinstance(rdata, dns.rdtypes.ANY.SOA.SOA)
        ]
        cname_ttls = [rrset.ttl for rrset in response.answer if rrset.rdtype == dns.rdatatype.CNAME]
        return min([*(soa_ttls or [self._negative_ttl_without_soa]), *cname_ttls])


def _from_mx(domain: str, answer: dns.resolver.Answer) -> MxResult:
    records = sorted(answer, key=lambda rdata: rdata.preference)
    hosts = tuple(
        rdata.exchange.to_text(omit_final_dot=True).lower() for rdata in records if rdata.exchange != dns.name.root
    )
    if not hosts:
        # RFC 7505 defines the null MX as a single "0 ."; a domain whose every exchange is "."
        # has no mail host either, whatever the preferences say.
        return MxResult(domain, "invalid", REASON_NULL_MX, "the domain publishes a null MX")
    return MxResult(domain, "valid", REASON_MX, "", hosts)
