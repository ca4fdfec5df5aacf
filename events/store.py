"""The append-only event store: what the engine and the projections may ask of it, and how to open one.

:class:`EventStore` is a protocol: the calls ``engine/``, ``projections/`` and the tests make, and
nothing else. Three implementations live under ``events/backends/``, and :meth:`EventStore.open`
picks one from the URL:

- ``events/backends/sqlite.py``: a SQLite file through aiosqlite (``BEGIN IMMEDIATE`` is the
  log's write lock; the hot paths talk to aiosqlite directly and translate its errors);
- ``events/backends/postgres.py``: PostgreSQL through asyncpg (``LOCK TABLE events IN EXCLUSIVE
  MODE``, one ``INSERT ... SELECT FROM unnest`` per append, ``NOTIFY`` at commit);
- ``events/backends/memory.py``: the SQLite store on a private in-memory database
  (``sqlite+aiosqlite://`` or ``sqlite+aiosqlite:///:memory:``), for fast tests: the same appends,
  chain, encryption and inline projections, nothing written to disk.

What they share (the append with its version checks, hash chain, encryption and encoding, the
decoding of rows, the personal-data keys) is written once, in ``events/backends/base.py``.

Every append takes the log's write lock, assigns positions under it and applies the inline
projections in the same transaction. Positions therefore commit in order on every backend, so a
reader that follows ``read_all(after=...)`` can never skip an event that committed late.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from events.registry import Event
from events.vault import Vault


class ConcurrencyError(Exception):
    """Another writer appended to the stream first: reload, decide again, retry."""

    def __init__(self, stream: str, expected: int | None, actual: int) -> None:
        super().__init__(f"stream {stream}: expected version {expected}, found {actual}")
        self.stream, self.expected, self.actual = stream, expected, actual


class StoredEvent(NamedTuple):
    """An event as it lives in the log, with its clear (decrypted) domain event.

    Immutable like the events it carries; a named tuple because reads build one per row and a
    tuple is built in one step where a frozen dataclass sets its ten fields one by one.
    """

    position: int
    stream: str
    version: int
    type: str
    type_version: int
    event: Event
    metadata: dict[str, Any]
    recorded_at: datetime
    workspace_id: str
    hash: str


@dataclass(frozen=True, slots=True)
class AppendBatch:
    """Events for one stream. ``expected_version``: exact version (0 = new stream) or None (any)."""

    stream: str
    events: Sequence[Event]
    expected_version: int | None = None
    workspace_id: str | None = None


class InlineProjector(Protocol):
    """Applies appended events to read models inside the append's own transaction."""

    async def apply(self, conn: AsyncConnection, events: Sequence[StoredEvent]) -> None: ...


AfterCommit = Callable[[Sequence[StoredEvent]], Awaitable[None]]
"""Called with a write transaction's events once it has committed (never for a rolled-back one)."""


def is_memory_url(url: str) -> bool:
    """True for SQLAlchemy's spellings of an in-memory SQLite database (no file, or ``:memory:``).

    Such a database exists once per connection; the store needs several connections on one log,
    so these URLs open the in-memory backend, which shares one database between its connections.
    """
    if not url.startswith("sqlite"):
        return False
    database = make_url(url).database
    return database in (None, "", ":memory:")


class EventStore(Protocol):
    """The log as the engine uses it. Open one with :meth:`EventStore.open`; close it with :meth:`close`.

    ``write_engine`` and ``read_engine`` are exposed because read models and a few commands run
    their own SQL beside the log (in the log's database, so in its transactions); ``dialect``
    tells them which SQL to write. ``inline`` projectors run inside every append's transaction;
    ``after_commit`` hooks run after a write transaction commits; on PostgreSQL, ``notify_channel``
    is notified at commit when ``notify_when`` says the committed events create work.
    """

    url: str
    vault: Vault
    write_engine: AsyncEngine
    read_engine: AsyncEngine
    inline: list[InlineProjector]
    after_commit: list[AfterCommit]
    notify_channel: str | None
    notify_when: Callable[[Sequence[StoredEvent]], bool] | None

    @classmethod
    async def open(cls, url: str, vault: Vault, now: Callable[[], datetime], *,
                   create: bool = True) -> EventStore:
        """The store for ``url``: SQLite file, in-memory SQLite or PostgreSQL, by the URL's scheme.

        ``create`` makes the log's tables and triggers if they are missing.
        """
        if is_memory_url(url):
            from events.backends.memory import MemoryEventStore

            return await MemoryEventStore.open(url, vault, now, create=create)
        if url.startswith("sqlite"):
            from events.backends.sqlite import SqliteEventStore

            return await SqliteEventStore.open(url, vault, now, create=create)
        if url.startswith("postgresql"):
            from events.backends.postgres import PostgresEventStore

            return await PostgresEventStore.open(url, vault, now, create=create)
        raise ValueError(f"no event store for this database URL: {make_url(url).drivername!r} "
                         "(use sqlite+aiosqlite:///FILE or postgresql+asyncpg://...)")

    @property
    def now(self) -> Callable[[], datetime]:
        """The clock the store stamps ``recorded_at`` (and ages idempotency claims) with."""
        ...

    @property
    def dialect(self) -> str:
        """SQLAlchemy's dialect name of the log's database: ``sqlite`` or ``postgresql``."""
        ...

    async def close(self) -> None: ...

    # -- transactions --------------------------------------------------------------------------
    def transaction(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A write transaction holding the log's lock; appends inside it (``conn=``) share it."""
        ...

    def reading(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A read-only connection seeing committed data."""
        ...

    # -- append -------------------------------------------------------------------------------
    async def append(self, stream: str, events: Sequence[Event], expected_version: int | None, *,
                     workspace_id: str, metadata: dict[str, Any] | None = None,
                     conn: AsyncConnection | None = None) -> list[StoredEvent]: ...

    async def append_many(self, batches: Sequence[AppendBatch], *, workspace_id: str,
                          metadata: dict[str, Any] | None = None,
                          conn: AsyncConnection | None = None) -> list[StoredEvent]:
        """Append to several streams atomically: all or nothing."""
        ...

    async def erase_subject(self, conn: AsyncConnection, subject_id: str) -> None:
        """Destroy a subject's key: its personal fields in every event become unreadable."""
        ...

    # -- read ---------------------------------------------------------------------------------
    async def read_stream(self, stream: str, after_version: int = 0,
                          conn: AsyncConnection | None = None) -> list[StoredEvent]: ...

    async def read_streams(self, streams: Sequence[str], conn: AsyncConnection | None = None) -> list[StoredEvent]:
        """Every event of several streams, ordered by position."""
        ...

    async def read_all(self, after: int = 0, limit: int = 1000, *, workspace_id: str | None = None,
                       types: Sequence[str] | None = None, stream: str | None = None,
                       until_position: int | None = None,
                       conn: AsyncConnection | None = None) -> list[StoredEvent]: ...

    async def last_position(self, conn: AsyncConnection | None = None) -> int: ...

    async def stream_version(self, stream: str, conn: AsyncConnection | None = None) -> int: ...

    async def query(self, q: Any, conn: AsyncConnection | None = None) -> list[StoredEvent]:
        """Run a SELECT over the events table built by the caller; decode and decrypt like read_all."""
        ...


__all__ = ["AfterCommit", "AppendBatch", "ConcurrencyError", "EventStore", "InlineProjector", "StoredEvent",
           "is_memory_url"]

