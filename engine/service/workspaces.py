"""Workspaces and their API keys: create, authenticate, list, create more, revoke.

A key is ``ce_`` + 43 random URL-safe characters. Only its SHA-256 is stored (in the
``api_key.created`` event and the ``rm_api_keys`` read model); the plaintext is returned once, to
whoever created it. Keys and their workspace share the stream ``workspace-<id>``.

Choices the contract leaves open:
- Workspace names are unique, compared trimmed and case-insensitively (ASCII letters), so that
  ``--workspace NAME`` on the command line names one workspace: a duplicate is 409
  ``workspace_exists``.
- ``last_used_at`` is not an event (one per request would swamp the log): authentication writes
  it into ``api_key_usage``, outside the log, at most once a minute per key and process, so it
  is exact to the minute. A failure to write it never fails the request.
- Revoking is checked and appended under the log's write lock, so two concurrent revocations can
  never leave a workspace without a key (the second gets 409 ``last_api_key``).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError

from engine.clock import Clock
from engine.errors import Conflict, NotFound, ValidationFailed
from engine.service.base import Reads, new_id
from events.catalog import workspace as we
from events.registry import format_time
from events.store import EventStore
from projections import tables as t

log = structlog.get_logger("campaign_engine.keys")

KEY_PREFIX_LENGTH = 8  # the contract's ``prefix``: the key's first 8 characters
INITIAL_KEY_NAME = "initial"  # the key created with its workspace
LAST_USED_RESOLUTION = timedelta(minutes=1)
MAX_NAME_LENGTH = 255


@dataclass(frozen=True, slots=True)
class Workspace:
    """A created workspace. ``api_key`` is the plaintext key, returned this once only."""

    id: str
    name: str
    api_key: str
    monthly_limit: int | None
    require_approval: bool


@dataclass(frozen=True, slots=True)
class ApiKeyOwner:
    """Who a live key belongs to: its workspace, and the key's own id (for ``api_key:<id>`` actors)."""

    workspace_id: str
    key_id: str


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_api_key() -> str:
    return "ce_" + secrets.token_urlsafe(32)


def _name(value: Any, field: str = "name") -> str:
    """A trimmed name of 1-255 characters, or ValidationFailed naming ``field``."""
    if not isinstance(value, str) or not value.strip() or len(value.strip()) > MAX_NAME_LENGTH:
        raise ValidationFailed([{"field": field, "message": f"{field} must be 1-{MAX_NAME_LENGTH} characters"}])
    return value.strip()


