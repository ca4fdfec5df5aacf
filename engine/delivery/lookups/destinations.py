"""Where a webhook may be delivered: the guard against server-side request forgery (SSRF).

A webhook URL is chosen by a workspace, but the request leaves from the engine's host, inside its
network. Without a guard, a webhook pointed at ``http://169.254.169.254/latest/meta-data`` would
have the engine fetch the cloud's instance credentials for whoever can read the delivery records,
and one pointed at a private address would probe the engine's LAN.

Two classes of addresses:

- **always refused**: unspecified (``0.0.0.0/8``, ``::``), link-local (``169.254.0.0/16`` and
  ``fe80::/10``: the cloud metadata services), multicast, reserved (``240.0.0.0/4``) and broadcast.
  Nothing legitimate listens there for a webhook.
- **private**: loopback, RFC 1918, shared address space ``100.64.0.0/10`` (Alibaba Cloud's metadata
  is ``100.100.100.200``), unique-local ``fc00::/7`` (AWS's IPv6 metadata is ``fd00:ec2::254``),
  site-local and whatever else :mod:`ipaddress` calls private. Refused only when the engine option
  ``webhook_allow_private_addresses`` is false. It defaults to true: a self-hosted engine calling
  a CRM on its LAN, or a receiver on loopback, is the common case; a multi-tenant deployment
  turns it off.

IPv6 forms that carry an IPv4 address (IPv4-mapped ``::ffff:a.b.c.d``, IPv4-compatible
``::a.b.c.d``, NAT64 ``64:ff9b::a.b.c.d`` and 6to4 ``2002:AABB:CCDD::``) are judged by that IPv4
address, since that is where the packets end up. Legacy IPv4 spellings that the C library accepts
(``2130706433``, ``0x7f.1``, ``127.1``) are IP literals too.

The classifier is pure. :func:`resolve` is the I/O edge: it resolves the host at every delivery,
refuses if *any* address is refused (a name with one public and one private address must not
reach the private one by luck of ordering), and returns the vetted address so that the caller
connects to it and not to the name again: a second resolution could answer differently (DNS
rebinding). Host names are not resolved at webhook creation: there is no network at creation, and
DNS can change afterwards anyway; only IP literals are refused there (:func:`url_problem`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

OPTION = "webhook_allow_private_addresses"
_DEFAULT_PORTS = {"http": 80, "https": 443}
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")
_BROADCAST = ipaddress.IPv4Address("255.255.255.255")
_SHARED = ipaddress.IPv4Network("100.64.0.0/10")
_RFC1918 = tuple(ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
_UNIQUE_LOCAL = ipaddress.IPv6Network("fc00::/7")
_SITE_LOCAL = ipaddress.IPv6Network("fec0::/10")
_LEGACY_V4 = re.compile(r"^[0-9a-fx.]+$")


class DestinationRefused(Exception):
    """A webhook URL points, or resolves, at an address the engine must not call (see the module)."""


class Verdict(NamedTuple):
    """Why an address is not an ordinary public one; ``always``: refused whatever the option says."""

    reason: str
    always: bool


@dataclass(frozen=True, slots=True)
class Destination:
    """A vetted destination: the URL as written, its host and port, and the address to connect to."""

    url: httpx.URL
    host: str  # ASCII (IDNA) form, without brackets
    port: int
    address: IPAddress
    others: tuple[IPAddress, ...] = ()  # further vetted addresses, tried in turn when one refuses connections

    def each(self) -> list[Destination]:
        """This destination, then one per further vetted address (in the resolver's order)."""
        return [self, *(Destination(self.url, self.host, self.port, a) for a in self.others)]

    def target(self) -> httpx.URL:
        """The URL with its host replaced by the vetted address: the connection goes there, not to the name."""
        return self.url.copy_with(host=str(self.address))

    @property
    def host_header(self) -> str:
        """The ``Host`` header the URL would have had (an explicit non-default port included)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.url.port is None else f"{host}:{self.url.port}"

    @property
    def extensions(self) -> dict[str, Any]:
        """For https, SNI and certificate verification use the name from the URL, not the address."""
        return {"sni_hostname": self.host} if self.url.scheme == "https" else {}


def allows_private(options: Mapping[str, Any]) -> bool:
    """The engine option, with its default (true) kept in one place."""
    return bool(options.get(OPTION, True))


def normalise(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address carries, if it carries one; else the address itself."""
    if isinstance(address, ipaddress.IPv4Address):
        return address
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if int(address) >> 32 == 0 and int(address) > 1:  # IPv4-compatible ::a.b.c.d (not :: nor ::1)
        return ipaddress.IPv4Address(int(address))
    return address


def classify(address: IPAddress) -> Verdict | None:
    """What kind of special address this is, or None for an ordinary public address."""
    a = normalise(address)
    v4 = isinstance(a, ipaddress.IPv4Address)
    if a.is_unspecified or (v4 and a in _THIS_NETWORK):
        return Verdict("unspecified", True)
    if a.is_link_local:
        return Verdict("link-local (cloud metadata)", True)
    if a.is_multicast:
        return Verdict("multicast", True)
    if a == _BROADCAST:
        return Verdict("broadcast", True)
    if a.is_loopback:  # before reserved: ipaddress counts ::1 as reserved (it is in ::/8)
        return Verdict("loopback", False)
    if a.is_reserved:
        return Verdict("reserved", True)
    if v4 and a in _SHARED:
        return Verdict("shared address space (CGNAT; Alibaba Cloud metadata)", False)
    if v4 and any(a in n for n in _RFC1918):
        return Verdict("private (RFC 1918)", False)
    if not v4 and a in _UNIQUE_LOCAL:
        return Verdict("unique-local (AWS IPv6 metadata)", False)
    if not v4 and a in _SITE_LOCAL:
        return Verdict("site-local", False)
    if a.is_private:
        return Verdict("private", False)
    return None


def refusal(address: IPAddress, allow_private: bool) -> str | None:
    """Why a webhook may not call ``address`` under the option, or None when it may."""
    verdict = classify(address)
    if verdict is None or (allow_private and not verdict.always):
        return None
    if verdict.always:
        return verdict.reason
    return f"{verdict.reason}, and private addresses are not allowed ({OPTION} is off)"


def literal(host: str) -> IPAddress | None:
    """The address an IP-literal host names (legacy IPv4 spellings too), or None for a host name.

    Pure: parsing only, never DNS. ``socket.inet_aton`` reads the spellings that ``getaddrinfo``
    would read as numbers without asking DNS, so a name that is really a number is caught here.
    """
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _LEGACY_V4.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def parse(url: str | httpx.URL) -> tuple[httpx.URL, str, int]:
    """The URL as httpx reads it (the reader that will send it), its ASCII host and its port.

    Raises :class:`DestinationRefused` for a URL that cannot be sent anywhere.
    """
    try:
        u = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise DestinationRefused(f"invalid URL: {exc}") from None
    host = u.raw_host.decode("ascii")
    if u.scheme not in _DEFAULT_PORTS:
        raise DestinationRefused(f"unsupported scheme {u.scheme!r}")
    if not host:
        raise DestinationRefused("URL has no host")
    port = u.port if u.port is not None else _DEFAULT_PORTS[u.scheme]
    if not 0 < port < 65536:
        raise DestinationRefused(f"invalid port {port}")
    return u, host, port


def _named(address: IPAddress) -> str:
    """The address as written, with the IPv4 address it carries if any: ``::ffff:a9fe:a9fe (169.254.169.254)``."""
    carried = normalise(address)
    return str(address) if carried == address else f"{address} ({carried})"


def url_problem(url: str, allow_private: bool) -> str | None:
    """At webhook creation: why this URL can never be delivered, or None. Host names pass (no DNS here)."""
    try:
        _, host, _ = parse(url)
    except DestinationRefused as exc:
        return str(exc)
    address = literal(host)
    reason = refusal(address, allow_private) if address is not None else None
    if address is None or reason is None:
        return None
    return f"webhooks may not call {_named(address)}: {reason}"


async def resolve(url: str | httpx.URL, allow_private: bool) -> Destination:
    """Resolve the URL's host (at every delivery) and vet every address; return the one to connect to.

    Raises :class:`DestinationRefused` when the URL is unusable or any address is refused, and
    ``OSError`` (``socket.gaierror``) when the name does not resolve.
    """
    u, host, port = parse(url)
    address = literal(host)
    if address is not None:
        addresses = [address]
    else:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
        if not addresses:
            raise DestinationRefused(f"{host} resolves to no address")
    for a in addresses:
        reason = refusal(a, allow_private)
        if reason is not None:
            where = _named(a) if address is not None else f"{host} resolves to {_named(a)}"
            raise DestinationRefused(f"{where}: {reason}")
    unique = list(dict.fromkeys(addresses))
    return Destination(url=u, host=host, port=port, address=unique[0], others=tuple(unique[1:]))


__all__ = ["OPTION", "Destination", "DestinationRefused", "IPAddress", "Verdict", "allows_private", "classify",
           "literal", "normalise", "parse", "refusal", "resolve", "url_problem"]
