"""A worker process that dies whenever it builds the email of one contact: a poison message.

Run as ``python -m tests.scale.poison_worker DB_URL AT POISON_EMAIL``: it opens the engine on a
ManualClock set to ``AT`` (ISO 8601) and ticks until nothing more is due at that instant. Building
the email to ``POISON_EMAIL`` ends the process at once (``os._exit``: no exception handler, no
outcome recorded, no clean-up), as a crash in a C extension or the kernel's OOM killer would.
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import datetime
from typing import Any

import engine.delivery.content.compose as compose_module
from engine import CampaignEngine, ManualClock
from tests.scale.helpers import SECRET

POISONED = 70  # the exit code of a death by poison


def main() -> None:
    url, at, poison = sys.argv[1:4]
    original = compose_module.render_step

    def render_or_die(definition: Any, step_number: int, contact: Any, *args: Any, **kwargs: Any) -> Any:
        if contact["email"] == poison:
            os._exit(POISONED)
        return original(definition, step_number, contact, *args, **kwargs)

    compose_module.render_step = render_or_die  # type: ignore[assignment]

    async def run() -> None:
        clock = ManualClock(datetime.fromisoformat(at))
        async with CampaignEngine(url, clock=clock, secret_key=SECRET, claim_batch=4) as engine:
            while True:
                report = await engine.tick()
                if report.next_due_at != clock.now():
                    return

    asyncio.run(run())


if __name__ == "__main__":
    main()
