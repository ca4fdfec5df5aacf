"""Webhook deliveries: an asynchronous, checkpointed subscriber of the log that POSTs signed JSON.

One call of :meth:`WebhookService.deliver_webhooks` is one bounded pass; the runtime loop calls it
on an interval, apart from ``tick()``, so a dead endpoint never delays sending.

Guarantees, per webhook:

- **At least once.** The checkpoint (``projections.webhooks_outbox``) moves only past events that
  were delivered (2xx), given up on (dead) or not subscribed, and only in the transaction that
  records those outcomes, after the HTTP calls. A crash between a call and that commit re-delivers
  (receivers dedupe on ``X-Event-Id``); it never drops an event, unlike a cursor advanced at fetch.
- **In log order per campaign.** Events carrying the same ``campaign_id`` form a lane (events with
  none share one lane per webhook). A failed delivery is retried after a backoff (30 s, 2 min,
  10 min, 1 h, then 6 h) and later events of its lane are held until it succeeds; other lanes go
  on. After ``webhook_max_attempts`` (10) failures the event is recorded as dead and its lane moves
  on: one poisoned event must not block a campaign forever.
- **No skipped events on PostgreSQL.** The store assigns positions under an exclusive lock on the
  events table (see ``events.store``), so positions commit in order and following
  ``read_all(after=scanned)`` never passes over an event that commits late.
- **Bounded passes.** Each call has a hard timeout (``webhook_timeout``, 10 s); a webhook stops
  for the pass after ``webhook_max_failures_per_pass`` (3) failures or ``max_events`` calls;
  webhooks are served concurrently, so one slow endpoint does not delay the others.
- **Deleted webhooks stop.** Only webhooks in ``rm_webhooks`` are served, and a running pass
  re-checks at every commit.
- **One worker per webhook.** A pass leases the webhook's checkpoint row; a pass that lost its
  lease commits nothing (its deliveries are redone: still at least once).
- **Only allowed destinations.** Every delivery resolves the URL's host and refuses link-local
  (cloud metadata), reserved and similar addresses, and private ones when
  ``webhook_allow_private_addresses`` is off (see ``engine.delivery.lookups.destinations``); a refusal is
  a failed attempt like any other. The request then goes to the vetted address, not to the name
  (a second resolution could answer differently), with the name in ``Host`` and in TLS SNI. Each
  webhook has its own HTTP client, so a kept-alive TLS connection verified for one webhook's name
  is never reused for another name that resolves to the same address.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import structlog
from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from engine import metrics
from engine.clock import Clock
from engine.delivery.lookups.destinations import DestinationRefused, allows_private, resolve
from engine.service.base import Reads
from events.registry import format_time, parse_time, to_data
from events.store import EventStore, StoredEvent
from events.vault import Vault
from projections import tables as t
from projections import webhooks_outbox as wo

log = structlog.get_logger("campaign_engine.webhooks")

BACKOFF_SECONDS = (30, 120, 600, 3600, 21600)
_PAGE = 200
_FLUSH_EVERY = 25  # HTTP calls between commits: bounds re-deliveries after a crash, renews the lease
_cp = wo.webhook_checkpoints
_dl = wo.webhook_deliveries


@dataclass(slots=True)
class WebhookReport:
    """What one pass did; ``next_attempt_at`` is the earliest retry still waiting."""

    webhooks: int = 0
    delivered: int = 0
    failed: int = 0
    dead: int = 0
    held: int = 0
    next_attempt_at: datetime | None = None

    def due(self, at: datetime | None) -> None:
        if at is not None and (self.next_attempt_at is None or at < self.next_attempt_at):
            self.next_attempt_at = at


def backoff(failures: int, schedule: tuple[int, ...] = BACKOFF_SECONDS) -> timedelta:
    """The wait after the ``failures``-th failed attempt of one event (1-based)."""
    return timedelta(seconds=schedule[min(max(failures, 1), len(schedule)) - 1])


def sign(secret: str, body: bytes) -> str:
    """The ``X-Signature`` value: HMAC-SHA256 of the exact body bytes, hex."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def payload(ev: StoredEvent) -> bytes:
    """The body of one delivery. Encrypted secrets (``*_enc``) never leave, not even as ciphertext."""
    return json.dumps({"id": ev.position, "type": ev.type, "stream": ev.stream, "version": ev.version,
                       "recorded_at": format_time(ev.recorded_at), "data": _public(to_data(ev.event))},
                      separators=(",", ":"), ensure_ascii=False).encode()


