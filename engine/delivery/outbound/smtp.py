"""Outgoing SMTP: pooled aiosmtplib connections, replies turned into values.

``SmtpMailer.send`` never raises for anything the network or the server does: it answers a
:class:`SendResult` whose ``outcome`` says what the engine may do next.

========================  ===================================================================
outcome                   when, and what it means for the engine
========================  ===================================================================
``sent``                  the final reply to DATA was 2xx: the server took the message.
``deferred``              a 4xx reply (MAIL, RCPT or DATA), or the connection broke or timed
                          out *before* the DATA command: nothing was delivered, retry later.
``rejected``              a 5xx reply at MAIL, at RCPT (every recipient refused) or at DATA,
                          or an address that cannot be sent at all: never retry.
``unsendable``            this server cannot take the message at all (an address needs SMTPUTF8,
                          which it does not offer): the sending path's limit, never the
                          recipient's fault, and retrying the same server cannot help.
``uncertain``             the connection broke or timed out after the DATA command was sent:
                          the server may have the message. Never retried automatically.
``auth_failed``           the server refused the login, offers no AUTH, or answered 530
                          (authentication required): fix the sender's settings.
``connect_failed``        no usable session: refused, unreachable, timeout or non-220 greeting
                          (``code`` holds e.g. 421), EHLO/STARTTLS/TLS failure. Nothing was sent;
                          retry later, and count it against the sender, not the recipient.
========================  ===================================================================

Connections are kept per sender key (the sender id) and reused; one that broke, timed out or was
closed by the server is dropped and a new one is opened on the next send. A reused connection that
turns out dead before any reply of the new transaction is retried once on a fresh connection.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import aiosmtplib
from aiosmtplib import (
    SMTPAuthenticationError,
    SMTPException,
    SMTPHeloError,
    SMTPRecipientRefused,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPStatus,
    SMTPTimeoutError,
)

__all__ = ["Outcome", "Security", "SendResult", "SmtpMailer", "SmtpSettings"]

Security = Literal["none", "starttls", "tls"]
Outcome = Literal["sent", "deferred", "rejected", "uncertain", "auth_failed", "connect_failed", "unsendable"]
Stage = Literal["connect", "auth", "mail", "rcpt", "data"]

_ENHANCED = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})\b")
# What "the network failed" looks like from aiosmtplib: dropped, timed out, socket/TLS errors.
_BROKEN = (SMTPServerDisconnected, SMTPTimeoutError, OSError, EOFError)


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    """How to reach and log in to one sender's SMTP server.

    ``security``: ``"tls"`` is implicit TLS (port 465), ``"starttls"`` requires the upgrade (a
    server that does not offer it is a connect failure: credentials never go out in clear), and
    ``"none"`` never upgrades. ``validate_certs=False`` accepts any certificate (tests, private
    relays); ``cert_bundle`` trusts an extra CA file. ``timeout`` (seconds) bounds each step.
    """

    host: str
    port: int = 587
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    security: Security = "starttls"
    timeout: float = 30.0
    validate_certs: bool = True
    cert_bundle: str | None = None
    local_hostname: str | None = None

    def __post_init__(self) -> None:
        if self.security not in ("none", "starttls", "tls"):
            raise ValueError(f"security must be none, starttls or tls, not {self.security!r}")
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")


@dataclass(frozen=True, slots=True)
class SendResult:
    """What happened to one send attempt (see the module docstring for the outcomes).

    ``code`` is the SMTP reply code when the server gave one; ``message`` its text or a
    description of the failure; ``stage`` the step at which it was decided; ``refused`` the
    recipients refused while others were accepted (a partial success is ``sent``).
    """

    outcome: Outcome
    code: int | None
    message: str
    stage: Stage | None = None
    refused: tuple[tuple[str, int, str], ...] = ()

    @property
    def retryable(self) -> bool:
        """True when sending again later is safe and may succeed."""
        return self.outcome in ("deferred", "connect_failed")

    @property
    def enhanced_status(self) -> str | None:
        """The RFC 3463 status at the start of the reply text (``"5.1.1"``), if any."""
        match = _ENHANCED.match(self.message.strip())
        return match.group(1) if match else None


class _SessionError(Exception):
    """Opening a session failed; carries the result to report."""

    def __init__(self, result: SendResult) -> None:
        super().__init__(result.message)
        self.result = result


@dataclass(slots=True)
class _Connection:
    client: aiosmtplib.SMTP
    settings: SmtpSettings
    idle_since: float
    messages: int = 0


@dataclass(slots=True)
class _Pool:
    gate: asyncio.Semaphore
    size: int = 2
    idle: list[_Connection] = field(default_factory=list)
    closed: bool = False


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _reply_outcome(code: int) -> Outcome:
    """The outcome of a refusal reply: 530 means the sender must log in, not a bad message."""
    if code == 530:
        return "auth_failed"
    return "rejected" if code >= 500 else "deferred"


class SmtpMailer:
    """Sends raw messages over pooled SMTP connections, one pool per sender key.

    At most ``max_connections`` connections per sender are open at once (further sends wait); an
    idle connection older than ``max_idle_seconds`` or that carried ``max_messages`` messages is
    closed instead of reused. ``close()`` ends every connection; the mailer stays usable after.
    """

    def __init__(
        self,
        *,
        max_connections: int = 2,
        max_idle_seconds: float = 30.0,
        max_messages: int = 100,
        local_hostname: str | None = None,
    ) -> None:
        if max_connections < 1 or max_messages < 1:
            raise ValueError("max_connections and max_messages must be >= 1")
        self._max_connections = max_connections
        self._max_idle = max_idle_seconds
        self._max_messages = max_messages
        self._local_hostname = local_hostname
        self._pools: dict[str, _Pool] = {}

    # -- public -----------------------------------------------------------------------------

    async def send(
        self,
        sender_key: str,
        settings: SmtpSettings,
        envelope_from: str,
        recipients: Sequence[str],
        raw_bytes: bytes,
        *,
        max_connections: int | None = None,
    ) -> SendResult:
        """Deliver ``raw_bytes`` to ``recipients`` through the sender's server; never raises
        for network or SMTP failures."""
        if isinstance(recipients, str):
            recipients = [recipients]
        if not recipients:
            return SendResult("rejected", None, "no recipients", "rcpt")
        problem = _envelope_problem(envelope_from, recipients)
        if problem is not None:
            return SendResult("rejected", None, problem, "mail")
        size = max_connections or self._max_connections
        pool = self._pools.get(sender_key)
        if pool is None:
            pool = self._pools[sender_key] = _Pool(asyncio.Semaphore(size), size=size)
        elif pool.size != size:  # the sender's setting changed: sends from now on share the new gate
            pool.gate, pool.size = asyncio.Semaphore(size), size
        async with pool.gate:
            for attempt in (1, 2):
                try:
                    conn, reused = await self._acquire(pool, settings)
                except _SessionError as failure:
                    return failure.result
                try:
                    result, healthy = await self._transaction(conn, envelope_from, recipients, raw_bytes)
                except BaseException:  # cancelled mid-transaction: the session state is unknown
                    conn.client.close()
                    raise
                conn.messages += 1
                if healthy and not pool.closed:
                    conn.idle_since = asyncio.get_running_loop().time()
                    pool.idle.append(conn)
                elif healthy:  # close() ran while this send was in flight
                    await _quit(conn.client, min(settings.timeout, 5.0))
                else:
                    conn.client.close()
                # A pooled connection the server had silently dropped fails on its first command
                # with no reply at all: that says nothing about this message, so try a fresh one.
                if (
                    reused
                    and attempt == 1
                    and result.code is None
                    and result.stage == "mail"
                    and result.outcome == "deferred"
                ):
                    continue
                return result
        raise AssertionError("unreachable")  # pragma: no cover

    async def check_login(self, settings: SmtpSettings) -> tuple[bool, str | None]:
        """Connect, upgrade as configured and log in for real, then quit: ``(ok, error)``."""
        try:
            client = await self._open(settings)
        except _SessionError as failure:
            return False, failure.result.message
        await _quit(client, settings.timeout)
        return True, None

    async def close(self) -> None:
        """Politely end every idle connection (QUIT) and forget all pools."""
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            pool.closed = True
        await asyncio.gather(
            *(_quit(conn.client, min(conn.settings.timeout, 5.0)) for pool in pools.values() for conn in pool.idle)
        )

    async def prune(self) -> None:
        """Close idle connections past ``max_idle_seconds`` (call from a periodic job)."""
        now = asyncio.get_running_loop().time()
        stale: list[_Connection] = []
        for pool in self._pools.values():
            keep = [c for c in pool.idle if now - c.idle_since <= self._max_idle]
            stale.extend(c for c in pool.idle if now - c.idle_since > self._max_idle)
            pool.idle[:] = keep
        await asyncio.gather(*(_quit(c.client, min(c.settings.timeout, 5.0)) for c in stale))

    def idle_connections(self, sender_key: str) -> int:
        """How many open connections wait in the sender's pool (observability, tests)."""
        pool = self._pools.get(sender_key)
        return len(pool.idle) if pool else 0

    # -- internals --------------------------------------------------------------------------

    async def _acquire(self, pool: _Pool, settings: SmtpSettings) -> tuple[_Connection, bool]:
        now = asyncio.get_running_loop().time()
        while pool.idle:
            conn = pool.idle.pop()
            usable = (
                conn.client.is_connected
                and conn.settings == settings
                and now - conn.idle_since <= self._max_idle
                and conn.messages < self._max_messages
            )
            if usable:
                return conn, True
            await _quit(conn.client, min(conn.settings.timeout, 5.0))
        client = await self._open(settings)
        return _Connection(client, settings, now), False

    async def _local_name(self, settings: SmtpSettings) -> str:
        if settings.local_hostname:
            return settings.local_hostname
        if self._local_hostname is None:
            # socket.getfqdn can block on DNS: once per mailer, in a thread.
            self._local_hostname = await asyncio.to_thread(socket.getfqdn)
        return self._local_hostname

    async def _open(self, settings: SmtpSettings) -> aiosmtplib.SMTP:
        """A connected, greeted, upgraded and authenticated client, or :class:`_SessionError`."""
        client = aiosmtplib.SMTP(
            hostname=settings.host,
            port=settings.port,
            timeout=settings.timeout,
            use_tls=settings.security == "tls",
            start_tls=settings.security == "starttls",
            validate_certs=settings.validate_certs,
            cert_bundle=settings.cert_bundle,
            local_hostname=await self._local_name(settings),
        )
        try:
            await client.connect()
        except SMTPResponseException as exc:  # non-220 greeting, EHLO or STARTTLS refused
            client.close()
            raise _SessionError(SendResult("connect_failed", exc.code, exc.message, "connect")) from exc
        except (SMTPException, *_BROKEN) as exc:
            client.close()
            raise _SessionError(SendResult("connect_failed", None, _describe(exc), "connect")) from exc
        if settings.username:
            try:
                await client.login(settings.username, settings.password or "")
            except SMTPAuthenticationError as exc:
                client.close()
                raise _SessionError(SendResult("auth_failed", exc.code, exc.message, "auth")) from exc
            except _BROKEN as exc:
                client.close()
                raise _SessionError(SendResult("connect_failed", None, _describe(exc), "auth")) from exc
            except SMTPResponseException as exc:
                client.close()
                outcome: Outcome = "connect_failed" if 400 <= exc.code < 500 else "auth_failed"
                raise _SessionError(SendResult(outcome, exc.code, exc.message, "auth")) from exc
            except SMTPException as exc:  # no AUTH offered (often: it needs TLS first)
                client.close()
                raise _SessionError(SendResult("auth_failed", None, exc.message, "auth")) from exc
        if client.is_ehlo_or_helo_needed:
            # Greet now, so the transaction can look at the extensions (SIZE, SMTPUTF8).
            try:
                try:
                    await client.ehlo()
                except SMTPHeloError:
                    await client.helo()
            except SMTPResponseException as exc:
                client.close()
                raise _SessionError(SendResult("connect_failed", exc.code, exc.message, "connect")) from exc
            except (SMTPException, *_BROKEN) as exc:
                client.close()
                raise _SessionError(SendResult("connect_failed", None, _describe(exc), "connect")) from exc
        return client

    async def _transaction(
        self, conn: _Connection, envelope_from: str, recipients: Sequence[str], raw: bytes
    ) -> tuple[SendResult, bool]:
        """One MAIL/RCPT/DATA exchange: ``(result, connection still usable)``."""
        client = conn.client
        utf8 = not envelope_from.isascii() or not all(r.isascii() for r in recipients)
        encoding = "utf-8" if utf8 else "ascii"
        stage: Stage = "mail"
        try:
            if utf8 and not client.supports_extension("smtputf8"):
                message = "an address needs SMTPUTF8, which the server does not offer"
                return SendResult("unsendable", None, message, "mail"), True
            options = ["SMTPUTF8"] if utf8 else []
            if client.supports_extension("size"):
                options.insert(0, f"SIZE={len(raw)}")
            await _mail(client, envelope_from, options, encoding)
            stage = "rcpt"
            refused: list[tuple[str, int, str]] = []
            for recipient in recipients:
                try:
                    await _rcpt(client, recipient, encoding)
                except SMTPRecipientRefused as exc:
                    refused.append((recipient, exc.code, exc.message))
            if len(refused) == len(recipients):
                # Any temporary refusal makes the whole attempt temporary; 5xx only if all are.
                worst = min(refused, key=lambda r: (r[1] != 530, r[1] >= 500, r[1]))
                outcome = _reply_outcome(worst[1])
                return SendResult(outcome, worst[1], worst[2], "rcpt", tuple(refused)), await _reset(client)
            stage = "data"
            response = await client.data(raw)
        except SMTPResponseException as exc:
            return SendResult(
                _reply_outcome(exc.code), exc.code, exc.message, stage
            ), client.is_connected and await _reset(client)
        except _BROKEN as exc:
            client.close()
            if stage == "data":
                return SendResult("uncertain", None, f"connection lost after DATA: {_describe(exc)}", "data"), False
            return SendResult("deferred", None, _describe(exc), stage), False
        except (SMTPException, ValueError, UnicodeError) as exc:
            client.close()
            return SendResult("rejected" if stage != "data" else "uncertain", None, _describe(exc), stage), False
        return SendResult("sent", response.code, response.message, "data", tuple(refused)), client.is_connected


