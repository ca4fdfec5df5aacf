"""The APScheduler runtime loop: ticks at the due time, woken early by new work, drains on stop."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from engine import CampaignEngine, ManualClock
from tests.delivery.smtp_server import SmtpSink
from tests.scenarios.test_sending import setup


async def wait_for(predicate: object, limit: float = 20.0) -> None:
    """Wait for an observable condition (bounded), never for a fixed time."""
    async def loop() -> None:
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.01)

    await asyncio.wait_for(loop(), limit)


async def test_runtime_ticks_and_is_woken_by_new_work(eng: CampaignEngine, clock: ManualClock) -> None:
    with SmtpSink() as sink:
        ws, cid, _ = await setup(eng, sink, contacts=2, steps=1,
                                 schedule={"timezone": "UTC", "start_time": "00:00", "end_time": "24:00",
                                           "every_minutes": 10})
        runtime = eng.make_runtime(safety_seconds=3600, poll_seconds=3600, webhook_seconds=3600)
        stop = asyncio.Event()
        task = asyncio.create_task(runtime.run(stop))
        await wait_for(lambda: len(sink.messages) == 1)
        # the second email is due in 10 simulated minutes: the loop waits for it (no busy polling)
        ticks = runtime.ticks
        clock.advance(timedelta(minutes=10))
        contact = await eng.create_contact(ws, {"email": "late@corp.io"})
        await eng.enroll(ws, cid, {"contact_ids": [contact["id"]]})  # wakes the loop
        await wait_for(lambda: len(sink.messages) == 2)
        assert runtime.ticks > ticks
        stop.set()
        await asyncio.wait_for(task, 20)
        assert runtime.last_report is not None


@pytest.mark.postgres
async def test_other_node_learns_of_new_work_by_notify(pg_url: str, clock: ManualClock) -> None:
    from tests.conftest import SECRET

    with SmtpSink() as sink:
        async with CampaignEngine(pg_url, clock=clock, secret_key=SECRET) as worker, \
                CampaignEngine(pg_url, clock=clock, secret_key=SECRET) as api_node:
            runtime = worker.make_runtime(safety_seconds=3600, poll_seconds=3600, webhook_seconds=3600)
            stop = asyncio.Event()
            task = asyncio.create_task(runtime.run(stop))
            await wait_for(lambda: runtime.ticks >= 1)  # idle: nothing to do yet
            # all work is created on the other node; only NOTIFY can wake the worker before an hour passes
            await setup(api_node, sink, contacts=1, steps=1,
                        schedule={"timezone": "UTC", "start_time": "00:00", "end_time": "24:00"})
            await wait_for(lambda: len(sink.messages) == 1)
            stop.set()
            await asyncio.wait_for(task, 20)
