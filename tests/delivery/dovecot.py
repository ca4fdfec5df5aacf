"""A real Dovecot IMAP server for tests: ``dovecot -F -c <config>`` as a child process.

Everything (config, passwd files, mail, sockets, logs) lives in one temporary folder that is
removed on :meth:`Dovecot.stop`. Traps handled here:

- Dovecot's mail processes refuse to run as root, so when the tests run as root the mail
  folder belongs to ``nobody`` and the temporary folder is made traversable (mode 0755) under a
  world-traversable parent (the system temp dir, not pytest's private ``tmp_path``).
- A passwd-file is re-read at most once a second, so each user has a passwd-file of its own
  (``passwd-file .../users/%u``): a new user's file is opened on first use and can log in at
  once. Changing an existing user's password waits until Dovecot sees the change.
- The auth penalty (up to 15 s per failed login from one IP) is disabled by moving anvil's
  ``anvil-auth-penalty`` socket away; ``auth_failure_delay`` is 0.
- Optional TLS (``tls=True``): a self-signed certificate for ``localhost`` / ``127.0.0.1``, with
  STARTTLS on the plain port and implicit TLS on ``tls_port``; ``ssl_context()`` trusts it.
"""

from __future__ import annotations

import contextlib
import grp
import imaplib
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from engine.delivery.inbound.imap import ImapSettings, Security, encode_mailbox_name

DOVECOT_CANDIDATES = ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot")
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@+-]*$")
_APPENDUID = re.compile(rb"\[APPENDUID (\d+) (\d+)\]")


class DovecotUnavailable(RuntimeError):
    """The dovecot binary is missing: install the ``dovecot-imapd`` package."""


