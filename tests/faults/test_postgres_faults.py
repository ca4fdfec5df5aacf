"""PostgreSQL faults: the engine's backend terminated (``pg_terminate_backend``) in the middle of a
tick, and the runtime's LISTEN connection terminated (what a server restart does to it).

The suite shares one PostgreSQL server, so nothing here restarts it: each test has a throwaway
database and terminates only that database's backends.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from engine import CampaignEngine, ManualClock
from engine.runtime import runtime_of
from tests.conftest import SECRET, pg_database
from tests.faults.helpers import HookedSink, assert_log_sound, log_prefix, start_campaign, tapped_logs
from tests.scale.helpers import ALWAYS_OPEN

pytestmark = pytest.mark.postgres

WAITING_FOR_EVENTS_LOCK = ("SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid() "
                           "AND wait_event_type = 'Lock' AND query LIKE 'LOCK TABLE events%'")
LISTENING = ("SELECT pid FROM pg_stat_activity WHERE datname = $1 AND query ILIKE 'LISTEN %' "
             "AND pid <> pg_backend_pid()")


def plain_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def wait_for(condition: Callable[[], Awaitable[bool]], what: str, limit: float = 20.0) -> None:
    """Poll ``condition`` (the state of another process or task) until it holds, at most ``limit`` s."""
    deadline = time.monotonic() + limit
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit:.0f}s waiting for {what}")
        await asyncio.sleep(0.02)


class KillWhileWaiting(threading.Thread):
    """Hold the events table's lock, wait until one of the engine's backends queues behind it (the
    engine is then inside its outcome transaction), terminate that backend, let the lock go.

    Runs on its own thread and event loop: it is started from the SMTP server's thread while the
    engine's loop waits for the server's answer.
    """

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.dsn = plain_dsn(url)
        self.database = url.rsplit("/", 1)[1]
        self.locked = threading.Event()
        self.terminated: list[int] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
            self.locked.set()

    async def _run(self) -> None:
        holder = await asyncpg.connect(self.dsn)
        admin = await asyncpg.connect(self.dsn)
        try:
            await holder.execute("BEGIN; LOCK TABLE events IN EXCLUSIVE MODE")
            self.locked.set()
            deadline = time.monotonic() + 20
            while not self.terminated:
                if time.monotonic() > deadline:
                    raise AssertionError("no backend of the engine queued for the events lock")
                for row in await admin.fetch(WAITING_FOR_EVENTS_LOCK, self.database):
                    if await admin.fetchval("SELECT pg_terminate_backend($1)", row["pid"]):
                        self.terminated.append(row["pid"])
                await asyncio.sleep(0.01)
            await holder.execute("ROLLBACK")
        finally:
            await holder.close()
            await admin.close()


async def test_backend_terminated_while_outcomes_are_recorded(clock: ManualClock) -> None:
    """Given a launched campaign, when the engine's backend is terminated inside the transaction that
    records an outcome (the SMTP server already took the message), then the engine logs a retry,
    records the outcome on a new connection, and the next tick sends the rest, each once."""
    killers: list[KillWhileWaiting] = []
    async with pg_database() as url:
        with HookedSink() as sink, tapped_logs() as logs:
            async with CampaignEngine(url, clock=clock, secret_key=SECRET, claim_batch=1) as engine:
                await start_campaign(engine, sink, ["ann@corp.io", "bob@corp.io"])
                acknowledged = await log_prefix(engine)

                def strike(_message: object) -> None:
                    sink.on_message = None
                    killer = KillWhileWaiting(url)
                    killers.append(killer)
                    killer.start()
                    assert killer.locked.wait(10), "the events table could not be locked"

                sink.on_message = strike
                first = await engine.tick()
                for killer in killers:
                    killer.join(30)
                    assert killer.error is None, killer.error
                assert killers and killers[0].terminated, "the fault was never injected"
                assert (first.claimed, first.sent) == (1, 1)
                retries = logs.named("database_retry")
                assert retries and retries[0]["what"] == "record outcomes"
                assert "terminat" in retries[0]["error"].lower() or "connection" in retries[0]["error"].lower()

                second = await engine.tick()
                assert (second.claimed, second.sent) == (1, 1)
                counts = await assert_log_sound(engine, sink, acknowledged)
                assert counts["email.claimed"] == counts["email.sent"] == 2
                assert sorted(m.rcpt_tos[0] for m in sink.messages) == ["ann@corp.io", "bob@corp.io"]


async def test_listen_connection_terminated(clock: ManualClock, tmp_path: Path) -> None:
    """Given a runtime listening for other nodes' work, when its LISTEN backend is terminated, then
    it logs that it listens again on a new connection, and a campaign launched afterwards by
    another node wakes it: the emails go out with no safety tick to explain it."""
    async with pg_database() as url:
        database = url.rsplit("/", 1)[1]
        admin = await asyncpg.connect(plain_dsn(url))
        stop = asyncio.Event()
        with HookedSink() as sink, tapped_logs() as logs:
            try:
                async with CampaignEngine(url, clock=clock, secret_key=SECRET) as node, \
                        CampaignEngine(url, clock=clock, secret_key=SECRET) as other:
                    ws = (await other.create_workspace("faults")).id
                    sender = (await other.create_sender(ws, {"email": "rep@sales.io", "smtp": {
                        "host": sink.host, "port": sink.port, "security": "none"}}))["id"]
                    contacts = [(await other.create_contact(ws, {"email": f"{name}@corp.io"}))["id"]
                                for name in ("ann", "bob")]
                    campaign = (await other.create_campaign(ws, {
                        "name": "woken", "sender_ids": [sender], "schedule": ALWAYS_OPEN,
                        "steps": [{"subject": "Hello", "body_html": "<p>Hi</p>"}]}))["id"]
                    await other.enroll(ws, campaign, {"contact_ids": contacts})
                    acknowledged = await log_prefix(other)

                    running = asyncio.create_task(node.run(stop, safety_seconds=3600, poll_seconds=3600,
                                                           webhook_seconds=3600))

                    async def listening() -> bool:
                        runtime = runtime_of(node)
                        return bool(runtime and runtime.ticks and await admin.fetch(LISTENING, database))

                    await wait_for(listening, "the runtime's first tick and its LISTEN")
                    old = [row["pid"] for row in await admin.fetch(LISTENING, database)]
                    assert len(old) == 1
                    runtime = runtime_of(node)
                    assert runtime is not None
                    ticks = runtime.ticks
                    assert await admin.fetchval("SELECT pg_terminate_backend($1)", old[0])

                    async def listening_again() -> bool:
                        pids = [row["pid"] for row in await admin.fetch(LISTENING, database)]
                        return bool(logs.named("listening_again")) and bool(pids) and pids != old

                    await wait_for(listening_again, "the runtime to LISTEN on a new connection")
                    # Reconnecting ticks once (NOTIFYs sent while it was away are lost); after that
                    # only a NOTIFY can wake it, the safety tick being an hour away.
                    await wait_for(lambda: _true_when(runtime.ticks > ticks), "the tick that follows reconnecting")
                    assert sink.messages == []
                    await other.launch_campaign(ws, campaign)  # another node's commit: NOTIFY only

                    await wait_for(lambda: _true_when(len(sink.messages) == 2), "the woken node's sends")
                    stop.set()
                    await asyncio.wait_for(running, 30)
                    assert not logs.named("tick_failed")
                    counts = await assert_log_sound(node, sink, acknowledged)
                    assert counts["email.sent"] == 2
            finally:
                stop.set()
                await admin.close()


async def _true_when(value: bool) -> bool:
    return value
