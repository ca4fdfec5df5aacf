"""Looking back at the log: replay read models, verify the hash chains, export, follow, history.

The CLI (``engine/cli_audit.py``) is a thin shell over these functions so that each can be tested
without a terminal. Nothing here appends an event: replays write read models only (in place, or
into another database), and ``verify`` opens the log read-only in one snapshot.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import func, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from engine.errors import EngineError
from engine.secret_key import ENV_VARIABLE, existing_secret, key_file_for
from events import schema
from events.chain import GENESIS, ChainProblem, event_hash
from events.registry import format_time, to_data
from events.store import EventStore, StoredEvent
from events.vault import Vault
from projections import tables as t
from projections.base import Projector, projection_state


class AuditError(EngineError):
    """Bad input or an impossible request: the CLI prints the message and exits 2, changing nothing."""

    exit_code = 2


class AuditNotFound(AuditError):
    """An unknown contact, enrollment or campaign: exit 1, like a failed look-up."""

    exit_code = 1


# -- opening databases ------------------------------------------------------------------------
def normalize_url(url: str) -> str:
    """Accept what people type (a file path, ``sqlite:///``, ``postgresql://``) and add the async driver."""
    if "://" not in url:
        return f"sqlite+aiosqlite:///{url}"
    for plain, driver in (("sqlite://", "sqlite+aiosqlite://"), ("postgresql://", "postgresql+asyncpg://"),
                          ("postgres://", "postgresql+asyncpg://")):
        if url.startswith(plain):
            return driver + url[len(plain):]
    return url


def _sqlite_file(url: str) -> Path | None:
    if not url.startswith("sqlite") or ":memory:" in url:
        return None
    return Path(make_url(url).database or "")


def same_database(a: str, b: str) -> bool:
    fa, fb = _sqlite_file(a), _sqlite_file(b)
    if fa is not None or fb is not None:
        return fa is not None and fb is not None and os.path.realpath(fa) == os.path.realpath(fb)
    ua, ub = make_url(a), make_url(b)
    return (ua.host, ua.port, ua.database) == (ub.host, ub.port, ub.database)


def _require_database(url: str) -> None:
    """Opening a missing SQLite file would create an empty database (and a new key): refuse instead."""
    path = _sqlite_file(url)
    if path is not None and not path.exists():
        raise AuditError(f"no database at {path}: pass --db or set CAMPAIGN_ENGINE_DB")


class AuditedEngine(Protocol):
    """What the audit tools read of an open engine: its log, its read models' builder, its vault.

    A protocol rather than the engine class itself, so that this module stays below the facade
    (``engine/cli_audit.py`` opens the engine and hands it here).
    """

    store: EventStore
    projector: Projector
    vault: Vault


async def engine_database(url: str) -> str:
    """Check that ``url`` names an existing engine database whose secret key is at hand, and
    return the URL with its async driver; AuditError (exit 2) otherwise.

    Without the key a fresh one would be generated and every personal field would fail to decrypt,
    so a missing key is an error here rather than a silent new key.
    """
    url = normalize_url(url)
    _require_database(url)
    if not os.environ.get(ENV_VARIABLE) and not key_file_for(url).exists():
        raise AuditError(f"no secret key for {url}: set {ENV_VARIABLE} or run beside the key file "
                         f"({key_file_for(url)})")
    probe = create_async_engine(url)
    try:
        if not await _has_events_table(probe):
            raise AuditError(f"no event log in {url} (is --db right?)")
    finally:
        await probe.dispose()
    return url


def _no_clock() -> datetime:
    raise RuntimeError("the audit tools never append")


def _secret_for(url: str) -> bytes:
    """The engine's secret key, from the environment or the key file beside the database; never new."""
    found = existing_secret(url)
    if found is None:
        raise AuditError(f"no secret key for {url}: set {ENV_VARIABLE} or run beside the key file "
                         f"({key_file_for(url)})")
    return found


@asynccontextmanager
async def open_log(url: str) -> AsyncIterator[EventStore]:
    """The raw log without projections: what ``verify`` needs, and nothing that could write.

    It needs the secret key: the hash chain is an HMAC under a key derived from it.
    """
    url = normalize_url(url)
    _require_database(url)
    vault = Vault(_secret_for(url))
    store = await EventStore.open(url, vault, _no_clock, create=False)
    try:
        await _refuse_another_key(store, vault, url)
        yield store
    finally:
        await store.close()


async def _refuse_another_key(store: EventStore, vault: Vault, url: str) -> None:
    """A wrong key is a configuration to fix (exit 2), not tampering: compare the database's key
    check value, read-only (a database from before key checks has none, and is verified as is)."""
    from sqlalchemy import select
    from sqlalchemy.exc import SQLAlchemyError

    from engine.errors import SecretKeyMismatch
    from events import schema

    try:
        async with store.reading() as conn:
            recorded = (await conn.execute(select(schema.key_check.c.check_value)
                                           .where(schema.key_check.c.id == 1))).scalar()
    except SQLAlchemyError:  # no key_check table yet
        return
    if recorded is not None and not vault.matches_key_check(recorded):
        raise SecretKeyMismatch(url, "from CAMPAIGN_ENGINE_SECRET_KEY or the key file")


def parse_moment(value: str, option: str) -> datetime:
    """ISO 8601 (``2026-01-05T09:30:00Z``, ``2026-01-05 09:30``, ``2026-01-05``); naive means UTC."""
    try:
        moment = datetime.fromisoformat(value.strip().replace("z", "Z"))
    except ValueError:
        raise AuditError(f"{option}: {value!r} is not an ISO 8601 time (e.g. 2026-01-05T09:30:00Z)") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# -- replay -----------------------------------------------------------------------------------
Progress = Callable[[str, int, int], None]


@dataclass
class ReplayResult:
    """What a replay did: events read, the position reached, and every rebuilt table's row count."""

    events_read: int
    position: int
    recorded_at: datetime | None
    into: str | None
    campaign_id: str | None
    tables: dict[str, dict[str, int]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    events_kept: int | None = None  # with a campaign filter: how many of the events read were applied


async def resolve_position(store: EventStore, until: datetime | None, position: int | None
                           ) -> tuple[int, list[str]]:
    """The log position a past moment corresponds to (the last event recorded at or before it)."""
    warnings: list[str] = []
    last = await store.last_position()
    e = schema.events.c
    if position is not None:
        if position < 0:
            raise AuditError(f"--position must be >= 0 (got {position})")
        if position > last:
            warnings.append(f"position {position} is beyond the end of the log ({last}): replaying to {last}")
            position = last
        return position, warnings
    assert until is not None
    stamp = format_time(until)  # fixed-width ISO strings compare like the times they hold
    async with store.reading() as conn:
        found = int((await conn.execute(select(func.max(e.position)).where(e.recorded_at <= stamp))).scalar() or 0)
        later = int((await conn.execute(select(func.count()).where(e.position <= found,
                                                                   e.recorded_at > stamp))).scalar() or 0)
    if later:
        warnings.append(f"{later} event(s) before position {found} are stamped after {stamp} (clock skew or a "
                        "clock set back); they are included: a replay is always a prefix of the log")
    return found, warnings


def campaign_filter(campaign_id: str, workspace_id: str) -> Callable[[StoredEvent], bool]:
    """Keep one campaign's events plus the campaign-less facts its read models need.

    Workspace, API key, sender, contact, list and suppression events carry no campaign id and are
    kept (contact events always: an unsubscribe from another campaign still marks the contact).
    Other campaigns' events, and other workspaces', are dropped.
    """

    def keep(ev: StoredEvent) -> bool:
        if ev.workspace_id != workspace_id:
            return False
        if ev.stream.startswith("contact-"):
            return True
        owner = getattr(ev.event, "campaign_id", None)
        return owner is None or owner == campaign_id

    return keep


async def _has_events_table(engine: AsyncEngine) -> bool:
    async with engine.connect() as conn:
        return bool(await conn.run_sync(lambda c: inspect(c).has_table(schema.events.name)))


async def _row_counts(engine: AuditedEngine, target: AsyncEngine) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    async with target.connect() as conn:
        for p in engine.projector.projections:
            out[p.name] = {tb.name: int((await conn.execute(select(func.count()).select_from(tb))).scalar() or 0)
                           for tb in p.tables}
    return out


async def _recorded_at(store: EventStore, position: int) -> datetime | None:
    if position <= 0:
        return None
    found = await store.read_all(position - 1, 1, until_position=position)
    return found[0].recorded_at if found else None


async def replay(engine: AuditedEngine, *, until: datetime | None = None, position: int | None = None,
                 campaign_id: str | None = None, into: str | None = None,
                 progress: Progress | None = None) -> ReplayResult:
    """Rebuild every projection from the log: in place (always to the end), or into another database.

    In place, a stop before the end or a campaign filter would leave the live read models lying
    about the present, so both need ``into``. Every check runs before anything is written.
    """
    if until is not None and position is not None:
        raise AuditError("give either --until or --position, not both")
    past = until is not None or position is not None
    if into is None and (past or campaign_id is not None):
        what = "--until/--position" if past else "--campaign"
        raise AuditError(f"{what} needs --into URL: in place, the live read models must always be rebuilt from "
                         "the whole log to its end, or they would lie about the present. Replay into another "
                         "database (e.g. --into sqlite:///past.db) to look at a past moment or one campaign.")
    store = engine.store
    warnings: list[str] = []
    stop = None
    if past:
        stop, warnings = await resolve_position(store, until, position)
    keep: Callable[[StoredEvent], bool] | None = None
    kept = [0]
    if campaign_id is not None:
        head = await store.read_stream(f"campaign-{campaign_id}")
        if not head:
            raise AuditNotFound(f"campaign {campaign_id} not found in the log")
        chosen = campaign_filter(campaign_id, head[0].workspace_id)

        def keep(ev: StoredEvent) -> bool:
            if chosen(ev):
                kept[0] += 1
                return True
            return False
    if into is None:
        read = await engine.projector.rebuild(store, progress=progress)
        reached = await store.last_position()
        return ReplayResult(read, reached, await _recorded_at(store, reached), None, None,
                            await _row_counts(engine, store.read_engine), warnings)
    into = normalize_url(into)
    if same_database(into, store.url):
        raise AuditError("--into names the engine's own database: replay into another database")
    target = create_async_engine(into)
    try:
        if await _has_events_table(target):
            raise AuditError(f"{into} holds an event log (a live engine database): refusing to overwrite its read "
                             "models with the past; replay into an empty database")
        async with target.begin() as conn:  # a replay target holds nothing else of ours: start afresh
            tables = [tb for p in engine.projector.projections for tb in p.tables] + [projection_state]
            await conn.run_sync(lambda c: [tb.drop(c, checkfirst=True) for tb in reversed(tables)])
            await engine.projector.create_schema(conn)
        reached = stop if stop is not None else await store.last_position()
        read = await engine.projector.rebuild(store, progress=progress, until_position=reached, target=target,
                                              event_filter=keep)
        if reached == 0:
            warnings.append("no event is that old: the read models are empty")
        return ReplayResult(read, reached, await _recorded_at(store, reached), into, campaign_id,
                            await _row_counts(engine, target), warnings, kept[0] if keep else None)
    finally:
        await target.dispose()


# -- verify -----------------------------------------------------------------------------------
@dataclass
class VerifyReport:
    """Result of ``audit verify``: counts, and every problem found (first = lowest position)."""

    streams: int = 0
    events: int = 0
    last_position: int = 0
    problems: list[ChainProblem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first(self) -> ChainProblem | None:
        return self.problems[0] if self.problems else None


@dataclass
class _Gap:
    """Versions missing from a stream, between two stored positions (``before`` None: at its end)."""

    stream: str
    first_version: int
    last_version: int
    after: int
    before: int | None


class _ChainScan:
    """Walks rows ordered by (stream, version) one at a time, so any log size fits in memory.

    It checks what :func:`events.chain.verify_rows` checks (versions 1..n, each hash over the content
    and the previous hash, the head in the streams table) but keeps going after a problem, resuming
    from the stored hash, so every altered event is named rather than only the first.
    """

    def __init__(self, report: VerifyReport, key: bytes | None = None) -> None:
        self.key = key
        self.report, self.gaps = report, list[_Gap]()
        self.stream: str | None = None
        self.version = self.position = 0
        self.prev = GENESIS
        self.head: tuple[int, str] | None = None

    def _problem(self, position: int | None, version: int | None, text_: str) -> None:
        self.report.problems.append(ChainProblem(position, self.stream or "", version, text_))

    def row(self, r: Any) -> None:
        if r.stream != self.stream:
            self.finish()
            self.stream, self.version, self.position, self.prev = r.stream, 0, 0, GENESIS
            self.head = None if r.head_version is None else (int(r.head_version), str(r.head_hash))
            self.report.streams += 1
        self.report.events += 1
        if r.version != self.version + 1:
            self.gaps.append(_Gap(r.stream, self.version + 1, r.version - 1, self.position, r.position))
            self._problem(r.position, r.version, f"version {r.version} where {self.version + 1} was expected: "
                                                 f"version(s) {self.version + 1}..{r.version - 1} were deleted")
        elif r.position <= self.position:
            self._problem(r.position, r.version, f"position {r.position} is not after the previous event's "
                                                 f"({self.position}): positions were rewritten")
        else:
            computed = event_hash(self.prev, stream=r.stream, version=r.version, type_name=r.type,
                                  type_version=r.type_version, data=r.data, metadata=r.metadata,
                                  recorded_at=r.recorded_at, workspace_id=r.workspace_id, key=self.key)
            if computed != r.hash:
                before = "" if r.version == 1 else " (or the hash of the one before it)"
                self._problem(r.position, r.version, f"hash mismatch: this event{before} was altered after it "
                                                     "was written")
        self.version, self.position, self.prev = r.version, r.position, r.hash

    def finish(self) -> None:
        if self.stream is None:
            return
        if self.head is None:
            self._problem(self.position, self.version, "the stream has no row in the streams table (head deleted)")
        elif self.head[0] > self.version:
            self.gaps.append(_Gap(self.stream, self.version + 1, self.head[0], self.position, None))
            self._problem(None, self.version + 1, f"the stream ends at version {self.version} but {self.head[0]} "
                                                  "were appended: its last event(s) were deleted")
        elif self.head[0] < self.version:
            self._problem(self.position, self.version, f"events beyond the recorded head (version {self.head[0]}): "
                                                       "inserted outside the store")
        elif self.head[1] != self.prev:
            self._problem(self.position, self.version, "the last event's hash differs from the recorded head: "
                                                       "the event was rewritten (hash recomputed)")
        self.stream = None


async def _triggers_warning(conn: Any) -> str | None:
    if conn.dialect.name == "postgresql":
        rows = (await conn.execute(text("SELECT tgname, tgenabled::text FROM pg_trigger "
                                        "WHERE tgrelid = 'events'::regclass AND NOT tgisinternal"))).all()
        enabled = {r[0] for r in rows if r[1] != "D"}
        wanted = {"events_no_update_delete", "events_no_truncate"}
    else:
        rows = (await conn.execute(text(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'events'"))).all()
        enabled = {r[0] for r in rows}
        wanted = {"events_no_update", "events_no_delete"}
    missing = sorted(wanted - enabled)
    if missing:
        return f"append-only trigger(s) missing or disabled: {', '.join(missing)} (the log can be edited)"
    return None


async def verify_log(store: EventStore, batch_size: int = 2000) -> VerifyReport:
    """Check every stream's chain and versions, the stream heads and the position sequence.

    One read-only snapshot; rows stream in partitions of ``batch_size``. Problems are sorted by
    position, so ``report.first`` is the earliest bad event (problems without a position last).
    """
    report = VerifyReport()
    scan = _ChainScan(report, store.vault.chain_key)
    e, s = schema.events, schema.streams
    rows_q = (select(e.c.position, e.c.stream, e.c.version, e.c.type, e.c.type_version, e.c.data, e.c.metadata,
                     e.c.recorded_at, e.c.workspace_id, e.c.hash, s.c.version.label("head_version"),
                     s.c.last_hash.label("head_hash"))
              .select_from(e.outerjoin(s, s.c.stream == e.c.stream)).order_by(e.c.stream, e.c.version)
              .execution_options(yield_per=batch_size))
    x = e.alias("x")
    prev_q = select(func.max(e.c.position)).where(e.c.position < x.c.position).scalar_subquery()
    gaps_q = (select(x.c.position, prev_q.label("prev")).where(
        x.c.position > 1, ~select(e.c.position).where(e.c.position == x.c.position - 1).exists())
        .order_by(x.c.position).limit(100))
    orphans_q = select(s.c.stream, s.c.version).where(~select(e.c.position).where(e.c.stream == s.c.stream).exists())
    async with store.read_engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn = await conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        async with conn.begin():
            if not await conn.run_sync(lambda c: inspect(c).has_table(e.name)):
                raise AuditError("no event log in this database (is --db right?)")
            result = await conn.stream(rows_q)
            async for part in result.partitions():
                for r in part:
                    scan.row(r)
            scan.finish()
            for stream, version in (await conn.execute(orphans_q)).all():
                scan.gaps.append(_Gap(stream, 1, version, 0, None))
                report.problems.append(ChainProblem(None, stream, 1, f"every event of the stream is missing (the "
                                                                     f"streams table records {version})"))
            first = (await conn.execute(select(func.min(e.c.position), func.max(e.c.position)))).one()
            report.last_position = int(first[1] or 0)
            holes = [(1, int(first[0]) - 1)] if first[0] is not None and first[0] > 1 else []
            holes += [(int(prev) + 1, int(pos) - 1) for pos, prev in (await conn.execute(gaps_q)).all()]
            warning = await _triggers_warning(conn)
    if warning:
        report.warnings.append(warning)
    for lo, hi in holes:
        report.problems.append(_explain_hole(lo, hi, scan.gaps))
    report.problems.sort(key=lambda p: (p.position is None, p.position or 0))
    return report


def _explain_hole(lo: int, hi: int, gaps: Sequence[_Gap]) -> ChainProblem:
    """Name the stream a run of missing positions most likely belonged to, when only one fits."""
    span = f"position {lo}" if lo == hi else f"positions {lo}..{hi}"
    fits = [g for g in gaps if g.after < lo and (g.before is None or hi < g.before)]
    fits = [g for g in fits if g.before is not None] or fits  # a gap straddling the hole beats a lost tail
    if len(fits) > 1:
        fits = [g for g in fits if g.last_version - g.first_version == hi - lo] or fits
    if len(fits) == 1:
        g = fits[0]
        return ChainProblem(lo, g.stream, g.first_version,
                            f"{span} missing: deleted event(s) of this stream (version(s) {g.first_version}.."
                            f"{g.last_version})")
    if fits:
        names = ", ".join(sorted({g.stream for g in fits})[:5])
        return ChainProblem(lo, "?", None, f"{span} missing: deleted event(s) of one of the streams {names}")
    return ChainProblem(lo, "?", None, f"{span} missing and no stream reports a matching missing version: a whole "
                                       "stream (with its head) was deleted, or a stream head was rewritten")


# -- export and tail --------------------------------------------------------------------------
def redact_secrets(value: Any) -> Any:
    """Drop encrypted secrets (``*_enc`` keys): they never leave the engine, not even as ciphertext."""
    if isinstance(value, dict):
        return {k: redact_secrets(v) for k, v in value.items() if not str(k).endswith("_enc")}
    if isinstance(value, list):
        return [redact_secrets(v) for v in value]
    return value


def export_record(ev: StoredEvent) -> dict[str, Any]:
    """One exported event. ``data`` is decrypted and upcast, so ``type_version`` is the version it now has."""
    return {"position": ev.position, "stream": ev.stream, "version": ev.version, "type": ev.type,
            "type_version": type(ev.event).VERSION, "data": redact_secrets(to_data(ev.event)),
            "metadata": redact_secrets(ev.metadata), "recorded_at": format_time(ev.recorded_at),
            "workspace_id": ev.workspace_id, "hash": ev.hash}


def event_filter(campaign_id: str | None, since: datetime | None) -> Callable[[StoredEvent], bool]:
    def keep(ev: StoredEvent) -> bool:
        if campaign_id is not None and getattr(ev.event, "campaign_id", None) != campaign_id:
            return False
        return since is None or ev.recorded_at >= since

    return keep


async def export_events(store: EventStore, *, campaign_id: str | None = None, since: datetime | None = None,
                        batch_size: int = 1000) -> AsyncIterator[StoredEvent]:
    """Events in log order, one batch in memory at a time (personal data decrypted by the store)."""
    after = 0
    if since is not None:  # skip the prefix recorded before ``since`` in one query
        e = schema.events.c
        async with store.reading() as conn:
            first = (await conn.execute(select(func.min(e.position)).where(
                e.recorded_at >= format_time(since)))).scalar()
        if first is None:
            return
        after = int(first) - 1
    keep = event_filter(campaign_id, since)
    while True:
        batch = await store.read_all(after, batch_size)
        if not batch:
            return
        for ev in batch:
            if keep(ev):
                yield ev
        after = batch[-1].position


async def follow(store: EventStore, after: int = 0, *, poll_seconds: float = 0.5, idle_exit: float | None = None,
                 campaign_id: str | None = None, batch_size: int = 500) -> AsyncIterator[StoredEvent]:
    """Existing events after ``after``, then new ones as they are appended (polling; positions commit
    in order, so nothing is skipped). Returns after ``idle_exit`` seconds without a new event."""
    if after < 0:
        raise AuditError(f"--after must be >= 0 (got {after})")
    keep = event_filter(campaign_id, None)
    loop = asyncio.get_running_loop()
    idle_since = loop.time()
    while True:
        batch = await store.read_all(after, batch_size)
        if batch:
            idle_since = loop.time()
            after = batch[-1].position
            for ev in batch:
                if keep(ev):
                    yield ev
            continue
        waited = loop.time() - idle_since
        if idle_exit is not None and waited >= idle_exit:
            return
        await asyncio.sleep(poll_seconds if idle_exit is None else min(poll_seconds, idle_exit - waited))


# -- history ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One line of a contact's story."""

    position: int
    at: datetime
    type: str
    campaign_id: str | None
    campaign: str | None
    step: int | None
    details: str


@dataclass
class ContactStory:
    """A contact's events across its own stream, its enrollments and its skips, in log order."""

    contact_id: str
    workspace_id: str
    email: str | None
    entries: list[HistoryEntry]


_IDS = {"enrollment_id", "campaign_id", "contact_id", "email_id", "step", "subject_id"}


def describe(ev: StoredEvent, senders: dict[str, str]) -> str:
    """A short human summary of an event's facts for the history table."""
    d = to_data(ev.event)
    sid = d.get("sender_id")
    sender = f"{senders.get(sid, '?')} ({sid})" if sid else None
    match ev.type:
        case "contact.created":
            if d.get("email") is None:
                return "personal data erased"
            name = " ".join(v for v in (d.get("first_name"), d.get("last_name")) if v)
            return ", ".join(v for v in (d["email"], name, d.get("company")) if v)
        case "contact.updated":
            changes = d.get("changes")
            return "changed: " + ", ".join(sorted(changes)) if changes else "changed (details erased)"
        case "contact.erased":
            return "personal data destroyed (key shredded)"
        case "email.scheduled":
            return f"due {d['due_at']}" + (f", sender {sender}" if sender else "")
        case "email.claimed" | "email.sent":
            extra = f", SMTP {d['smtp_code']}" if d.get("smtp_code") else ""
            return f"Message-ID {d['message_id']}, sender {sender}{extra}"
        case "email.bounced":
            return (f"{d['bounce_type']} bounce: {d['reason']} (status {d.get('status') or '-'}, "
                    f"code {d.get('code') or '-'}, via {d['source']})")
        case "email.replied":
            kind = "out-of-office auto-reply" if d.get("out_of_office") else "reply"
            return f"{kind}, Message-ID {d.get('message_id') or '-'}"
        case "email.opened":
            return "prefetch (not counted)" if d.get("prefetch") else f"opened ({d.get('user_agent') or '-'})"
        case "email.clicked":
            return f"clicked {d['url']}"
    return ", ".join(f"{k}: {v}" for k, v in d.items() if k not in _IDS and v not in (None, "", [], {}))


async def _lookup(engine: AuditedEngine, q: Any) -> list[Any]:
    async with engine.store.reading() as conn:
        return list((await conn.execute(q)).mappings().all())


async def contact_history(engine: AuditedEngine, *, email: str | None = None, enrollment_id: str | None = None,
                          workspace_id: str | None = None) -> list[ContactStory]:
    """One story per matching contact (an email can exist in several workspaces).

    ``email``: the contact's own stream, every enrollment of it and its skips. ``enrollment_id``:
    that enrollment's stream and the contact's own stream.
    """
    if (email is None) == (enrollment_id is None):
        raise AuditError("give exactly one of --contact EMAIL or --enrollment ID")
    c, en, sk = t.contacts.c, t.enrollments.c, t.skips.c
    plans: list[tuple[str, str, list[str], list[int]]] = []  # contact, workspace, streams, skip positions
    if email is not None:
        q = select(c.id, c.workspace_id).where(c.email_hash == engine.vault.lookup_hash(email))
        if workspace_id:
            q = q.where(c.workspace_id == workspace_id)
        found = await _lookup(engine, q.order_by(c.created_at, c.id))
        if not found:
            raise AuditNotFound(f"no contact with email {email}")
        for row in found:
            enrs = await _lookup(engine, select(en.id).where(en.contact_id == row["id"]))
            skips = await _lookup(engine, select(sk.position).where(sk.contact_id == row["id"]))
            plans.append((row["id"], row["workspace_id"], [f"contact-{row['id']}"] +
                          [f"enrollment-{r['id']}" for r in enrs], [int(r["position"]) for r in skips]))
    else:
        head = await engine.store.read_stream(f"enrollment-{enrollment_id}")
        contact_id = getattr(head[0].event, "contact_id", None) if head else None
        if not head or not contact_id:
            raise AuditNotFound(f"no enrollment {enrollment_id}")
        plans.append((contact_id, head[0].workspace_id, [f"contact-{contact_id}", f"enrollment-{enrollment_id}"], []))
    senders = {r["id"]: r["email"] for r in await _lookup(engine, select(t.senders.c.id, t.senders.c.email))}
    stories = []
    for contact_id, ws, streams, skip_positions in plans:
        events = {ev.position: ev for ev in await engine.store.read_streams(streams)}
        for p in skip_positions:
            events.update((ev.position, ev) for ev in await engine.store.read_all(p - 1, 1, until_position=p))
        ordered = [events[p] for p in sorted(events)]
        ids = sorted({cid for ev in ordered if (cid := getattr(ev.event, "campaign_id", None))})
        names = {r["id"]: r["name"] for r in await _lookup(
            engine, select(t.campaigns.c.id, t.campaigns.c.name).where(t.campaigns.c.id.in_(ids)))}
        rows = await _lookup(engine, select(c.email).where(c.id == contact_id))
        entries = [HistoryEntry(ev.position, ev.recorded_at, ev.type, cid, names.get(cid) if cid else None,
                                getattr(ev.event, "step", None), describe(ev, senders))
                   for ev in ordered for cid in [getattr(ev.event, "campaign_id", None)]]
        stories.append(ContactStory(contact_id, ws, rows[0]["email"] if rows else None, entries))
    return stories
