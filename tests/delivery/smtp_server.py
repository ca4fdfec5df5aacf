"""A real SMTP server for tests: aiosmtpd on loopback that records and misbehaves on request.

``SmtpSink`` runs aiosmtpd's threaded ``Controller`` on 127.0.0.1 with a free port. It records every
message it accepts (envelope, raw bytes, Message-ID, the session it came over) and can be told, at
any time through ``sink.behaviour``, to answer a given reply at connect / MAIL / RCPT / DATA, to
drop the connection after receiving a message, or to stall at a stage. With ``users`` it offers
AUTH (PLAIN, LOGIN) and refuses MAIL before login; with ``tls_context`` it offers STARTTLS, and
with ``implicit_tls=True`` it speaks TLS from the first byte.

Scenario tests reuse it::

    with SmtpSink() as sink:
        settings = SmtpSettings(host=sink.host, port=sink.port, security="none")
        ...
        assert sink.messages[0].message_id == "<enr_x.1@example.com>"
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import socket
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

Stage = Literal["connect", "mail", "rcpt", "data"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def make_self_signed_cert(directory: Path, hostname: str = "localhost", *,
                          with_ip: bool = True) -> tuple[Path, Path]:
    """Write a self-signed certificate for ``hostname`` (and 127.0.0.1 unless ``with_ip`` is false);
    return (cert, key) paths.

    The certificate is its own CA, so its path also works as a client ``cert_bundle``.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(hostname)]
                                        + ([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))] if with_ip else [])),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / "sink-cert.pem"
    key_path = directory / "sink-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def server_tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    return context


@dataclass(frozen=True)
class SinkBehaviour:
    """How the sink answers. Replies are full SMTP lines such as ``"451 4.7.1 try later"``.

    ``connect_reply`` replaces the 220 greeting (and the connection is then closed);
    ``rcpt_replies`` answers per recipient address, ``rcpt_reply`` every other one;
    ``data_reply`` is the final reply after the message (which is then *not* recorded unless it
    is 2xx); ``drop_after_data`` records the message and closes without replying;
    ``stall_at`` waits ``stall_seconds`` (or until the client gives up) before answering.
    """

    connect_reply: str | None = None
    mail_reply: str | None = None
    rcpt_reply: str | None = None
    rcpt_replies: Mapping[str, str] = field(default_factory=dict)
    data_reply: str | None = None
    drop_after_data: bool = False
    stall_at: Stage | None = None
    stall_seconds: float = 30.0


