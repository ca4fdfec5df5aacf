"""``CampaignEngine``: the facade that wires the store, the clock and the services.

It holds no rules itself: every operation lives in ``engine/service``; this class only owns the
resources (database engines, key material) and their lifetime.
"""

from __future__ import annotations

import os
from typing import Any

import structlog

from engine.clock import Clock, SystemClock
from engine.delivery.outbound.smtp import SmtpMailer
from engine.errors import SecretKeyMismatch
from engine.secret_key import ENV_VARIABLE, key_file_for, load_or_create_secret, secret_bytes
from engine.service.campaigns import CampaignService
from engine.service.forecast import ForecastService
from engine.service.inbound import InboundService
from engine.service.management import ManagementService, Workspace
from engine.service.preview import PreviewService
from engine.service.reports import ReportService
from engine.service.sending import SendingService
from engine.service.stats import StatsService
from engine.service.tracking import TrackingService
from engine.service.webhooks import WebhookService
from events import catalog as _catalog  # noqa: F401  (registers every event type)
from events.store import EventStore
from events.vault import KeyCheck, Vault, check_database_key
from projections import inbound as _inbound_tables  # noqa: F401  (mailbox checkpoints)
from projections.base import Projector
from projections.management import ALL as MANAGEMENT_PROJECTIONS
from projections.sending import send_queue
from projections.usage import usage

log = structlog.get_logger("campaign_engine")

NOTIFY_CHANNEL = "campaign_engine_work"
WORK_TYPES = frozenset({"email.scheduled", "email.deferred", "campaign.launched", "campaign.resumed",
                        "campaign.batch_dispatched", "sender.reenabled", "campaign.schedule_changed",
                        "campaign.updated", "email.released"})


def creates_work(events: Any) -> bool:
    """Whether an append may have created work due earlier than a node's next planned tick."""
    return any(e.type in WORK_TYPES for e in events)


DEFAULT_URL = "sqlite+aiosqlite:///./campaign-engine.db"
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8080"


class CampaignEngine(ManagementService, CampaignService, SendingService, StatsService,
                     ForecastService, PreviewService, InboundService, TrackingService, ReportService,
                     WebhookService):
    """The embeddable engine. Use as ``async with CampaignEngine(url, clock=...) as engine``."""

    def __init__(
        self,
        database_url: str | None = None,
        *,
        clock: Clock | None = None,
        secret_key: str | bytes | None = None,
        public_url: str | None = None,
        dns_nameservers: list[str] | None = None,
        **options: Any,
    ) -> None:
        self.database_url = database_url or os.environ.get("CAMPAIGN_ENGINE_DB") or DEFAULT_URL
        self.clock = clock or SystemClock()
        env_secret = os.environ.get(ENV_VARIABLE)
        self._secret = secret_key if secret_key is not None else env_secret
        self.public_url = (public_url or DEFAULT_PUBLIC_URL).rstrip("/")
        self.dns_nameservers = dns_nameservers
        self.options = options
        self.projector = Projector([*MANAGEMENT_PROJECTIONS, send_queue, usage])
        self.mailer = SmtpMailer(max_connections=int(options.get("max_connections_per_sender", 4)))
        from engine.delivery.lookups.mx import MxChecker

        self.mx = MxChecker(nameservers=dns_nameservers, timeout=float(options.get("dns_timeout", 3.0)),
                            clock=self.clock.now)
        self._opened = False

    async def open(self) -> CampaignEngine:
        secret = secret_bytes(self._secret) if self._secret is not None else load_or_create_secret(self.database_url)
        self.vault = Vault(secret)
        self.store = await EventStore.open(self.database_url, self.vault, self.clock.now)
        await self._check_secret_key()
        rebuilt = await self.projector.start(self.store)
        if rebuilt:
            log.info("projections_rebuilt", projections=rebuilt)
        self.store.inline.append(self.projector)
        self.store.after_commit.append(self.note_stops)  # a stop reaches the sends of a tick in flight
        self.store.notify_channel = NOTIFY_CHANNEL
        self.store.notify_when = creates_work
        self._opened = True
        return self

    async def _check_secret_key(self) -> None:
        """Refuse another key's database before any append or projection rebuild touches it."""
        async with self.store.write_engine.begin() as conn:
            found = await check_database_key(conn, self.vault)
        if found is KeyCheck.MISMATCH:
            await self.store.close()
            raise SecretKeyMismatch(self.database_url, self._secret_source())
        if found is KeyCheck.RECORDED_EXISTING:
            log.info("key_check_recorded", detail="a database from before key checks: its secret key's check "
                     "value is recorded now that its data proved the key")

    def _secret_source(self) -> str:
        """Where the key in use came from, for an error that tells the operator what to change."""
        if self._secret is None:
            return f"from the key file {key_file_for(self.database_url)}"
        if self._secret == os.environ.get(ENV_VARIABLE):
            return "from CAMPAIGN_ENGINE_SECRET_KEY"
        return "given to CampaignEngine"

    async def close(self) -> None:
        if self._opened:
            await self.mailer.close()
            await self.store.close()
            self._opened = False

    async def __aenter__(self) -> CampaignEngine:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def run(self, stop: Any = None, **runtime_options: Any) -> None:
        """The APScheduler loop used by ``serve`` and ``worker``: tick at the next due time,
        poll mailboxes and deliver webhooks on intervals, until ``stop`` (an asyncio.Event) is set."""
        from engine.runtime import Runtime

        if not self.public_url.lower().startswith("https://"):  # RFC 8058: no one-click unsubscribe over http
            log.warning("public_url_not_https", public_url=self.public_url, detail="List-Unsubscribe-Post (one-click "
                        "unsubscribe) is not offered; Gmail and Yahoo require it of bulk senders")

        await Runtime(self, **runtime_options).run(stop)

    async def rebuild_projections(self, progress: Any = None) -> int:
        """Rebuild every read model from position 0 (in one transaction)."""
        return await self.projector.rebuild(self.store, progress=progress)


__all__ = ["CampaignEngine", "Workspace"]