def lane_of(ev: StoredEvent) -> str:
    campaign = getattr(ev.event, "campaign_id", None)
    return campaign if isinstance(campaign, str) else ""


def _public(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _public(v) for k, v in data.items() if not k.endswith("_enc")}
    if isinstance(data, list):
        return [_public(v) for v in data]
    return data


class _LeaseLost(Exception):
    """Another worker took the webhook over (our lease expired): commit nothing more."""


@dataclass(slots=True)
class _Settings:
    timeout: float
    max_attempts: int
    max_failures: int
    lease: timedelta
    schedule: tuple[int, ...]
    allow_private: bool


class _Pass:
    """One webhook's share of a pass: claim, retry the open rows, scan new events, commit."""

    def __init__(self, svc: WebhookService, hook: Any, client: httpx.AsyncClient, settings: _Settings,
                 max_events: int, report: WebhookReport) -> None:
        self.svc, self.client, self.cfg, self.report = svc, client, settings, report
        self.id: str = hook["id"]
        self.ws: str = hook["workspace_id"]
        self.url: str = hook["url"]
        types = json.loads(hook["event_types"])
        self.types: set[str] = set(types)
        self.secret = svc.vault.decrypt_secret(hook["secret_enc"])
        self.max_events = max_events
        self.owner = "lease_" + secrets.token_hex(8)
        self.position = self.scanned = 0
        self.open: dict[int, dict[str, Any]] = {}  # position -> row, for rows this pass knows of
        self.dirty: set[int] = set()
        self.calls = self.failures = self.since_flush = 0
        self.stopped = False

    # -- the pass --------------------------------------------------------------------------------
    async def run(self) -> None:
        if not await self._claim():
            return
        try:
            await self._retry_open()
            await self._scan()
        except _LeaseLost:
            log.warning("webhook_lease_lost", webhook_id=self.id)
            return
        except BaseException:
            await self._release()
            raise
        try:
            await self._flush(release=True)
        except _LeaseLost:
            log.warning("webhook_lease_lost", webhook_id=self.id)
        for row in self.open.values():
            if row["status"] == wo.RETRYING:
                self.report.due(parse_time(row["next_attempt_at"]))

    async def _retry_open(self) -> None:
        """Rows left by earlier passes, in log order; a lane stops at its first row not yet due."""
        blocked: set[str] = set()
        now = format_time(self.svc.clock.now())
        for pos in sorted(self.open):
            row = self.open[pos]
            if self.stopped:
                return
            if row["lane"] in blocked or row["status"] not in wo.UNSETTLED:
                continue
            if row["status"] == wo.RETRYING and row["next_attempt_at"] > now:
                blocked.add(row["lane"])
                continue
            if not self._budget_left():
                return
            found = await self.svc.store.read_all(pos - 1, 1, workspace_id=self.ws)
            if not found or found[0].position != pos:  # cannot happen in an append-only log
                self._set(pos, status=wo.DEAD, last_error="event not found")
                continue
            if not await self._deliver(found[0], row) and self.open[pos]["status"] == wo.RETRYING:
                blocked.add(row["lane"])
            if self.since_flush >= _FLUSH_EVERY:
                await self._flush()

    async def _scan(self) -> None:
        """New events after ``scanned``: deliver, hold behind an open lane, or skip."""
        blocked = {r["lane"] for r in self.open.values() if r["status"] in wo.UNSETTLED}
        read = 0
        while not self.stopped and read < self.max_events:
            batch = await self.svc.store.read_all(self.scanned, min(_PAGE, self.max_events - read),
                                                  workspace_id=self.ws)
            if not batch:
                return
            read += len(batch)
            for ev in batch:
                if self.stopped:
                    return
                if ev.type in self.types or "*" in self.types:
                    lane = lane_of(ev)
                    if lane in blocked:
                        self._set(ev.position, webhook_id=self.id, position=ev.position, workspace_id=self.ws,
                                  event_type=ev.type, lane=lane, status=wo.HELD, attempts=0,
                                  next_attempt_at=None, last_status=None, last_error=None)
                        self.report.held += 1
                    elif not self._budget_left():
                        return  # this event stays unscanned: the next pass starts with it
                    elif not await self._deliver(ev, None) and self.open[ev.position]["status"] == wo.RETRYING:
                        blocked.add(lane)
                self.scanned = ev.position
                if self.since_flush >= _FLUSH_EVERY:
                    await self._flush()

    # -- one delivery ----------------------------------------------------------------------------
    def _budget_left(self) -> bool:
        if self.calls >= self.max_events:
            self.stopped = True
        return not self.stopped

    async def _deliver(self, ev: StoredEvent, row: dict[str, Any] | None) -> bool:
        """POST one event; record the outcome in memory (committed by the next flush)."""
        self.calls += 1
        self.since_flush += 1
        attempts = (row["attempts"] if row else 0) + 1
        body = payload(ev)
        headers = {"Content-Type": "application/json", "User-Agent": "campaign-engine-webhooks/1",
                   "X-Signature": sign(self.secret, body), "X-Webhook-Id": self.id,
                   "X-Event-Id": str(ev.position), "X-Webhook-Attempt": str(attempts)}
        status: int | None = None
        try:
            async with asyncio.timeout(self.cfg.timeout):  # the resolution included
                choices = (await resolve(self.url, self.cfg.allow_private)).each()
                for i, dest in enumerate(choices):
                    try:
                        async with self.client.stream("POST", dest.target(), content=body,
                                                      headers={**headers, "Host": dest.host_header},
                                                      extensions=dest.extensions) as resp:
                            status = resp.status_code  # the answer's body is never read
                        break
                    except httpx.ConnectError:  # nothing was sent: the next vetted address may answer
                        if i == len(choices) - 1:
                            raise
            error = None if status is not None and 200 <= status < 300 else f"HTTP {status}"
        except DestinationRefused as exc:
            error = f"destination refused: {exc}"[:500]
        except (httpx.HTTPError, TimeoutError, OSError) as exc:
            error = (f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)[:500]
        metrics.record_webhook(error is None)
        base = {"webhook_id": self.id, "position": ev.position, "workspace_id": self.ws, "event_type": ev.type,
                "lane": lane_of(ev)}
        if error is None:
            self.report.delivered += 1
            if row is not None and row["attempts"] > 0:
                self._set(ev.position, **base, status=wo.DELIVERED, attempts=attempts, next_attempt_at=None,
                          last_status=status, last_error=None)
            elif row is not None:
                self._set(ev.position, **base, status=None)  # held, then delivered at once: no record
            return True
        self.failures += 1
        if self.failures >= self.cfg.max_failures:
            self.stopped = True
        log.info("webhook_failed", webhook_id=self.id, position=ev.position, attempts=attempts, error=error)
        if attempts >= self.cfg.max_attempts:
            self.report.dead += 1
            self._set(ev.position, **base, status=wo.DEAD, attempts=attempts, next_attempt_at=None,
                      last_status=status, last_error=error)
        else:
            self.report.failed += 1
            due = self.svc.clock.now() + backoff(attempts, self.cfg.schedule)
            self._set(ev.position, **base, status=wo.RETRYING, attempts=attempts,
                      next_attempt_at=format_time(due), last_status=status, last_error=error)
        return False

    def _set(self, pos: int, **values: Any) -> None:
        """Change a row in memory (``status=None`` deletes it at the next flush)."""
        self.open[pos] = {**self.open.get(pos, {}), **values, "updated_at": format_time(self.svc.clock.now())}
        self.dirty.add(pos)

    # -- the database ------------------------------------------------------------------------------
    async def _claim(self) -> bool:
        """Take the lease (creating the checkpoint at the webhook's creation) and load open rows."""
        now = self.svc.clock.now()
        until = format_time(now + self.cfg.lease)
        try:
            async with self.svc.store.write_engine.begin() as c:
                if not await self._exists(c):
                    return False
                row = (await c.execute(select(_cp).where(_cp.c.webhook_id == self.id))).mappings().first()
                if row is None:
                    created = await self.svc.store.read_stream(f"webhook-{self.id}", conn=c)
                    start = created[0].position if created else await self.svc.store.last_position(c)
                    await c.execute(_cp.insert().values(
                        webhook_id=self.id, workspace_id=self.ws, position=start, scanned=start,
                        lease_owner=self.owner, lease_until=until, updated_at=format_time(now)))
                    self.position = self.scanned = start
                else:
                    res = await c.execute(update(_cp).where(
                        _cp.c.webhook_id == self.id,
                        or_(_cp.c.lease_until.is_(None), _cp.c.lease_until < format_time(now)),
                    ).values(lease_owner=self.owner, lease_until=until))
                    if res.rowcount != 1:
                        return False  # another worker is on it
                    row = (await c.execute(select(_cp).where(_cp.c.webhook_id == self.id))).mappings().one()
                    self.position, self.scanned = int(row["position"]), int(row["scanned"])
                rows = (await c.execute(select(_dl).where(_dl.c.webhook_id == self.id,
                                                          _dl.c.status.in_(wo.UNSETTLED))
                                        .order_by(_dl.c.position))).mappings().all()
                self.open = {int(r["position"]): dict(r) for r in rows}
        except IntegrityError:  # two workers created the checkpoint at once; the other one won
            return False
        return True

    async def _exists(self, c: AsyncConnection) -> bool:
        found = (await c.execute(select(t.webhooks.c.id).where(t.webhooks.c.id == self.id))).first()
        return found is not None

    async def _flush(self, release: bool = False) -> None:
        """Commit the outcomes and the cursors together; stop the pass if the webhook was deleted."""
        unsettled = [p for p, r in self.open.items() if r["status"] in wo.UNSETTLED]
        self.position = max(self.position, min(unsettled) - 1 if unsettled else self.scanned)
        now = self.svc.clock.now()
        rows = [{k: self.open[p][k] for k in _dl.c.keys()} for p in sorted(self.dirty)
                if self.open[p]["status"] is not None]
        async with self.svc.store.write_engine.begin() as c:
            res = await c.execute(update(_cp).where(_cp.c.webhook_id == self.id, _cp.c.lease_owner == self.owner)
                                  .values(position=self.position, scanned=self.scanned, updated_at=format_time(now),
                                          lease_owner=None if release else self.owner,
                                          lease_until=None if release else format_time(now + self.cfg.lease)))
            if res.rowcount != 1:
                raise _LeaseLost(self.id)
            dirty = sorted(self.dirty)
            for i in range(0, len(dirty), 400):
                await c.execute(delete(_dl).where(and_(_dl.c.webhook_id == self.id,
                                                       _dl.c.position.in_(dirty[i:i + 400]))))
            if rows:
                await c.execute(_dl.insert(), rows)
            if not release and not await self._exists(c):
                self.stopped = True
        self.open = {p: r for p, r in self.open.items() if r["status"] in wo.UNSETTLED}
        self.dirty.clear()
        self.since_flush = 0

    async def _release(self) -> None:
        """After an error: give the lease back without committing this pass's in-memory outcomes."""
        try:
            async with self.svc.store.write_engine.begin() as c:
                await c.execute(update(_cp).where(_cp.c.webhook_id == self.id, _cp.c.lease_owner == self.owner)
                                .values(lease_owner=None, lease_until=None))
        except Exception:  # noqa: BLE001 - the lease then simply expires
            log.exception("webhook_release_failed", webhook_id=self.id)


