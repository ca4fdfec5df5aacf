"""Reading a sender's mailbox over IMAP (aioimaplib): replies and bounces come in this way.

The reader is stateless: the caller keeps a :class:`Checkpoint` (the folder's UIDVALIDITY and the
highest UID already handed over) and passes it back on the next poll, so a new process, or a
new reader, resumes exactly where the last one stopped.

Delivery is *at least once*, never *at most once*: :meth:`MailboxReader.fetch_new` persists
nothing. The caller must store the returned checkpoint in the same transaction as the events it
derives from the messages (a crash in between re-reads the batch instead of dropping it), and
must deduplicate by Message-ID, because:

- a UIDVALIDITY change (folder recreated, server migrated or re-indexed) makes every old UID
  meaningless, so the reader resyncs and returns the whole folder again;
- a crash between fetching and committing returns the same batch again.

Every failure (refused connection, TLS error, rejected login, missing folder, timeout, a server
hanging up) raises :class:`MailboxError`, whose ``kind`` lets the caller mark the sender
disconnected and say why.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, TypeVar

import structlog
from aioimaplib import aioimaplib as _imap

Security = Literal["none", "starttls", "tls"]
ErrorKind = Literal["connection", "tls", "auth", "folder", "timeout", "protocol"]

_T = TypeVar("_T")

_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]", re.IGNORECASE)
_UIDNEXT = re.compile(rb"\[UIDNEXT (\d+)\]", re.IGNORECASE)
_FETCH_START = re.compile(rb"^\d+ FETCH \(", re.IGNORECASE)
_UID = re.compile(rb"\bUID (\d+)", re.IGNORECASE)
_LOGOUT_TIMEOUT = 2.0
log = structlog.get_logger("campaign_engine.imap")


@dataclass(frozen=True, slots=True)
class ImapSettings:
    """Where and how to log in to one sender's mailbox.

    ``security``: ``"tls"`` (implicit TLS, usually port 993), ``"starttls"`` (upgrade a plain
    connection, usually port 143; refused if the server does not offer it, never downgraded) or
    ``"none"`` (plain text; for tests and trusted networks). ``timeout`` bounds connecting and
    each command (for a FETCH: each pause in the data). ``ssl_context`` overrides the default
    verifying context, e.g. to trust a test CA.
    """

    host: str
    port: int
    username: str
    password: str = field(repr=False)
    security: Security = "tls"
    folder: str = "INBOX"
    timeout: float = 30.0
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """How far a folder has been read: valid only while the folder keeps this UIDVALIDITY."""

    uidvalidity: int
    last_uid: int


class FetchedMessage(NamedTuple):
    """One message: its UID in the folder and its full RFC 822 bytes, unparsed."""

    uid: int
    raw: bytes


@dataclass(frozen=True, slots=True)
class FetchResult:
    """What one poll found.

    ``checkpoint`` is the position after these messages: store it with their effects.
    ``resynced`` is true when the given checkpoint was missing or stale (another UIDVALIDITY)
    and the folder was read from its start. ``more`` is true when ``max_messages`` cut the batch
    short: poll again to get the rest.
    """

    messages: list[FetchedMessage]
    checkpoint: Checkpoint
    resynced: bool = False
    more: bool = False


class MailboxError(Exception):
    """The mailbox could not be read; ``kind`` says why, so the sender can be marked disconnected.

    ``auth`` (login refused) and ``folder`` (no such folder) need the user to fix the settings;
    ``connection``, ``tls``, ``timeout`` and ``protocol`` may be transient or configuration.
    """

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.message = message

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


class MailboxReader:
    """Fetches new messages from IMAP folders, one short connection per call.

    ``max_messages`` caps one call (a resync of a large folder comes in several polls, each with
    a checkpoint, instead of one huge read); ``batch_size`` caps the messages per UID FETCH.
    """

    def __init__(self, *, max_messages: int = 500, batch_size: int = 50) -> None:
        if max_messages < 1 or batch_size < 1:
            raise ValueError("max_messages and batch_size must be positive")
        self._max_messages = max_messages
        self._batch_size = batch_size

    async def fetch_new(self, settings: ImapSettings, checkpoint: Checkpoint | None) -> FetchResult:
        """Messages of ``settings.folder`` after ``checkpoint``, or all of them on a resync.

        Messages are read with ``BODY.PEEK[]`` so their ``\\Seen`` flag is left alone. The caller
        must deduplicate by Message-ID (see the module docstring).
        """

        async def read(client: _imap.IMAP4) -> FetchResult:
            uidvalidity, uidnext = await _select(client, settings.folder)
            resync = checkpoint is None or checkpoint.uidvalidity != uidvalidity
            last_uid = 0 if checkpoint is None or resync else checkpoint.last_uid
            if uidnext is not None and uidnext <= last_uid + 1:
                return FetchResult([], Checkpoint(uidvalidity, last_uid), resync)
            uids = await _search_after(client, last_uid)
            batch = uids[: self._max_messages]
            messages: list[FetchedMessage] = []
            for start in range(0, len(batch), self._batch_size):
                chunk = batch[start : start + self._batch_size]
                messages.extend(await _fetch(client, chunk))
            # the checkpoint moves past every UID searched, even one expunged before its FETCH
            new_last = max(batch, default=last_uid)
            return FetchResult(messages, Checkpoint(uidvalidity, new_last), resync, len(uids) > len(batch))

        return await _run(settings, read)

    async def check_login(self, settings: ImapSettings) -> tuple[bool, str | None]:
        """Can we log in and open the folder? ``(True, None)`` or ``(False, reason)``; never raises.

        The folder is opened too, because a login that works with a folder that does not exist
        would still fail every poll.
        """

        async def probe(client: _imap.IMAP4) -> None:
            await _select(client, settings.folder)

        try:
            await _run(settings, probe)
        except MailboxError as exc:
            return False, str(exc)
        return True, None


async def check_login(settings: ImapSettings) -> tuple[bool, str | None]:
    """Module-level shortcut for :meth:`MailboxReader.check_login`."""
    return await MailboxReader().check_login(settings)


# -- connection ---------------------------------------------------------------------------


async def _run(settings: ImapSettings, operation: Callable[[_imap.IMAP4], Awaitable[_T]]) -> _T:
    """:func:`_run_session`, with every failure in the log as well as raised: a poll that fails
    (a dropped connection mid-FETCH, say) leaves nothing else behind but the unmoved checkpoint."""
    try:
        return await _run_session(settings, operation)
    except MailboxError as exc:
        error = exc.message.replace(settings.password, "***") if settings.password else exc.message
        log.warning("imap_failed", host=settings.host, port=settings.port, folder=settings.folder, kind=exc.kind,
                    error=error[:300])
        raise


async def _run_session(settings: ImapSettings, operation: Callable[[_imap.IMAP4], Awaitable[_T]]) -> _T:
    """Connect, log in, run ``operation``, log out; map every failure to :class:`MailboxError`.

    aioimaplib does not fail pending commands when the server hangs up, so the operation races
    a "connection lost" future: a dropped connection fails at once instead of at the timeout.
    """
    loop = asyncio.get_running_loop()
    lost: asyncio.Future[Exception | None] = loop.create_future()

    def on_lost(exc: Exception | None) -> None:
        if not lost.done():
            lost.set_result(exc)

    context = _ssl_context(settings)
    client: _imap.IMAP4 | None = None
    try:
        client = _imap.IMAP4(
            settings.host,
            settings.port,
            timeout=settings.timeout,
            conn_lost_cb=on_lost,
            ssl_context=context if settings.security == "tls" else None,
        )
        work = asyncio.ensure_future(_session(client, settings, context, operation))
        try:
            racers: set[asyncio.Future[Any]] = {work, lost}
            done, _pending = await asyncio.wait(racers, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not work.done():  # the connection dropped first, or our caller cancelled us
                _cancel_background(client)
                work.cancel()
                with contextlib.suppress(BaseException):
                    await work
        if work not in done:
            reason = lost.result() if lost.done() else None
            raise MailboxError("connection", f"the server closed the connection ({reason or 'EOF'})")
        result = work.result()  # re-raises the session's own failure, mapped below
        await _logout(client)
        return result
    except MailboxError:
        raise
    except (TimeoutError, _imap.CommandTimeout) as exc:
        raise MailboxError("timeout", f"no answer from {settings.host}:{settings.port} in time") from exc
    except (ssl.SSLError, ssl.CertificateError) as exc:
        raise MailboxError("tls", f"TLS with {settings.host}:{settings.port} failed: {exc}") from exc
    except OSError as exc:
        raise MailboxError("connection", f"cannot connect to {settings.host}:{settings.port}: {exc}") from exc
    except (_imap.AioImapException, ValueError) as exc:
        raise MailboxError("protocol", f"unexpected IMAP exchange: {exc}") from exc
    finally:
        if client is not None:
            _close(client)


async def _session(
    client: _imap.IMAP4,
    settings: ImapSettings,
    context: ssl.SSLContext | None,
    operation: Callable[[_imap.IMAP4], Awaitable[_T]],
) -> _T:
    await _wait_greeting(client, settings.timeout)
    if settings.security == "starttls" and context is not None:  # _ssl_context never gives None here
        await _starttls(client, settings, context)
    response = await client.login(_quote(settings.username), settings.password)
    if response.result != "OK":
        raise MailboxError("auth", f"login refused for {settings.username}: {_text(response)}")
    return await operation(client)


async def _wait_greeting(client: _imap.IMAP4, timeout: float) -> None:
    """Connect and wait for the greeting and the first CAPABILITY answer.

    Not ``IMAP4.wait_hello_from_server``: when a server greets but never answers CAPABILITY, its
    ``wait_for`` deadlocks on cancellation (the waiter must retake a lock that aioimaplib's
    background "welcome" task holds forever). Here the timeout cancels that task first.
    """
    await asyncio.wait_for(client._client_task, timeout)  # refused, unreachable, TLS failures
    waiter = asyncio.ensure_future(client.protocol.wait("AUTH|NONAUTH"))
    done, _pending = await asyncio.wait({waiter}, timeout=timeout)
    if waiter in done:
        waiter.result()
        return
    _cancel_background(client)
    waiter.cancel()
    with contextlib.suppress(BaseException):
        await waiter
    raise TimeoutError("no IMAP greeting")


def _cancel_background(client: _imap.IMAP4) -> None:
    """Cancel aioimaplib's own tasks (the greeting handler), which no timeout ever ends."""
    for task in list(client.protocol.tasks) + list(client.tasks):
        task.cancel()


