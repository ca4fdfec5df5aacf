"""``CampaignEngine``: the facade that wires the store, the clock and the services.

It holds no rules itself: every operation lives in ``engine/service``; this class only owns the
resources (database engines, key material) and their lifetime.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from engine.clock import Clock, SystemClock
from engine.delivery.outbound.smtp import SmtpMailer
from engine.errors import SecretKeyMismatch
from engine.logging_setup import quiet_library_logging
from engine.secret_key import ENV_VARIABLE, key_file_for, load_or_create_secret, secret_bytes
from engine.service.inbound import PollReport
from engine.service.sending import TickReport
from engine.service.webhooks import WebhookReport
from engine.service.wiring import Services, build_services
from engine.service.workspaces import ApiKeyOwner, Workspace
from events import catalog as _catalog  # noqa: F401  (registers every event type)
from events.store import EventStore
from events.vault import KeyCheck, Vault, check_database_key
from projections import inbound as _inbound_tables  # noqa: F401  (mailbox checkpoints)
from projections.base import Projector
from projections.campaign_stats import campaign_stats
from projections.read_models import MANAGEMENT as MANAGEMENT_PROJECTIONS
from projections.sending import send_queue
from projections.usage import usage

if TYPE_CHECKING:
    from engine.runtime import Runtime

quiet_library_logging()  # an embedding program that configured no logging sees nothing printed
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


class CampaignEngine:
    """The embeddable engine. Use as ``async with CampaignEngine(url, clock=...) as engine``.

    It owns the resources (store, vault, mailer, MX checker, projector) and their lifetime; the
    services built from them in :func:`engine.service.wiring.build_services` hold every
    operation, and each public method below forwards to the one that owns it.
    """

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
        self.projector = Projector([*MANAGEMENT_PROJECTIONS, send_queue, usage, campaign_stats])
        self.mailer = SmtpMailer(max_connections=int(options.get("max_connections_per_sender", 4)))
        from engine.delivery.lookups.mx import MxChecker

        self.mx = MxChecker(nameservers=dns_nameservers, timeout=float(options.get("dns_timeout", 3.0)),
                            clock=self.clock.now)
        self.store: EventStore
        self.vault: Vault
        self.runtime: Runtime | None = None  # the loop driving this engine in this process, while run() runs
        self._services: Services
        self._opened = False

    def now(self) -> datetime:
        """The engine clock's now."""
        return self.clock.now()

    async def open(self) -> CampaignEngine:
        secret = secret_bytes(self._secret) if self._secret is not None else load_or_create_secret(self.database_url)
        self.vault = Vault(secret)
        self.store = await EventStore.open(self.database_url, self.vault, self.clock.now)
        await self._check_secret_key()
        self._services = build_services(store=self.store, clock=self.clock, vault=self.vault, options=self.options,
                                        public_url=self.public_url, mailer=self.mailer, mx=self.mx)
        rebuilt = await self.projector.start(self.store)
        if rebuilt:
            log.info("projections_rebuilt", projections=rebuilt)
        self.store.inline.append(self.projector)
        # a stop reaches the sends of a tick in flight
        self.store.after_commit.append(self._services.stop_notes.note_stops)
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
        if not self.public_url.lower().startswith("https://"):  # RFC 8058: no one-click unsubscribe over http
            log.warning("public_url_not_https", public_url=self.public_url, detail="List-Unsubscribe-Post (one-click "
                        "unsubscribe) is not offered; Gmail and Yahoo require it of bulk senders")
        runtime = self.make_runtime(**runtime_options)
        previous, self.runtime = self.runtime, runtime
        try:
            await runtime.run(stop)
        finally:
            self.runtime = previous

    def make_runtime(self, **runtime_options: Any) -> Runtime:
        """A runtime loop for this open engine, woken by its commands and (on PostgreSQL) by other
        nodes' NOTIFYs; ``run()`` uses one, a test or an embedding application may drive its own."""
        from engine.runtime import Runtime

        return Runtime(self, work=self._services.work, notify_channel=NOTIFY_CHANNEL, **runtime_options)

    async def rebuild_projections(self, progress: Any = None) -> int:
        """Rebuild every read model from position 0 (in one transaction)."""
        return await self.projector.rebuild(self.store, progress=progress)

    def drain_sends(self) -> None:
        """Shutdown: SMTP transactions already started finish; claims not yet sent are released."""
        self._services.stop_notes.drain()

    # -- Workspaces and API keys (WorkspaceService) -------------------------------------------------------------
    async def create_workspace(self, name: str, monthly_limit: int | None = None, require_approval: bool = False, *,
                               actor: str | None = None) -> Workspace:
        return await self._services.workspaces.create_workspace(name, monthly_limit, require_approval, actor=actor)

    async def has_workspaces(self) -> bool:
        return await self._services.workspaces.has_workspaces()

    async def list_workspaces(self) -> list[dict[str, Any]]:
        return await self._services.workspaces.list_workspaces()

    async def find_workspace(self, ref: str) -> str:
        return await self._services.workspaces.find_workspace(ref)

    async def authenticate_key(self, api_key: str) -> ApiKeyOwner | None:
        return await self._services.workspaces.authenticate_key(api_key)

    async def authenticate(self, api_key: str) -> str | None:
        return await self._services.workspaces.authenticate(api_key)

    async def list_api_keys(self, ws: str) -> list[dict[str, Any]]:
        return await self._services.workspaces.list_api_keys(ws)

    async def create_api_key(self, ws: str, body: Any, *, actor: str | None = None) -> dict[str, Any]:
        return await self._services.workspaces.create_api_key(ws, body, actor=actor)

    async def revoke_api_key(self, ws: str, key_id: str, *, actor: str | None = None) -> dict[str, Any]:
        return await self._services.workspaces.revoke_api_key(ws, key_id, actor=actor)

    async def workspace_of_api_key(self, key_id: str) -> str:
        return await self._services.workspaces.workspace_of_api_key(key_id)

    # -- senders, contacts, lists, suppressions, webhooks, the account, the raw log (ManagementService) ---------
    async def get_account(self, ws: str) -> dict[str, Any]:
        return await self._services.management.get_account(ws)

    async def create_sender(self, ws: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._services.management.create_sender(ws, body)

    async def get_sender(self, ws: str, sid: str) -> dict[str, Any]:
        return await self._services.management.get_sender(ws, sid)

    async def list_senders(self, ws: str, page: int = 1, per_page: int = 50, *, cursor: str | None = None
                           ) -> dict[str, Any]:
        return await self._services.management.list_senders(ws, page, per_page, cursor=cursor)

    async def update_sender(self, ws: str, sid: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._services.management.update_sender(ws, sid, body)

    async def delete_sender(self, ws: str, sid: str) -> dict[str, Any]:
        return await self._services.management.delete_sender(ws, sid)

    async def reenable_sender(self, ws: str, sid: str) -> dict[str, Any]:
        return await self._services.management.reenable_sender(ws, sid)

    async def check_sender(self, ws: str, sid: str) -> dict[str, Any]:
        return await self._services.management.check_sender(ws, sid)

    async def set_sender_dkim(self, ws: str, sid: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._services.management.set_sender_dkim(ws, sid, body)

    async def sender_dns(self, ws: str, sid: str) -> dict[str, Any]:
        return await self._services.management.sender_dns(ws, sid)

    async def create_contact(self, ws: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._services.management.create_contact(ws, body)

    async def import_contacts(self, ws: str, rows: list[Any], *, list_id: str | None = None) -> dict[str, Any]:
        return await self._services.management.import_contacts(ws, rows, list_id=list_id)

    async def import_contacts_csv(self, ws: str, text: str, *, mapping: dict[str, str | None] | None = None,
                                  list_id: str | None = None) -> dict[str, Any]:
        return await self._services.management.import_contacts_csv(ws, text, mapping=mapping, list_id=list_id)

    async def get_contact(self, ws: str, cid: str) -> dict[str, Any]:
        return await self._services.management.get_contact(ws, cid)

    async def list_contacts(self, ws: str, *, q: str | None = None, status: str | None = None,
                            list_id: str | None = None, page: int = 1, per_page: int = 50,
                            cursor: str | None = None) -> dict[str, Any]:
        return await self._services.management.list_contacts(ws, q=q, status=status, list_id=list_id, page=page,
                                                             per_page=per_page, cursor=cursor)

    async def update_contact(self, ws: str, cid: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._services.management.update_contact(ws, cid, body)

    async def erase_contact(self, ws: str, cid: str) -> dict[str, Any]:
        return await self._services.management.erase_contact(ws, cid)

    async def create_list(self, ws: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._services.management.create_list(ws, body)

    async def list_lists(self, ws: str, page: int = 1, per_page: int = 50, *, cursor: str | None = None
                         ) -> dict[str, Any]:
        return await self._services.management.list_lists(ws, page, per_page, cursor=cursor)

    async def add_list_contacts(self, ws: str, lid: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._services.management.add_list_contacts(ws, lid, body)

    async def remove_list_contacts(self, ws: str, lid: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._services.management.remove_list_contacts(ws, lid, body)

    async def list_suppressions(self, ws: str, page: int = 1, per_page: int = 50, *, cursor: str | None = None
                                ) -> dict[str, Any]:
        return await self._services.management.list_suppressions(ws, page, per_page, cursor=cursor)

    async def add_suppression(self, ws: str, body: dict[str, Any], reason: str = "manual") -> dict[str, Any]:
        return await self._services.management.add_suppression(ws, body, reason)

    async def delete_suppression(self, ws: str, value: str) -> dict[str, Any]:
        return await self._services.management.delete_suppression(ws, value)

    async def create_webhook(self, ws: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._services.management.create_webhook(ws, body)

    async def list_webhooks(self, ws: str, page: int = 1, per_page: int = 50, *, cursor: str | None = None
                            ) -> dict[str, Any]:
        return await self._services.management.list_webhooks(ws, page, per_page, cursor=cursor)

    async def delete_webhook(self, ws: str, wid: str) -> dict[str, Any]:
        return await self._services.management.delete_webhook(ws, wid)

    async def list_events(self, ws: str, *, after: int = 0, limit: int = 100, type: str | None = None,
                          stream: str | None = None, cursor: str | None = None) -> dict[str, Any]:
        return await self._services.management.list_events(ws, after=after, limit=limit, type=type, stream=stream,
                                                           cursor=cursor)

    # -- campaigns, their lifecycle, enrollments, dispatch and stats (CampaignService) --------------------------
    async def create_campaign(self, ws: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._services.campaigns.create_campaign(ws, body)

    async def workspace_of_campaign(self, cid: str) -> str:
        return await self._services.campaigns.workspace_of_campaign(cid)

    async def get_campaign(self, ws: str, cid: str) -> dict[str, Any]:
        return await self._services.campaigns.get_campaign(ws, cid)

    async def list_campaigns(self, ws: str, *, page: int = 1, per_page: int = 50, status: str | None = None,
                             folder: str | None = None, tag: str | None = None, q: str | None = None,
                             sort: str = "created_at", order: str = "desc", cursor: str | None = None
                             ) -> dict[str, Any]:
        return await self._services.campaigns.list_campaigns(ws, page=page, per_page=per_page, status=status,
                                                             folder=folder, tag=tag, q=q, sort=sort, order=order,
                                                             cursor=cursor)

    async def update_campaign(self, ws: str, cid: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._services.campaigns.update_campaign(ws, cid, body)

    async def set_schedule(self, ws: str, cid: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._services.campaigns.set_schedule(ws, cid, body)

    async def copy_campaign(self, ws: str, cid: str) -> dict[str, Any]:
        return await self._services.campaigns.copy_campaign(ws, cid)

    async def approve_campaign(self, ws: str, cid: str) -> dict[str, Any]:
        return await self._services.campaigns.approve_campaign(ws, cid)

    async def launch_campaign(self, ws: str, cid: str) -> dict[str, Any]:
        return await self._services.campaigns.launch_campaign(ws, cid)

    async def pause_campaign(self, ws: str, cid: str) -> dict[str, Any]:
        return await self._services.campaigns.pause_campaign(ws, cid)

    async def resume_campaign(self, ws: str, cid: str) -> dict[str, Any]:
        return await self._services.campaigns.resume_campaign(ws, cid)

    async def complete_campaign(self, ws: str, cid: str) -> dict[str, Any]:
        return await self._services.campaigns.complete_campaign(ws, cid)

    async def cancel_campaign(self, ws: str, cid: str) -> dict[str, Any]:
        return await self._services.campaigns.cancel_campaign(ws, cid)

    async def archive_campaign(self, ws: str, cid: str) -> dict[str, Any]:
        return await self._services.campaigns.archive_campaign(ws, cid)

    async def delete_campaign(self, ws: str, cid: str) -> dict[str, Any]:
        return await self._services.campaigns.delete_campaign(ws, cid)

    async def bulk_delete_campaigns(self, ws: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._services.campaigns.bulk_delete_campaigns(ws, body)

    async def enroll(self, ws: str, cid: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._services.campaigns.enroll(ws, cid, body)

    async def list_enrollments(self, ws: str, cid: str, *, status: str | None = None, batch_number: int | None = None,
                               page: int = 1, per_page: int = 50, cursor: str | None = None) -> dict[str, Any]:
        return await self._services.campaigns.list_enrollments(ws, cid, status=status, batch_number=batch_number,
                                                               page=page, per_page=per_page, cursor=cursor)

    async def remove_enrollments(self, ws: str, cid: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._services.campaigns.remove_enrollments(ws, cid, body)

    async def dispatch(self, ws: str, cid: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._services.campaigns.dispatch(ws, cid, body)

    async def campaign_stats(self, ws: str, cid: str) -> dict[str, Any]:
        return await self._services.campaigns.campaign_stats(ws, cid)

    async def campaign_stats_many(self, ws: str, cids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return await self._services.campaigns.campaign_stats_many(ws, cids)

    # -- the tick (SendingService) ------------------------------------------------------------------------------
    async def tick(self) -> TickReport:
        return await self._services.sending.tick()

    async def next_due(self, now: datetime) -> datetime | None:
        return await self._services.sending.next_due(now)

    # -- forecasts (ForecastService) ----------------------------------------------------------------------------
    async def forecast(self, ws: str, cid: str, days: int = 7, **what_if: Any) -> dict[str, Any]:
        return await self._services.forecasts.forecast(ws, cid, days, **what_if)

    async def workspace_forecast(self, ws: str, days: int = 7) -> dict[str, Any]:
        return await self._services.forecasts.workspace_forecast(ws, days)

    # -- previews and test sends (PreviewService) ---------------------------------------------------------------
    async def preview(self, ws: str, cid: str, contact_id: str | None = None, step: int | None = None) -> dict[str,
                      Any]:
        return await self._services.previews.preview(ws, cid, contact_id, step)

    async def test_send(self, ws: str, cid: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._services.previews.test_send(ws, cid, body)

    # -- mailboxes (InboundService) -----------------------------------------------------------------------------
    async def poll_mailboxes(self) -> PollReport:
        return await self._services.inbound.poll_mailboxes()

    async def receive_message(self, raw: bytes, *, workspace_id: str | None = None,
                              sender_id: str | None = None) -> PollReport:
        return await self._services.inbound.receive_message(raw, workspace_id=workspace_id, sender_id=sender_id)

    async def handle_inbound(self, conn: AsyncConnection, ws: str, raw: bytes, report: PollReport) -> None:
        return await self._services.inbound.handle_inbound(conn, ws, raw, report)

    # -- opens, clicks, unsubscribe links (TrackingService) -----------------------------------------------------
    async def track_open(self, token: str, user_agent: str | None = None) -> bool:
        return await self._services.tracking.track_open(token, user_agent)

    async def track_click(self, token: str, user_agent: str | None = None, *, head: bool = False) -> str:
        return await self._services.tracking.track_click(token, user_agent, head=head)

    async def unsubscribe_status(self, token: str) -> str:
        return await self._services.tracking.unsubscribe_status(token)

    async def unsubscribe_one_click(self, token: str) -> bool:
        return await self._services.tracking.unsubscribe_one_click(token)

    # -- reports (ReportService) --------------------------------------------------------------------------------
    async def campaign_step_stats(self, ws: str, cid: str) -> list[dict[str, Any]]:
        return await self._services.reports.campaign_step_stats(ws, cid)

    async def campaign_link_stats(self, ws: str, cid: str) -> list[dict[str, Any]]:
        return await self._services.reports.campaign_link_stats(ws, cid)

    async def campaign_timeline(self, ws: str, cid: str, *, from_: Any = None, to: Any = None,
                                interval: Any = "day") -> list[dict[str, Any]]:
        return await self._services.reports.campaign_timeline(ws, cid, from_=from_, to=to, interval=interval)

    async def campaign_activity(self, ws: str, cid: str, *, type: Any = None, contact_id: str | None = None,
                                from_: Any = None, to: Any = None, after: Any = None, limit: Any = None,
                                cursor: str | None = None) -> dict[str, Any]:
        return await self._services.reports.campaign_activity(ws, cid, type=type, contact_id=contact_id, from_=from_,
                                                              to=to, after=after, limit=limit, cursor=cursor)

    async def campaign_skips(self, ws: str, cid: str, *, kind: Any = None, limit: Any = None) -> list[dict[str, Any]]:
        return await self._services.reports.campaign_skips(ws, cid, kind=kind, limit=limit)

    async def campaign_replies(self, ws: str, cid: str, *, limit: Any = None) -> list[dict[str, Any]]:
        return await self._services.reports.campaign_replies(ws, cid, limit=limit)

    # -- webhook delivery (WebhookService) ----------------------------------------------------------------------
    async def deliver_webhooks(self, max_events: int = 1000) -> WebhookReport:
        return await self._services.webhooks.deliver_webhooks(max_events)

    async def webhook_deliveries(self, ws: str, wid: str) -> dict[str, Any]:
        return await self._services.webhooks.webhook_deliveries(ws, wid)

    # -- send counts (UsageCounts) ------------------------------------------------------------------------------
    async def sent_this_month(self, ws: str) -> int:
        return await self._services.usage.sent_this_month(ws)

    async def sent_today(self, ws: str) -> int:
        return await self._services.usage.sent_today(ws)

    async def sender_usage(self, ws: str, sid: str) -> tuple[int, float]:
        return await self._services.usage.sender_usage(ws, sid)


__all__ = ["CampaignEngine", "Workspace"]