@dataclass(frozen=True)
class ReceivedMessage:
    """One message as the server received it."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    message_id: str | None
    session: int
    auth_user: str | None
    tls: bool

    @property
    def headers(self) -> Any:
        return BytesHeaderParser().parsebytes(self.data)


class _SinkSMTP(SMTP):
    """aiosmtpd's server with a switchable greeting and a per-connection number."""

    sink: SmtpSink
    number: int | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.sink._live.add(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self.sink._live.discard(self)
        super().connection_lost(error)

    async def _handle_client(self) -> None:
        behaviour = self.sink.behaviour
        if behaviour.stall_at == "connect":
            await asyncio.sleep(behaviour.stall_seconds)
        if behaviour.connect_reply is not None:
            await self.push(behaviour.connect_reply)
            assert self.transport is not None
            self.transport.close()
            return
        await super()._handle_client()


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_EHLO(
        self, server: _SinkSMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        self.sink._count_session(server)
        session.host_name = hostname
        return responses

    async def handle_HELO(self, server: _SinkSMTP, session: Session, envelope: Envelope, hostname: str) -> str:
        self.sink._count_session(server)
        session.host_name = hostname
        return f"250 {server.hostname}"

    async def handle_MAIL(
        self, server: _SinkSMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        behaviour = self.sink.behaviour
        if self.sink.users is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        if behaviour.stall_at == "mail":
            await asyncio.sleep(behaviour.stall_seconds)
        if behaviour.mail_reply is not None:
            return behaviour.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: _SinkSMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        behaviour = self.sink.behaviour
        if behaviour.stall_at == "rcpt":
            await asyncio.sleep(behaviour.stall_seconds)
        reply = behaviour.rcpt_replies.get(address, behaviour.rcpt_reply)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: _SinkSMTP, session: Session, envelope: Envelope) -> str:
        behaviour = self.sink.behaviour
        if behaviour.stall_at == "data":
            await asyncio.sleep(behaviour.stall_seconds)
        if behaviour.drop_after_data:
            self.sink._record(server, session, envelope)
            assert server.transport is not None
            server.transport.close()
            await asyncio.sleep(3600)  # cancelled when aiosmtpd sees the connection is gone
        reply = behaviour.data_reply or "250 2.0.0 OK queued"
        if reply.startswith("2"):
            self.sink._record(server, session, envelope)
        return reply


class SmtpSink:
    """A recording aiosmtpd server on loopback; use as a context manager (or start/stop)."""

    host = "127.0.0.1"

    def __init__(
        self,
        *,
        users: Mapping[str, str] | None = None,
        tls_context: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
        behaviour: SinkBehaviour | None = None,
        idle_timeout: float = 300.0,
        smtputf8: bool = True,
    ) -> None:
        self.port = free_port()
        self.users = dict(users) if users is not None else None
        self.behaviour = behaviour or SinkBehaviour()
        self.auth_attempts: list[tuple[str, bool]] = []
        self._messages: list[ReceivedMessage] = []
        self._sessions = 0
        self._lock = threading.Lock()
        self._live: set[_SinkSMTP] = set()
        kwargs: dict[str, Any] = {
            "hostname": self.host,
            "port": self.port,
            "server_hostname": "sink.test",
            "ident": "campaign-engine test sink",
            "timeout": idle_timeout,
            "enable_SMTPUTF8": smtputf8,  # False: a server that cannot take non-ASCII addresses
        }
        if users is not None:
            kwargs.update(authenticator=self._authenticate, auth_require_tls=False)
        if implicit_tls:
            if tls_context is None:
                raise ValueError("implicit_tls needs a tls_context")
            kwargs["ssl_context"] = tls_context
        elif tls_context is not None:
            kwargs["tls_context"] = tls_context
        self._controller = _SinkController(self, _Handler(self), **kwargs)

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> SmtpSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        """Close the open client connections, then stop the server thread.

        aiosmtpd's ``Controller.stop`` stops the loop with connections still open; closing them
        first keeps the tests free of unclosed-transport warnings.
        """
        loop = self._controller.loop
        if loop.is_running():
            asyncio.run_coroutine_threadsafe(self._close_connections(), loop).result(timeout=5)
        self._controller.stop()

    async def _close_connections(self) -> None:
        for server in list(self._live):
            if server.transport is not None:
                # abort, not close: a TLS close would wait for the client's close_notify.
                server.transport.abort()  # type: ignore[attr-defined]
        for _ in range(50):
            if not self._live:
                break
            await asyncio.sleep(0.01)

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- what happened ----------------------------------------------------------------------

    @property
    def messages(self) -> list[ReceivedMessage]:
        with self._lock:
            return list(self._messages)

    @property
    def sessions(self) -> int:
        """Connections that got as far as EHLO/HELO (the controller's own probe does not)."""
        with self._lock:
            return self._sessions

    def by_message_id(self, message_id: str) -> list[ReceivedMessage]:
        return [m for m in self.messages if m.message_id == message_id]

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()
            self._sessions = 0

    # -- called from the server thread ------------------------------------------------------

    def _count_session(self, server: _SinkSMTP) -> None:
        with self._lock:
            if server.number is None:
                self._sessions += 1
                server.number = self._sessions

    def _record(self, server: _SinkSMTP, session: Session, envelope: Envelope) -> None:
        data = envelope.original_content or b""
        message_id = BytesHeaderParser().parsebytes(data).get("Message-ID")
        auth = session.auth_data
        user = auth.login.decode() if isinstance(auth, LoginPassword) else None
        message = ReceivedMessage(
            mail_from=envelope.mail_from or "",
            rcpt_tos=tuple(envelope.rcpt_tos),
            data=data,
            message_id=str(message_id).strip() if message_id is not None else None,
            session=server.number or 0,
            auth_user=user,
            tls=session.ssl is not None
            or (server.transport is not None and server.transport.get_extra_info("ssl_object") is not None),
        )
        with self._lock:
            self._messages.append(message)

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and self.users is not None
            and self.users.get(auth_data.login.decode()) == auth_data.password.decode()
        )
        login = auth_data.login.decode() if isinstance(auth_data, LoginPassword) else "?"
        with self._lock:
            self.auth_attempts.append((login, ok))
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


class _SinkController(Controller):
    def __init__(self, sink: SmtpSink, handler: _Handler, **kwargs: Any) -> None:
        self._sink = sink
        super().__init__(handler, **kwargs)

    def factory(self) -> _SinkSMTP:
        server = _SinkSMTP(self.handler, **self.SMTP_kwargs)
        server.sink = self._sink
        return server