class WorkspaceService:
    """Workspaces and API keys."""

    def __init__(self, store: EventStore, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self.reads = Reads(store)
        self._key_noted: dict[str, datetime] = {}  # key id -> when its use was last written

    # -- workspaces -----------------------------------------------------------------------------
    async def create_workspace(self, name: str, monthly_limit: int | None = None,
                               require_approval: bool = False, *, actor: str | None = None) -> Workspace:
        name = _name(name)
        if monthly_limit is not None and monthly_limit < 0:
            raise ValidationFailed([{"field": "monthly_limit", "message": "must be >= 0"}])
        ws_id = new_id("ws", self.clock.now())
        key = new_api_key()
        async with self.store.transaction() as conn:  # the log's write lock: no twin can slip in
            existing = await self.reads.all(select(t.workspaces.c.id, t.workspaces.c.name).where(
                func.lower(t.workspaces.c.name) == func.lower(name)).limit(1), conn)
            if existing:
                twin = existing[0]
                raise Conflict("workspace_exists", f"a workspace named {twin['name']!r} already exists ({twin['id']})",
                               {"id": twin["id"], "name": twin["name"]})
            await self.store.append(f"workspace-{ws_id}", [
                we.WorkspaceCreated(workspace_id=ws_id, name=name, monthly_limit=monthly_limit,
                                    require_approval=require_approval),
                self._key_created(ws_id, key, INITIAL_KEY_NAME),
            ], 0, workspace_id=ws_id, metadata={"actor": actor} if actor else None, conn=conn)
        return Workspace(ws_id, name, key, monthly_limit, require_approval)

    async def has_workspaces(self) -> bool:
        async with self.store.reading() as c:
            return (await c.execute(select(t.workspaces.c.id).limit(1))).first() is not None

    async def list_workspaces(self) -> list[dict[str, Any]]:
        """Every workspace with its number of live keys (for the command line; no REST route lists them)."""
        w, k = t.workspaces.c, t.api_keys.c
        live = (select(k.workspace_id, func.count().label("keys")).where(k.revoked.is_(False))
                .group_by(k.workspace_id).subquery())
        rows = await self.reads.all(
            select(w.id, w.name, w.monthly_limit, w.require_approval, w.created_at, live.c["keys"])
            .select_from(t.workspaces.outerjoin(live, live.c.workspace_id == w.id))
            .order_by(w.created_at, w.id))
        return [{"id": r["id"], "name": r["name"], "monthly_limit": r["monthly_limit"],
                 "require_approval": r["require_approval"], "created_at": r["created_at"],
                 "api_keys": int(r["keys"] or 0)} for r in rows]

    async def find_workspace(self, ref: str) -> str:
        """The id of the workspace ``ref`` names: its id, or its name (case-insensitive)."""
        w = t.workspaces.c
        rows = await self.reads.all(select(w.id).where((w.id == ref) | (func.lower(w.name) == func.lower(ref.strip())))
                                    .order_by(w.created_at).limit(1))
        if not rows:
            raise NotFound("workspace", ref)
        return str(rows[0]["id"])

    # -- authentication -------------------------------------------------------------------------
    async def authenticate_key(self, api_key: str) -> ApiKeyOwner | None:
        """The owner of a live key, found by its hash; None for an unknown or revoked key."""
        k = t.api_keys.c
        async with self.store.reading() as c:
            row = (await c.execute(select(k.workspace_id, k.key_id).where(k.key_hash == hash_api_key(api_key),
                                                                          k.revoked.is_(False)))).first()
        if row is None:
            return None
        owner = ApiKeyOwner(str(row[0]), str(row[1]))
        await self._note_key_use(owner.key_id)
        return owner

    async def authenticate(self, api_key: str) -> str | None:
        """The workspace of a live key, by its hash; None for an unknown or revoked key."""
        owner = await self.authenticate_key(api_key)
        return None if owner is None else owner.workspace_id

    async def _note_key_use(self, key_id: str) -> None:
        """Record the key's use in ``api_key_usage``, at most once per LAST_USED_RESOLUTION."""
        now = self.clock.now()
        noted = self._key_noted
        last = noted.get(key_id)
        if last is not None and timedelta(0) <= now - last < LAST_USED_RESOLUTION:
            return
        noted[key_id] = now
        usage = t.api_key_usage
        insert = postgresql_insert if self.store.dialect == "postgresql" else sqlite_insert
        statement = insert(usage).values(key_id=key_id, last_used_at=format_time(now))
        statement = statement.on_conflict_do_update(
            index_elements=[usage.c.key_id], set_={"last_used_at": statement.excluded.last_used_at},
            where=usage.c.last_used_at < statement.excluded.last_used_at)  # several processes: the latest wins
        try:
            async with self.store.write_engine.begin() as conn:
                await conn.execute(statement)
        except SQLAlchemyError as exc:  # bookkeeping: never a reason to refuse the request
            noted.pop(key_id, None)
            log.warning("api_key_usage_not_recorded", key_id=key_id, error=str(exc).splitlines()[0][:200])

    # -- keys -----------------------------------------------------------------------------------
    def _key_created(self, ws: str, key: str, name: str) -> we.ApiKeyCreated:
        return we.ApiKeyCreated(workspace_id=ws, key_id=new_id("key", self.clock.now()), key_hash=hash_api_key(key),
                                prefix=key[:KEY_PREFIX_LENGTH], name=name)

    async def list_api_keys(self, ws: str) -> list[dict[str, Any]]:
        """The workspace's live keys, oldest first: ``[{id, name, prefix, created_at, last_used_at}]``."""
        k, u = t.api_keys.c, t.api_key_usage.c
        rows = await self.reads.all(select(k.key_id, k.name, k.prefix, k.created_at, u.last_used_at)
                                    .select_from(t.api_keys.outerjoin(t.api_key_usage, u.key_id == k.key_id))
                                    .where(k.workspace_id == ws, k.revoked.is_(False)).order_by(k.created_at, k.key_id))
        return [{"id": r["key_id"], "name": r["name"], "prefix": r["prefix"], "created_at": r["created_at"],
                 "last_used_at": r["last_used_at"]} for r in rows]

    async def create_api_key(self, ws: str, body: Any, *, actor: str | None = None) -> dict[str, Any]:
        """A new key for the workspace: ``{id, name, key, prefix, created_at}``, the key shown this once."""
        if not isinstance(body, dict):
            raise ValidationFailed([{"field": "body", "message": "send a JSON object {name}"}])
        unknown = sorted(set(body) - {"name"})
        if unknown:
            raise ValidationFailed([{"field": f, "message": "unknown field"} for f in unknown])
        name = _name(body.get("name"))
        await self.reads.one(select(t.workspaces.c.id).where(t.workspaces.c.id == ws), "workspace", ws)
        key = new_api_key()
        event = self._key_created(ws, key, name)
        stored = await self.store.append(f"workspace-{ws}", [event], None, workspace_id=ws,
                                         metadata={"actor": actor} if actor else None)
        return {"id": event.key_id, "name": name, "key": key, "prefix": event.prefix,
                "created_at": format_time(stored[0].recorded_at), "last_used_at": None}

    async def revoke_api_key(self, ws: str, key_id: str, *, actor: str | None = None) -> dict[str, Any]:
        """Revoke a live key: it answers 401 from the commit on. The last live key is 409 last_api_key."""
        k = t.api_keys.c
        async with self.store.transaction() as conn:  # the log's write lock: the count cannot change under us
            live = [r["key_id"] for r in await self.reads.all(
                select(k.key_id).where(k.workspace_id == ws, k.revoked.is_(False)), conn)]
            if key_id not in live:
                raise NotFound("api_key", key_id)
            if len(live) == 1:
                raise Conflict("last_api_key", "this is the workspace's last API key: create another one first",
                               {"id": key_id})
            await self.store.append(f"workspace-{ws}", [we.ApiKeyRevoked(workspace_id=ws, key_id=key_id)], None,
                                    workspace_id=ws, metadata={"actor": actor} if actor else None, conn=conn)
        return {"id": key_id, "revoked": True}

    async def workspace_of_api_key(self, key_id: str) -> str:
        """The workspace of a live key id (so the command line can revoke by id alone)."""
        k = t.api_keys.c
        rows = await self.reads.all(select(k.workspace_id).where(k.key_id == key_id, k.revoked.is_(False)))
        if not rows:
            raise NotFound("api_key", key_id)
        return str(rows[0]["workspace_id"])


__all__ = ["ApiKeyOwner", "Workspace", "WorkspaceService", "hash_api_key"]