def _ssl_context(settings: ImapSettings) -> ssl.SSLContext | None:
    if settings.security == "none":
        return None
    if settings.ssl_context is not None:
        return settings.ssl_context
    return ssl.create_default_context(ssl.Purpose.SERVER_AUTH)


async def _starttls(client: _imap.IMAP4, settings: ImapSettings, context: ssl.SSLContext) -> None:
    """Upgrade the plain connection (aioimaplib has no STARTTLS of its own).

    After the server's OK, the transport is wrapped with ``loop.start_tls``; the capabilities
    are asked for again, as RFC 3501 requires (those sent in clear text cannot be trusted).
    """
    protocol = client.protocol
    if "STARTTLS" not in protocol.capabilities:
        raise MailboxError("tls", f"{settings.host}:{settings.port} does not offer STARTTLS")
    command = _imap.Command("STARTTLS", protocol.new_tag(), loop=protocol.loop)
    response = await asyncio.wait_for(protocol.execute(command), settings.timeout)
    if response.result != "OK":
        raise MailboxError("tls", f"STARTTLS refused: {_text(response)}")
    loop = asyncio.get_running_loop()
    transport = await asyncio.wait_for(
        loop.start_tls(protocol.transport, protocol, context, server_hostname=settings.host),
        settings.timeout,
    )
    if transport is None:
        raise MailboxError("tls", "the connection closed during the TLS handshake")
    protocol.transport = transport
    await asyncio.wait_for(protocol.capability(), settings.timeout)


