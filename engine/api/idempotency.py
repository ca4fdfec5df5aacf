"""Idempotency-Key records: the first response to a (workspace, key) is kept and replayed.

An HTTP concern, so it lives with the API rather than in the event store. The rows sit in the
log's database (``events.schema.idempotency``, created with it) because a claim must be visible
to every node at once, and because deleting a workspace deletes its rows with the rest.

A row is written when a request claims its key, before the command runs, with status 0 and an
empty response (:data:`PENDING`): the (workspace, key) primary key lets exactly one concurrent
request win. The winner then fills in its response. The columns are the ones earlier versions
wrote, so old rows (always complete) read the same and nothing migrates.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from events import schema
from events.registry import format_time
from events.store import EventStore

PENDING = 0
"""``status_code`` of a claimed key whose first request has not answered yet (no HTTP status is 0)."""

Found = tuple[str, int, str]
"""(request hash, status, response JSON) stored for a key."""


class IdempotencyRecords:
    """Claim, read, release and complete the Idempotency-Key rows of one engine's database."""

    def __init__(self, store: EventStore) -> None:
        self.store = store

    async def lookup(self, workspace_id: str, key: str) -> Found | None:
        """What is stored for this key, if anything; a claim still running reads as :data:`PENDING`."""
        table = schema.idempotency
        async with self.store.reading() as conn:
            row = (await conn.execute(select(table.c.request_hash, table.c.status_code, table.c.response)
                                      .where(table.c.workspace_id == workspace_id, table.c.key == key))).first()
        return None if row is None else (row[0], row[1], row[2])

    async def claim(self, workspace_id: str, key: str, request_hash: str, *, stale_after: timedelta) -> Found | None:
        """Claim ``key`` for a request about to run; None if claimed, else the row that holds it.

        The insert is its own short transaction, committed before the command starts, so a
        concurrent request with the same key sees the claim at once and its insert fails on the
        primary key instead of running the command a second time. A pending claim older than
        ``stale_after`` belonged to a process that died mid-request (a live request releases or
        completes its claim): it is taken over, else the key would stay blocked for good.
        """
        table = schema.idempotency
        where = (table.c.workspace_id == workspace_id, table.c.key == key)
        now = self.store.now()
        try:
            async with self.store.write_engine.begin() as conn:
                await conn.execute(table.delete().where(*where, table.c.created_at < format_time(now - stale_after),
                                                        table.c.status_code == PENDING))
                await conn.execute(table.insert().values(workspace_id=workspace_id, key=key,
                                                         request_hash=request_hash, response="",
                                                         status_code=PENDING, created_at=format_time(now)))
            return None
        except IntegrityError:
            found = await self.lookup(workspace_id, key)
            # Released between our insert and this read: report it pending, the caller polls again.
            return found if found is not None else (request_hash, PENDING, "")

    async def release(self, workspace_id: str, key: str, request_hash: str) -> None:
        """Drop a pending claim whose request died without a response, so a retry can run it."""
        table = schema.idempotency
        async with self.store.write_engine.begin() as conn:
            await conn.execute(table.delete().where(table.c.workspace_id == workspace_id, table.c.key == key,
                                                    table.c.request_hash == request_hash,
                                                    table.c.status_code == PENDING))

    async def complete(self, workspace_id: str, key: str, request_hash: str, status: int, response: str) -> None:
        """Record the first response: complete this request's pending claim, or insert the row.

        A complete row is never overwritten: the first response is the one every replay gets.
        """
        table = schema.idempotency
        where = (table.c.workspace_id == workspace_id, table.c.key == key)
        async with self.store.write_engine.begin() as conn:
            done = await conn.execute(table.update().where(*where, table.c.request_hash == request_hash,
                                                           table.c.status_code == PENDING)
                                      .values(status_code=status, response=response))
            if done.rowcount:
                return
            exists = (await conn.execute(select(table.c.key).where(*where))).first()
            if exists is None:
                await conn.execute(table.insert().values(workspace_id=workspace_id, key=key,
                                                         request_hash=request_hash, status_code=status,
                                                         response=response, created_at=format_time(self.store.now())))
