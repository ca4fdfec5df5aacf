"""The runtime loop on APScheduler 3.11's AsyncIOScheduler.

One job ticks at the next due time the engine reports (re-armed after each tick, woken early when
a command creates earlier work), a safety job ticks on an interval in case a wake-up was missed,
and a job polls mailboxes on an interval. It never busy-polls. Stopping waits for the tick in
flight, so every claimed email gets its outcome recorded before the process exits.

The tick jobs only *start* a tick, as a task of the runtime's own (at most one running and one
queued). Two APScheduler behaviours make running the tick inside the job unsafe: a job re-armed
while its previous run is still going is skipped ("maximum number of running instances reached"),
so a tick that found more work already due, or a wake-up arriving mid-tick, was lost until the
safety interval; and ``shutdown()`` cancels running coroutine jobs, which would cut a tick between
its claims and their SMTP outcomes (leaving them to expire as uncertain) on every SIGTERM.

A failing tick (say the database restarted) is retried after 1 s, doubling to 30 s; on PostgreSQL
the LISTEN connection for other nodes' NOTIFYs is re-established when it dies.

For ``/readyz`` the loop keeps, on the engine clock, when its last good tick began and the moment
it owes the next one (the report's ``next_due_at``, a wake-up, or at the latest the safety
interval after the last tick): :meth:`Runtime.lag_seconds` is how far behind that it is. A failing
tick does not move the debt forward, so a loop that keeps failing shows a growing lag.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from engine.service.inbound import PollReport
from engine.service.sending import TickReport
from engine.service.signals import WorkSignal
from engine.service.webhooks import WebhookReport
from events.store import EventStore

log = structlog.get_logger("campaign_engine.runtime")


class Driven(Protocol):
    """What the loop drives: the engine's clock, its three jobs, its shutdown drain and its store."""

    store: EventStore

    def now(self) -> datetime: ...

    async def tick(self) -> TickReport: ...

    async def poll_mailboxes(self) -> PollReport: ...

    async def deliver_webhooks(self, max_events: int = 1000) -> WebhookReport: ...

    def drain_sends(self) -> None: ...


