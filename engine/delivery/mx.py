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
``"unknown"``: the caller checks again later and must never treat it as invalid.

Definite answers are cached for ``cache_ttl`` seconds, measured by the injected clock so tests
and the forecast see the same expiry as production; ``"unknown"`` is never cached, so the next
check retries at once. Concurrent checks of one domain share a single lookup.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

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


@dataclass(frozen=True, slots=True)
class MxResult:
    """The verdict for one domain.

    ``status`` is what callers act on; ``reason`` is one of the ``REASON_*`` codes (stable, fit
    for events and skip reports); ``detail`` is a human-readable explanation for logs only;
    ``hosts`` lists the mail exchanges by preference (or the domain itself after the address
    fallback), empty unless the domain is valid.
    """

    domain: str
    status: MxStatus
    reason: str
    detail: str = ""
    hosts: tuple[str, ...] = ()


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


class MxChecker:
    """Checks whether domains can receive mail, with a TTL cache of definite answers.

    ``nameservers`` (``"host[:port]"`` strings) replace the system resolver configuration;
    ``None`` reads ``/etc/resolv.conf``. ``timeout`` bounds one whole check of one record type
    (every nameserver and retry included). ``clock`` returns an aware ``datetime``; without it the
    cache TTL is measured with ``time.monotonic`` (never the wall clock, which can jump).
    """

    def __init__(
        self,
        nameservers: list[str] | None = None,
        timeout: float = 3.0,
        cache_ttl: float = 3600,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
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
        self._cache_ttl = cache_ttl
        self._clock = clock
        self._cache: dict[str, tuple[float, MxResult]] = {}
        self._inflight: dict[str, asyncio.Task[MxResult]] = {}

    def _now(self) -> float:
        if self._clock is None:
            return time.monotonic()
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("MxChecker clock must return a timezone-aware datetime")
        return now.timestamp()

    def clear_cache(self) -> None:
        """Forget every cached verdict (for example after the DNS configuration changed)."""
        self._cache.clear()

    async def check(self, domain: str) -> MxResult:
        """Return the verdict for ``domain`` (an address's part after ``@``), cached if fresh."""
        key = normalise_domain(domain)
        cached = self._cache.get(key)
        if cached is not None:
            expires_at, result = cached
            if self._now() < expires_at:
                return result
            del self._cache[key]
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(self._lookup(key))
            self._inflight[key] = task
            task.add_done_callback(lambda _t: self._inflight.pop(key, None))
        # shield: one caller being cancelled must not cancel the lookup the others await
        result = await asyncio.shield(task)
        if result.status != "unknown" and self._cache_ttl > 0:
            self._cache[key] = (self._now() + self._cache_ttl, result)
        return result

    async def _lookup(self, domain: str) -> MxResult:
        if not domain:
            return MxResult(domain, "invalid", REASON_MALFORMED, "empty domain")
        if self._config_error is not None:
            return MxResult(domain, "unknown", REASON_SERVER_FAILURE, self._config_error)
        try:
            name = dns.name.from_text(domain)  # absolute: the search list never applies
        except (dns.exception.DNSException, UnicodeError, ValueError) as exc:
            return MxResult(domain, "invalid", REASON_MALFORMED, str(exc))

        outcome = await self._query(domain, name, dns.rdatatype.MX)
        if isinstance(outcome, MxResult):
            return outcome
        if outcome is not None:
            return _from_mx(domain, outcome)

        # No MX at all: RFC 5321 section 5.1 says deliver to the domain's own address.
        for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            outcome = await self._query(domain, name, rdtype)
            if isinstance(outcome, MxResult):
                return outcome
            if outcome is not None:
                return MxResult(domain, "valid", REASON_ADDRESS_FALLBACK, f"no MX; has {rdtype.name}", (domain,))
        return MxResult(domain, "invalid", REASON_NO_MAIL_HOST, "no MX, A or AAAA records")

    async def _query(
        self, domain: str, name: dns.name.Name, rdtype: dns.rdatatype.RdataType
    ) -> dns.resolver.Answer | MxResult | None:
        """One lookup: the answer, ``None`` for "no records of this type", or a final verdict."""
        try:
            return await self._resolver.resolve(name, rdtype, lifetime=self._timeout, search=False)
        except dns.resolver.NoAnswer:
            return None
        except dns.resolver.NXDOMAIN:
            return MxResult(domain, "invalid", REASON_NXDOMAIN, "the domain does not exist")
        except dns.resolver.YXDOMAIN as exc:  # name too long after a DNAME: not a usable domain
            return MxResult(domain, "invalid", REASON_MALFORMED, str(exc))
        except dns.exception.Timeout as exc:
            return MxResult(domain, "unknown", REASON_TIMEOUT, str(exc))
        except dns.resolver.NoNameservers as exc:
            return MxResult(domain, "unknown", REASON_SERVER_FAILURE, str(exc))
        except (dns.exception.DNSException, OSError) as exc:
            # anything else is a failure to get an answer, never evidence against the domain
            return MxResult(domain, "unknown", REASON_SERVER_FAILURE, f"{type(exc).__name__}: {exc}")


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