async def _logout(client: _imap.IMAP4) -> None:
    """Say goodbye politely, but never fail a successful read because the goodbye failed."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.protocol.logout(), _LOGOUT_TIMEOUT)


def _close(client: _imap.IMAP4) -> None:
    _cancel_background(client)
    transport = client.protocol.transport
    if transport is not None and not transport.is_closing():
        transport.close()
    if not client._client_task.done():
        client._client_task.cancel()


# -- commands -----------------------------------------------------------------------------


async def _select(client: _imap.IMAP4, folder: str) -> tuple[int, int | None]:
    """SELECT the folder; return its UIDVALIDITY and UIDNEXT (``None`` if the server omits it)."""
    response = await client.select(_quote(encode_mailbox_name(folder)))
    if response.result != "OK":
        raise MailboxError("folder", f"cannot open folder {folder!r}: {_text(response)}")
    uidvalidity: int | None = None
    uidnext: int | None = None
    for line in response.lines:
        if not isinstance(line, bytes | bytearray):
            continue
        if match := _UIDVALIDITY.search(line):
            uidvalidity = int(match.group(1))
        if match := _UIDNEXT.search(line):
            uidnext = int(match.group(1))
    if uidvalidity is None:
        raise MailboxError("protocol", f"the server sent no UIDVALIDITY for {folder!r}")
    return uidvalidity, uidnext


async def _search_after(client: _imap.IMAP4, last_uid: int) -> list[int]:
    """UIDs greater than ``last_uid``, ascending.

    ``UID n:*`` always matches the last message, even when its UID is below ``n`` (``*`` is the
    highest UID and a range has no order), so the result is filtered, not trusted.
    """
    response = await client.uid_search(f"UID {last_uid + 1}:*", charset=None)
    if response.result != "OK":
        raise MailboxError("protocol", f"UID SEARCH failed: {_text(response)}")
    uids: set[int] = set()
    for line in response.lines[:-1]:  # the last line is the tagged "completed" text
        # aioimaplib strips the leading "SEARCH" from the untagged line; accept it either way
        tokens = bytes(line).split()
        if tokens and tokens[0].upper() == b"SEARCH":
            tokens = tokens[1:]
        if all(token.isdigit() for token in tokens):
            uids.update(int(token) for token in tokens)
    return sorted(uid for uid in uids if uid > last_uid)


async def _fetch(client: _imap.IMAP4, uids: list[int]) -> list[FetchedMessage]:
    """UID FETCH the full bytes of ``uids``; unsolicited FETCH lines (flag changes) are ignored."""
    wanted = set(uids)
    response = await client.uid("fetch", _uid_set(uids), "(UID BODY.PEEK[])")
    if response.result != "OK":
        raise MailboxError("protocol", f"UID FETCH failed: {_text(response)}")
    found: dict[int, bytes] = {}
    uid: int | None = None
    body: bytes | None = None

    def finish() -> None:
        if uid is not None and body is not None and uid in wanted:
            found[uid] = body

    for line in response.lines:
        if isinstance(line, bytearray):  # the literal: the message itself
            body = bytes(line)
            continue
        if _FETCH_START.match(line):
            finish()
            uid, body = None, None
        if uid is None and (match := _UID.search(line)):  # before or after the literal
            uid = int(match.group(1))
    finish()
    return [FetchedMessage(u, found[u]) for u in sorted(found)]


# -- encoding -----------------------------------------------------------------------------


def encode_mailbox_name(name: str) -> str:
    """Encode a folder name in IMAP's modified UTF-7 (RFC 3501 section 5.1.3)."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            encoded = base64.b64encode("".join(pending).encode("utf-16-be")).decode("ascii")
            out.append("&" + encoded.rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return "".join(out)


def _quote(value: str) -> str:
    """An IMAP quoted string, so spaces and specials in names and folders survive."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _uid_set(uids: list[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``"1:3,7"``: compact ranges keep the command line short."""
    parts: list[str] = []
    ordered = sorted(set(uids))
    start = prev = ordered[0]
    for uid in ordered[1:] + [0]:
        if uid == prev + 1:
            prev = uid
            continue
        parts.append(str(start) if start == prev else f"{start}:{prev}")
        start = prev = uid
    return ",".join(parts)


def _text(response: _imap.Response) -> str:
    lines = [bytes(line) for line in response.lines if isinstance(line, bytes | bytearray)]
    return (lines[-1] if lines else b"").decode("utf-8", "replace").strip() or response.result