class Runtime:
    """Drives one engine. ``await run(stop)`` returns after ``stop`` is set and work has drained.

    ``work`` is the engine's wake-up signal: while the loop runs, its :meth:`wake` is subscribed
    to it, so commands that create work tick at once. ``notify_channel`` is the PostgreSQL channel
    on which other nodes announce new work. Both come from the engine
    (:meth:`engine.facade.CampaignEngine.make_runtime`); the loop never changes the engine.
    """

    def __init__(self, engine: Driven, *, work: WorkSignal, notify_channel: str, safety_seconds: float = 300.0,
                 poll_seconds: float = 60.0, webhook_seconds: float = 15.0) -> None:
        self.engine = engine
        self.work = work
        self.notify_channel = notify_channel
        self.safety_seconds = safety_seconds
        self.poll_seconds = poll_seconds
        self.webhook_seconds = webhook_seconds
        self._lock = asyncio.Lock()
        self._scheduler: AsyncIOScheduler | None = None
        self.ticks = 0
        self.last_report: TickReport | None = None
        self._queued = False  # a tick task is waiting for the lock: further kicks add nothing
        self._webhook_pass: asyncio.Task[None] | None = None
        self._webhook_again = False
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._failures = 0  # ticks failed in a row: the retry backs off from 1 s to 30 s
        # Readiness, on the engine clock: see the module docstring and lag_seconds().
        self.started_at: datetime | None = None
        self.last_tick_at: datetime | None = None  # when the last successful tick began
        self.owed_at: datetime | None = None  # the earliest moment a tick is owed and not yet done
        self._woken_at: datetime | None = None

    @property
    def failing(self) -> bool:
        """The last tick failed (it is being retried)."""
        return self._failures > 0

    def lag_seconds(self, now: datetime) -> float:
        """How far the loop is behind the tick it owes: 0 while on time."""
        owed = self.owed_at
        if self.last_tick_at is not None:  # the safety job ticks at least this often
            latest = self.last_tick_at + timedelta(seconds=self.safety_seconds)
            owed = latest if owed is None or latest < owed else owed
        if owed is None:
            return 0.0
        return max(0.0, (now - owed).total_seconds())

    def _owe(self, at: datetime) -> None:
        if self.owed_at is None or at < self.owed_at:
            self.owed_at = at

    def _wall_time_for(self, due: datetime | None) -> datetime:
        """Map an engine-clock moment to wall time (the clock may be simulated)."""
        wall = datetime.now(UTC)
        if due is None:
            return wall + timedelta(seconds=self.safety_seconds)
        now = self.engine.now()
        return wall + max(due - now, timedelta(0))

    def _arm(self, due: datetime | None) -> None:
        if self._scheduler is None or not self._scheduler.running:
            return
        self._scheduler.add_job(self._kick, "date", run_date=self._wall_time_for(due), id="tick",
                                replace_existing=True, misfire_grace_time=None, coalesce=True)

    def wake(self) -> None:
        """Called by commands that create work: tick as soon as possible."""
        now = self.engine.now()
        self._woken_at = now
        self._owe(now)
        self._arm(now)

    async def _kick(self) -> None:
        """Job body: start a tick in a task the scheduler does not own, unless one is already queued."""
        if self._queued or self._stopping:
            return
        self._queued = True
        task = asyncio.create_task(self._tick())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _tick(self) -> None:
        async with self._lock:
            self._queued = False
            if self._stopping:
                return
            begun = self.engine.now()
            try:
                report = await self.engine.tick()
            except Exception:  # noqa: BLE001 - the loop must survive a failing tick
                self._failures += 1
                retry = min(30.0, 2.0 ** (self._failures - 1))  # a database blip costs a second, not 30
                log.exception("tick_failed", retry_in=retry)
                self._arm(self.engine.now() + timedelta(seconds=retry))
                return
            self._failures = 0
            self.ticks += 1
            self.last_report = report
            self.last_tick_at = begun
            self.owed_at = report.next_due_at
            if self._woken_at is not None and self._woken_at > begun:  # woken mid-tick: the queued tick owes it
                self._owe(self._woken_at)
            if report.sent or report.claimed:
                log.info("tick", sent=report.sent, claimed=report.claimed, next_due_at=str(report.next_due_at),
                         sent_by=report.sent_by)  # {"workspace/campaign/sender": emails sent}
            self._arm(report.next_due_at)

    async def _poll(self) -> None:
        try:
            await self.engine.poll_mailboxes()
        except Exception:  # noqa: BLE001
            log.exception("poll_failed")

    async def _webhooks(self) -> None:
        try:
            await self.engine.deliver_webhooks()
        except Exception:  # noqa: BLE001
            log.exception("webhooks_failed")

    async def _events_committed(self, events: Any) -> None:
        """After-commit hook: new events may be due to a webhook; deliver now, not at the next
        interval (which stays as the safety net). One delivery pass runs at a time; events
        committed during it start one more pass after it, so none waits for the interval."""
        if not events or self._stopping:
            return
        if self._webhook_pass is not None and not self._webhook_pass.done():
            self._webhook_again = True
            return
        self._webhook_pass = asyncio.create_task(self._webhook_passes())
        self._tasks.add(self._webhook_pass)
        self._webhook_pass.add_done_callback(self._tasks.discard)

    async def _webhook_passes(self) -> None:
        while True:
            self._webhook_again = False
            await self._webhooks()
            if not self._webhook_again or self._stopping:
                return

    async def _listen(self) -> tuple[Any, asyncio.Event]:
        """LISTEN for other nodes' new work and tick when it arrives; the event is set if the connection dies."""
        import asyncpg

        dsn = self.engine.store.write_engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        conn = await asyncpg.connect(dsn)
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        await conn.add_listener(self.notify_channel, lambda *_args: self.wake())
        return conn, lost

    async def _keep_listening(self, conn: Any, lost: asyncio.Event) -> None:
        """When the LISTEN connection dies (database restart, killed backend), connect again with backoff
        and tick once: NOTIFYs sent meanwhile are lost, and without this only the safety job would see them."""
        delay = 0.5
        try:
            while not self._stopping:
                await lost.wait()
                await conn.close(timeout=5)
                try:
                    conn, lost = await self._listen()
                except Exception as exc:  # noqa: BLE001 - keep trying while the database is away
                    log.warning("listen_failed", error=str(exc).splitlines()[0][:200] if str(exc) else repr(exc),
                                retry_in=delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30.0)
                    lost = asyncio.Event()
                    lost.set()
                    continue
                delay = 0.5
                log.info("listening_again")
                self.wake()
        finally:
            await conn.close(timeout=5)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        scheduler = AsyncIOScheduler(timezone=UTC)
        self._scheduler = scheduler
        scheduler.start()
        scheduler.add_job(self._kick, "interval", seconds=self.safety_seconds, id="safety", coalesce=True,
                          max_instances=1, misfire_grace_time=None)
        scheduler.add_job(self._poll, "interval", seconds=self.poll_seconds, id="poll", coalesce=True,
                          max_instances=1, misfire_grace_time=None)
        scheduler.add_job(self._webhooks, "interval", seconds=self.webhook_seconds, id="webhooks", coalesce=True,
                          max_instances=1, misfire_grace_time=None)
        self.started_at = self.engine.now()
        self._owe(self.started_at)
        self._arm(self.engine.now())
        unsubscribe = self.work.subscribe(self.wake)
        self.engine.store.after_commit.append(self._events_committed)
        listener = None
        if self.engine.store.dialect == "postgresql":
            listener = asyncio.create_task(self._keep_listening(*await self._listen()))
        try:
            await stop.wait()
        finally:
            if listener is not None:
                listener.cancel()
                await asyncio.gather(listener, return_exceptions=True)
            unsubscribe()
            if self._events_committed in self.engine.store.after_commit:
                self.engine.store.after_commit.remove(self._events_committed)
            self._stopping = True  # a queued tick returns without claiming
            self.engine.drain_sends()  # transactions in DATA finish; claims not yet sent go back
            scheduler.shutdown(wait=False)
            # let the tick in flight record its outcomes (its task is not the scheduler's to cancel)
            await asyncio.gather(*self._tasks, return_exceptions=True)
            async with self._lock:
                pass
            self._scheduler = None


def runtime_of(engine: Any) -> Runtime | None:
    """The runtime loop driving ``engine`` in this process, if one runs (``engine.run()``)."""
    found = getattr(engine, "runtime", None)
    return found if isinstance(found, Runtime) else None
