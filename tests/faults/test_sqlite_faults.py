"""SQLite faults in the middle of a tick: another process holding the file's write lock past the
engine's ``busy_timeout``, and the file system running out of space.

The lock is held by a separate Python process (``BEGIN EXCLUSIVE``); the full disk is a real tmpfs
of a few hundred kilobytes mounted for the test, filled to the last byte.
"""

from __future__ import annotations

import errno
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import CampaignEngine, ManualClock
from tests.conftest import SECRET
from tests.faults.helpers import HookedSink, assert_log_sound, log_prefix, start_campaign, tapped_logs, types_count

BUSY_TIMEOUT = 0.2  # seconds: the URL's timeout, so that a lock held "past busy_timeout" costs little

LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
conn.close()
print("released", flush=True)
"""


class SqliteLocker:
    """Another process holding the database's write lock (``BEGIN EXCLUSIVE``) until released."""

    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", LOCKER, str(path)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()  # blocks until the lock is held (or the process died)
        if line != "locked":
            self.proc.kill()
            raise AssertionError(f"the locking process did not get the lock: {line!r}, exit {self.proc.wait(10)}")

    def release(self) -> None:
        if self.proc.poll() is not None:
            return
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "released"
        assert self.proc.wait(10) == 0

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}?timeout={BUSY_TIMEOUT}"


async def test_lock_held_past_busy_timeout_while_outcomes_are_recorded(tmp_path: Path, clock: ManualClock) -> None:
    """Given a launched campaign, when another process locks the file after the SMTP server took
    the message and before the engine records it, then the engine logs a database retry, records
    the outcome once the lock is gone, and the next tick sends the rest."""
    db = tmp_path / "engine.db"
    lockers: list[SqliteLocker] = []
    with HookedSink() as sink, tapped_logs() as logs:
        async with CampaignEngine(sqlite_url(db), clock=clock, secret_key=SECRET,
                                  claim_batch=1) as engine:
            await start_campaign(engine, sink, ["ann@corp.io", "bob@corp.io"])
            acknowledged = await log_prefix(engine)

            def lock_now(_message: object) -> None:
                sink.on_message = None  # one fault: the second message goes through untouched
                lockers.append(SqliteLocker(db))

            sink.on_message = lock_now
            logs.on("database_retry", lambda _entry: [locker.release() for locker in lockers])
            try:
                first = await engine.tick()
            finally:
                for locker in lockers:
                    locker.kill()
            assert lockers, "the fault was never injected"
            assert (first.claimed, first.sent) == (1, 1)
            retries = logs.named("database_retry")
            assert retries and retries[0]["what"] == "record outcomes"
            assert "database is locked" in retries[0]["error"]

            second = await engine.tick()  # the fault is over: the other contact goes out
            assert (second.claimed, second.sent) == (1, 1)
            counts = await assert_log_sound(engine, sink, acknowledged)
            assert counts["email.claimed"] == counts["email.sent"] == 2
            assert sorted(m.rcpt_tos[0] for m in sink.messages) == ["ann@corp.io", "bob@corp.io"]


async def test_lock_held_past_busy_timeout_when_a_tick_starts(tmp_path: Path, clock: ManualClock) -> None:
    """Given a launched campaign, when the file is locked as a tick begins, then the tick fails
    with "database is locked" before any claim or SMTP, and once the lock is gone the next tick
    sends each email once."""
    db = tmp_path / "engine.db"
    with HookedSink() as sink:
        async with CampaignEngine(sqlite_url(db), clock=clock, secret_key=SECRET) as engine:
            setup = await start_campaign(engine, sink, ["ann@corp.io", "bob@corp.io"])
            acknowledged = await log_prefix(engine)
            locker = SqliteLocker(db)
            try:
                with pytest.raises(Exception, match="database is locked"):
                    await engine.tick()
                with pytest.raises(Exception, match="database is locked"):  # a command too: refused, clear
                    await engine.create_contact(setup.workspace_id, {"email": "cy@corp.io"})
            finally:
                locker.release()
                locker.kill()
            assert sink.messages == [] and await log_prefix(engine) == acknowledged

            report = await engine.tick()
            assert (report.claimed, report.sent) == (2, 2)
            counts = await assert_log_sound(engine, sink, acknowledged)
            assert counts["email.sent"] == 2 and counts["contact.created"] == 2
            assert (await engine.tick()).sent == 0 and await types_count(engine) == counts


class SmallDisk:
    """A tmpfs of ``size`` mounted at ``path`` (we run as root), which :meth:`fill` fills to the last
    byte with a file and :meth:`free` empties again."""

    def __init__(self, path: Path, size: str = "8m") -> None:
        path.mkdir()
        self.path = path
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a size-limited tmpfs here (root and CAP_SYS_ADMIN are needed): "
                        f"{done.stderr.strip()}")
        self.filler = path / "filler"

    def fill(self) -> None:
        """Write until the file system refuses another byte (ENOSPC)."""
        block = b"\0" * 65536
        with open(self.filler, "ab", buffering=0) as out:
            for size in (65536, 4096, 1):
                try:
                    while True:
                        out.write(block[:size])
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False, capture_output=True)


def truncate_wal(db: Path) -> None:
    """Checkpoint the WAL into the main file and cut it to zero bytes, so the next write must take
    new space (a WAL that already has room would absorb a small write on a full disk)."""
    conn = sqlite3.connect(db, timeout=10)
    try:
        busy, _frames, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        conn.close()
    assert busy == 0, "a reader held the WAL: it could not be truncated"
    assert (db.parent / (db.name + "-wal")).stat().st_size == 0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    disk = SmallDisk(tmp_path / "small")
    try:
        yield disk
    finally:
        disk.unmount()


async def test_disk_full(small_disk: SmallDisk, clock: ManualClock) -> None:
    """Given a launched campaign on a small file system, when the disk is full as a tick starts,
    the tick fails with "database or disk is full" before any SMTP; when it fills after the SMTP
    server took a message, the engine logs a retry and records the outcome once space is back;
    and after the fault the remaining contact is sent to, each exactly once."""
    db = small_disk.path / "engine.db"
    with HookedSink() as sink, tapped_logs() as logs:
        async with CampaignEngine(sqlite_url(db), clock=clock, secret_key=SECRET, claim_batch=1) as engine:
            await start_campaign(engine, sink, ["ann@corp.io", "bob@corp.io"])
            acknowledged = await log_prefix(engine)

            # Full before the tick: its claim cannot commit, so nothing may reach SMTP.
            truncate_wal(db)
            small_disk.fill()
            with pytest.raises(Exception, match="database or disk is full"):
                await engine.tick()
            assert sink.messages == [] and await log_prefix(engine) == acknowledged
            small_disk.free()

            # Full after SMTP took the message: the outcome waits for space, it is not lost.
            def fill_now(_message: object) -> None:
                sink.on_message = None
                truncate_wal(db)
                small_disk.fill()

            sink.on_message = fill_now
            logs.on("database_retry", lambda _entry: small_disk.free())
            first = await engine.tick()
            assert (first.claimed, first.sent) == (1, 1)
            retries = logs.named("database_retry")
            assert retries and retries[0]["what"] == "record outcomes"
            assert "database or disk is full" in retries[0]["error"]

            second = await engine.tick()
            assert (second.claimed, second.sent) == (1, 1)
            counts = await assert_log_sound(engine, sink, acknowledged)
            assert counts["email.claimed"] == counts["email.sent"] == 2
            assert sorted(m.rcpt_tos[0] for m in sink.messages) == ["ann@corp.io", "bob@corp.io"]