def find_dovecot() -> str:
    """Path of the dovecot binary (``$DOVECOT_BIN`` first), or a clear error if absent."""
    candidates = [os.environ.get("DOVECOT_BIN", ""), shutil.which("dovecot") or "", *DOVECOT_CANDIDATES]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise DovecotUnavailable(
        "dovecot is not installed (looked for $DOVECOT_BIN, dovecot on PATH, "
        f"{', '.join(DOVECOT_CANDIDATES)}); install it with `apt-get install -y dovecot-imapd` "
        "(scripts/test does this on CI)"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class Dovecot:
    """One Dovecot instance with IMAP on a free loopback port (``port``); see the module doc."""

    def __init__(self, *, tls: bool = False, host: str = "127.0.0.1", start_timeout: float = 15.0) -> None:
        self.host = host
        self.tls = tls
        self.port = 0
        self.tls_port = 0
        self._start_timeout = start_timeout
        self._binary = find_dovecot()
        self._root: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._passwords: dict[str, str] = {}

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Dovecot:
        """Write the config, start Dovecot and wait until it greets on its IMAP port."""
        if self._process is not None:
            raise RuntimeError("Dovecot already started")
        root = Path(tempfile.mkdtemp(prefix="dovecot-test-"))
        self._root = root
        _check_traversable(root.parent)
        root.chmod(0o755)
        for sub in ("users", "mail", "run", "state"):
            (root / sub).mkdir(mode=0o755)
        uid, gid = _mail_owner()
        if os.geteuid() == 0:
            os.chown(root / "mail", uid, gid)
        if self.tls:
            _write_certificate(root)
        last_log = ""
        for _attempt in range(3):  # a free port can be taken between our probe and Dovecot's bind
            self.port = free_port(self.host)
            self.tls_port = free_port(self.host) if self.tls else 0
            (root / "dovecot.conf").write_text(self._config(root, uid, gid))
            log = root / "dovecot.log"
            log.write_text("")
            with open(root / "stderr.log", "wb") as stderr:
                self._process = subprocess.Popen(
                    [self._binary, "-F", "-c", str(root / "dovecot.conf")],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    start_new_session=True,  # its own process group: stop() can end its children
                )
            if self._wait_ready():
                return self
            last_log = self.log()
            self._terminate()
            if "in use" not in last_log:
                break
        self.stop()
        raise RuntimeError(f"Dovecot did not start; its log:\n{last_log}")

    def stop(self) -> None:
        """Stop Dovecot and every child process, then delete the temporary folder; idempotent."""
        self._terminate()
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    def __enter__(self) -> Dovecot:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self._start_timeout
        assert self._process is not None
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), 1) as s:
                s.settimeout(2)
                if s.recv(64).startswith(b"* OK"):
                    return True
            time.sleep(0.05)
        return False

    def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)  # the group of the child we started
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)

    def _config(self, root: Path, uid: int, gid: int) -> str:
        # As another user than root, every Dovecot process runs as that user.
        user = pwd.getpwuid(os.geteuid()).pw_name
        group = grp.getgrgid(os.getegid()).gr_name
        non_root = (
            ""
            if os.geteuid() == 0
            else (f"default_internal_user = {user}\ndefault_login_user = {user}\ndefault_internal_group = {group}\n")
        )
        if self.tls:
            ssl_conf = f"ssl = yes\nssl_cert = <{root / 'cert.pem'}\nssl_key = <{root / 'key.pem'}\n"
        else:
            ssl_conf = "ssl = no\n"
        return f"""\
protocols = imap
listen = {self.host}
base_dir = {root / "run"}
state_dir = {root / "state"}
log_path = {root / "dovecot.log"}
{non_root}{ssl_conf}disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
auth_cache_size = 0
mail_location = maildir:~/Maildir
mail_uid = {uid}
mail_gid = {gid}
first_valid_uid = 1
first_valid_gid = 1
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root / "users"}/%u
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {root / "users"}/%u
  default_fields = home={root / "mail"}/%u
}}
service imap-login {{
  inet_listener imap {{
    port = {self.port}
  }}
  inet_listener imaps {{
    port = {self.tls_port}
  }}
}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    path = anvil-auth-penalty-disabled
  }}
}}
"""

    # -- users and mail --------------------------------------------------------------------

    def add_user(self, name: str, password: str) -> None:
        """Create ``name`` (or change its password); it can log in when this returns."""
        name = _check_username(name)
        if ":" in password or "\n" in password:
            raise ValueError("a passwd-file password cannot contain ':' or a newline")
        path = self._require_root() / "users" / name
        old_mtime = path.stat().st_mtime if path.exists() else None
        path.write_text(f"{name}:{{PLAIN}}{password}::::::\n")
        path.chmod(0o644)  # read by the auth process, which runs as the dovecot user
        self._passwords[name] = password
        if old_mtime is not None:
            # Dovecot notices a change by mtime (in seconds) and size: make sure one differs,
            # then wait out its once-a-second re-read.
            if int(path.stat().st_mtime) == int(old_mtime):
                os.utime(path, (old_mtime + 1, old_mtime + 1))
            self._wait_login(name, password)

    def password(self, name: str) -> str:
        return self._passwords[_check_username(name)]

    def settings(
        self,
        user: str,
        *,
        folder: str = "INBOX",
        security: Security = "none",
        timeout: float = 5.0,
        password: str | None = None,
    ) -> ImapSettings:
        """Settings for ``engine.delivery.inbound.imap`` that log in as ``user`` (over TLS if asked)."""
        port = self.tls_port if security == "tls" else self.port
        return ImapSettings(
            host=self.host,
            port=port,
            username=user,
            password=self.password(user) if password is None else password,
            security=security,
            folder=folder,
            timeout=timeout,
            ssl_context=self.ssl_context() if security != "none" else None,
        )

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts this server's self-signed certificate."""
        if not self.tls:
            raise RuntimeError("this Dovecot runs without TLS")
        return ssl.create_default_context(cafile=str(self._require_root() / "cert.pem"))

    def append(self, user: str, raw: bytes, folder: str = "INBOX") -> int:
        """Deliver ``raw`` into ``folder`` (created if missing) by IMAP APPEND; return its UID."""
        with self._imap(user) as client:
            mailbox = _quote(encode_mailbox_name(folder))
            status, data = client.append(mailbox, None, None, raw)
            if status != "OK" and folder.upper() != "INBOX":
                client.create(mailbox)
                status, data = client.append(mailbox, None, None, raw)
            if status != "OK":
                raise RuntimeError(f"APPEND to {folder!r} failed: {data!r}")
            match = _APPENDUID.search(b" ".join(d for d in data if isinstance(d, bytes)))
            if match is None:
                raise RuntimeError(f"APPEND gave no APPENDUID: {data!r}")
            return int(match.group(2))

    def create_folder(self, user: str, folder: str) -> None:
        with self._imap(user) as client:
            status, data = client.create(_quote(encode_mailbox_name(folder)))
            if status != "OK":
                raise RuntimeError(f"CREATE {folder!r} failed: {data!r}")

    def delete_folder(self, user: str, folder: str) -> None:
        with self._imap(user) as client:
            status, data = client.delete(_quote(encode_mailbox_name(folder)))
            if status != "OK":
                raise RuntimeError(f"DELETE {folder!r} failed: {data!r}")

    def recreate_folder(self, user: str, folder: str) -> None:
        """Delete and create ``folder`` again: it gets a new UIDVALIDITY (INBOX cannot be deleted)."""
        self.delete_folder(user, folder)
        self.create_folder(user, folder)

    def expunge(self, user: str, uid: int, folder: str = "INBOX") -> None:
        """Delete one message for good, as a mail client emptying the trash would."""
        with self._imap(user) as client:
            client.select(_quote(encode_mailbox_name(folder)))
            status, data = client.uid("STORE", str(uid), "+FLAGS.SILENT", r"(\Deleted)")
            if status != "OK":
                raise RuntimeError(f"STORE on UID {uid} failed: {data!r}")
            client.expunge()

    def flags(self, user: str, uid: int, folder: str = "INBOX") -> set[str]:
        """The flags of one message (to check that reading it left ``\\Seen`` alone)."""
        with self._imap(user) as client:
            client.select(_quote(encode_mailbox_name(folder)), readonly=True)
            status, data = client.uid("FETCH", str(uid), "(FLAGS)")
            line = data[0] if status == "OK" and data and isinstance(data[0], bytes) else b""
            match = re.search(rb"FLAGS \(([^)]*)\)", line)
            if match is None:
                raise RuntimeError(f"FETCH FLAGS of UID {uid} failed: {data!r}")
            return set(match.group(1).decode().split())

    def uidvalidity(self, user: str, folder: str = "INBOX") -> int:
        with self._imap(user) as client:
            status, data = client.status(_quote(encode_mailbox_name(folder)), "(UIDVALIDITY)")
            match = re.search(rb"UIDVALIDITY (\d+)", data[0] if data and isinstance(data[0], bytes) else b"")
            if status != "OK" or match is None:
                raise RuntimeError(f"STATUS {folder!r} failed: {data!r}")
            return int(match.group(1))

    def log(self) -> str:
        """Dovecot's log so far (useful in assertion messages)."""
        if self._root is None:
            return ""
        parts = []
        for name in ("dovecot.log", "stderr.log"):
            with contextlib.suppress(OSError):
                parts.append((self._root / name).read_text(errors="replace"))
        return "\n".join(parts)

    @contextlib.contextmanager
    def _imap(self, user: str) -> Iterator[imaplib.IMAP4]:
        client = imaplib.IMAP4(self.host, self.port, timeout=10)
        try:
            client.login(user, self.password(user))
            yield client
        finally:
            with contextlib.suppress(Exception):
                client.logout()

    def _wait_login(self, name: str, password: str) -> None:
        deadline = time.monotonic() + 5
        while True:
            client = imaplib.IMAP4(self.host, self.port, timeout=10)
            try:
                client.login(name, password)
                return
            except imaplib.IMAP4.error:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
            finally:
                with contextlib.suppress(Exception):
                    client.logout()

    def _require_root(self) -> Path:
        if self._root is None:
            raise RuntimeError("Dovecot not started")
        return self._root