async def forget_webhook(conn: AsyncConnection, webhook_id: str) -> None:
    """Drop a deleted webhook's checkpoint and delivery records (in the deletion's transaction).

    Nothing can read them any more (its deliveries answer 404), and a pass still running for it
    loses its lease at its next commit, so it commits nothing.
    """
    await conn.execute(delete(_dl).where(_dl.c.webhook_id == webhook_id))
    await conn.execute(delete(_cp).where(_cp.c.webhook_id == webhook_id))


class WebhookService:
    """Delivers the log to the workspaces' webhooks (see the module docstring for the guarantees)."""

    def __init__(self, store: EventStore, clock: Clock, vault: Vault, options: dict[str, Any]) -> None:
        self.store = store
        self.clock = clock
        self.vault = vault
        self.options = options
        self.reads = Reads(store)

    def _webhook_settings(self) -> _Settings:
        o = self.options
        return _Settings(timeout=float(o.get("webhook_timeout", 10.0)),
                         max_attempts=int(o.get("webhook_max_attempts", 10)),
                         max_failures=int(o.get("webhook_max_failures_per_pass", 3)),
                         lease=timedelta(seconds=float(o.get("webhook_lease_seconds", 600))),
                         schedule=tuple(o.get("webhook_backoff", BACKOFF_SECONDS)),
                         allow_private=allows_private(o))

    async def deliver_webhooks(self, max_events: int = 1000) -> WebhookReport:
        """One pass over every webhook: at most ``max_events`` events read and calls made per webhook."""
        cfg = self._webhook_settings()
        report = WebhookReport()
        hooks = await self.reads.all(select(t.webhooks).order_by(t.webhooks.c.created_at, t.webhooks.c.id))
        report.webhooks = len(hooks)
        await self._sweep_orphans()
        if not hooks:
            return report
        limit = asyncio.Semaphore(int(self.options.get("webhook_concurrency", 8)))
        tls = httpx.create_ssl_context()  # shared: building one costs ~15 ms, a client per webhook ~0

        async def serve(hook: Any) -> None:
            # One client per webhook: connections are pooled by address, and a TLS connection verified
            # for one name must not carry another name's requests. No redirects; no proxy from the env
            # (a proxy would connect to the name itself, not to the vetted address).
            async with limit, httpx.AsyncClient(timeout=httpx.Timeout(cfg.timeout), follow_redirects=False,
                                                trust_env=False, verify=tls) as client:
                await _Pass(self, hook, client, cfg, max_events, report).run()

        results = await asyncio.gather(*(serve(h) for h in hooks), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        for hook, r in zip(hooks, results, strict=True):
            if isinstance(r, BaseException):
                log.error("webhook_pass_failed", webhook_id=hook["id"], error=f"{type(r).__name__}: {r}")
        if failures:  # every other webhook was served; the runtime loop logs this and carries on
            raise failures[0]
        return report

    async def _sweep_orphans(self) -> None:
        """Records of webhooks deleted before deletion cleaned up after itself (or by a node that
        crashed in between): a webhook exists in the read model from the transaction that created
        it, before it can have any record, so anything without one is garbage."""
        known = select(t.webhooks.c.id)
        async with self.store.write_engine.begin() as c:
            for table in (_dl, _cp):
                await c.execute(delete(table).where(table.c.webhook_id.not_in(known)))

    async def webhook_deliveries(self, ws: str, wid: str) -> dict[str, Any]:
        """A webhook's cursors and its recorded deliveries (retrying, held, dead, delivered after retries)."""
        await self.reads.one(select(t.webhooks.c.id).where(t.webhooks.c.id == wid, t.webhooks.c.workspace_id == ws),
                             "webhook", wid)
        cp = await self.reads.all(select(_cp.c.position, _cp.c.scanned).where(_cp.c.webhook_id == wid))
        rows = await self.reads.all(select(_dl).where(_dl.c.webhook_id == wid).order_by(_dl.c.position))
        return {"checkpoint": cp[0]["position"] if cp else None, "scanned": cp[0]["scanned"] if cp else None,
                "deliveries": [{"position": r["position"], "type": r["event_type"], "campaign_id": r["lane"] or None,
                                "status": r["status"], "attempts": r["attempts"],
                                "next_attempt_at": r["next_attempt_at"], "last_status": r["last_status"],
                                "last_error": r["last_error"]} for r in rows]}


__all__ = ["BACKOFF_SECONDS", "WebhookReport", "WebhookService", "backoff", "lane_of", "payload", "sign"]
