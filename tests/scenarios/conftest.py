"""Scenario fixtures: an engine with a public tracking URL, and a recording SMTP sink."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from engine import CampaignEngine, ManualClock
from tests.conftest import SECRET
from tests.delivery.smtp_server import SmtpSink


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as s:
        yield s


@pytest.fixture
async def eng(sqlite_url: str, clock: ManualClock) -> AsyncIterator[CampaignEngine]:
    async with CampaignEngine(sqlite_url, clock=clock, secret_key=SECRET,
                              public_url="https://track.example.com") as e:
        yield e