# MAIL and RCPT as aiosmtplib sends them, without its address parsing: ``email.utils.parseaddr``
# costs 50 us an address, more than the rest of the command, and every envelope address here was
# already checked by _envelope_problem (no spaces, controls, angle brackets; an @).
async def _mail(client: aiosmtplib.SMTP, sender: str, options: Sequence[str], encoding: str) -> None:
    response = await client.execute_command(b"MAIL", b"FROM:<" + sender.encode(encoding) + b">",
                                            *(option.encode("ascii") for option in options))
    if response.code != SMTPStatus.completed:
        raise SMTPSenderRefused(response.code, response.message, sender)


async def _rcpt(client: aiosmtplib.SMTP, recipient: str, encoding: str) -> None:
    response = await client.execute_command(b"RCPT", b"TO:<" + recipient.encode(encoding) + b">")
    if response.code not in (SMTPStatus.completed, SMTPStatus.will_forward):
        raise SMTPRecipientRefused(response.code, response.message, recipient)


def _envelope_problem(envelope_from: str, recipients: Sequence[str]) -> str | None:
    for address in (envelope_from, *recipients):
        if not address or re.search(r"[\x00-\x20\x7f<>]", address) or "@" not in address:
            return f"unusable envelope address: {address!r}"
    return None


async def _reset(client: aiosmtplib.SMTP) -> bool:
    """RSET after a refused transaction; a connection that cannot reset is not reused."""
    if not client.is_connected:
        return False
    try:
        response = await client.rset()
    except (SMTPException, *_BROKEN):
        client.close()
        return False
    return 200 <= response.code < 300


async def _quit(client: aiosmtplib.SMTP, timeout: float) -> None:
    """QUIT if possible, close in any case; errors here change nothing for anyone."""
    if client.is_connected:
        try:
            await client.quit(timeout=timeout)
        except (SMTPException, *_BROKEN):
            pass
    client.close()
