"""The event store held in memory: the real SQLite store on a private database in RAM, gone at close.

It is :class:`~events.backends.sqlite.SqliteEventStore` itself (the same appends, version checks,
hash chain, encryption, inline projections through the same projector, the same reads), opened on
a database file of its own in a RAM-backed folder (``/dev/shm`` where the system has one, else the
temporary folder) and deleted when the store closes. :meth:`events.store.EventStore.open` opens it
for SQLAlchemy's in-memory spellings, ``sqlite+aiosqlite://`` and ``sqlite+aiosqlite:///:memory:``.

Why a file in RAM rather than SQLite's own ``:memory:``: that database exists once per
connection, while the store needs one writer and several readers on one log that see it as a file
in WAL mode lets them (a reader keeps reading committed data while a write transaction is open,
which the projector's rebuild and many commands rely on). SQLite's in-process ways of sharing a
memory database give that up: the ``memdb`` VFS has no WAL and refuses readers while a writer holds
its lock, and a shared cache refuses a reader while the writer changes the schema. A file in RAM
keeps the store's behaviour exactly and still writes nothing to disk.

For tests and trials: the log lives as long as the store is open (a process that dies leaves
its folder behind in ``/dev/shm``, removed with the next reboot).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from events.backends.sqlite import SqliteEventStore, sqlite_busy_timeout_ms
from events.vault import Vault

RAM_FOLDER = Path("/dev/shm")
"""Linux's RAM-backed folder; where it is missing or not writable the temporary folder is used."""


def _ram_folder() -> str | None:
    """The folder to create the store's own folder in (None: the system's temporary folder)."""
    if RAM_FOLDER.is_dir() and os.access(RAM_FOLDER, os.W_OK | os.X_OK):
        return str(RAM_FOLDER)
    return None


@dataclass
class MemoryEventStore(SqliteEventStore):
    """The SQLite store on a private database in RAM; its folder is removed at :meth:`close`."""

    folder: str | None = None
    """The store's own folder (holding the database, its WAL and shared-memory files)."""

    @classmethod
    async def open(cls, url: str, vault: Vault, now: Callable[[], datetime], *,
                   create: bool = True) -> MemoryEventStore:
        busy_timeout = sqlite_busy_timeout_ms(url)  # a bad timeout is refused before anything is opened
        folder = tempfile.mkdtemp(prefix="campaign-engine-", dir=_ram_folder())
        try:
            file_url = f"sqlite+aiosqlite:///{folder}/events.db"
            write, read = cls._engines(file_url, busy_timeout)
            store: MemoryEventStore = await cls._opened(file_url, vault, now, write, read, create=create)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        store.folder = folder
        return store

    async def close(self) -> None:
        await super().close()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