def _check_username(name: str) -> str:
    # Dovecot lower-cases user names (auth_username_format = %Lu) and %u names a file here.
    lowered = name.lower()
    if not _USERNAME.match(lowered):
        raise ValueError(f"unsupported test user name {name!r}")
    return lowered


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _mail_owner() -> tuple[int, int]:
    """Who owns the mail: ``nobody`` when we are root (Dovecot refuses root), else ourselves."""
    if os.geteuid() != 0:
        return os.geteuid(), os.getegid()
    nobody = pwd.getpwnam("nobody")
    return nobody.pw_uid, nobody.pw_gid


def _check_traversable(folder: Path) -> None:
    """Every folder above the mail folder must be searchable by ``nobody`` (others +x)."""
    if os.geteuid() != 0:
        return
    for parent in [folder, *folder.parents]:
        if not parent.stat().st_mode & 0o001:
            raise RuntimeError(
                f"{parent} is not traversable by other users; Dovecot's mail processes (nobody) "
                "could not reach the mail folder. Set TMPDIR to a world-traversable folder."
            )


def _write_certificate(root: Path) -> None:
    """A self-signed certificate for localhost and 127.0.0.1, valid for a day (the sink's maker)."""
    from tests.delivery.smtp_server import make_self_signed_cert

    cert, key = make_self_signed_cert(root)
    cert.rename(root / "cert.pem")
    key.rename(root / "key.pem")
    (root / "key.pem").chmod(0o600)
