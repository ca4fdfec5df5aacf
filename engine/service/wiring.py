"""The composition root: every service of the application layer, built in one place.

Each service says in its constructor what it uses (the store, the clock, the vault, the mailer,
the MX checker, the options, the public URL) and which small shared services it needs:

- :class:`~engine.service.suppressions.Suppressions`: is an address suppressed, the event that suppresses one;
- :class:`~engine.service.stops.EnrollmentStops`: stop open enrollments with their waiting email cancelled;
- :class:`~engine.service.usage.UsageCounts`: sends this month, today, per sender (plan limit, health);
- :class:`~engine.service.guards.DeliveryGuards`: sender bounce rates, campaign health, hard and soft bounces;
- :class:`~engine.service.unsubscribes.Unsubscribes`: the one unsubscribe routine (link, mailto, complaint);
- :class:`~engine.service.signals.WorkSignal`: commands wake the runtime loop;
- :class:`~engine.service.signals.StopNotes`: committed stops reach the claims of a tick in flight;
- :class:`~engine.service.auto_enroll.AutoEnroll`: contact commands enroll the contacts they bring into an
  active campaign's ``settings.auto_enroll``, through the campaign service's one enroll path.

Nothing inherits from anything to share code, and no service reaches into another's insides:
what two services share is one of the objects above, handed to both here.
:class:`engine.facade.CampaignEngine` calls :func:`build_services` when it opens and forwards
each public method to the service that owns it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.clock import Clock
from engine.delivery.outbound.smtp import SmtpMailer
from engine.service.auto_enroll import AutoEnroll
from engine.service.campaigns import CampaignService
from engine.service.forecast import ForecastService
from engine.service.guards import DeliveryGuards
from engine.service.inbound import InboundService
from engine.service.management import ManagementService
from engine.service.preview import PreviewService
from engine.service.reports import ReportService
from engine.service.sending import SendingService
from engine.service.signals import StopNotes, WorkSignal
from engine.service.stats import StatsService
from engine.service.stops import EnrollmentStops
from engine.service.suppressions import Suppressions
from engine.service.tracking import TrackingService
from engine.service.unsubscribes import Unsubscribes
from engine.service.usage import UsageCounts
from engine.service.webhooks import WebhookService
from engine.service.workspaces import WorkspaceService
from events.store import EventStore
from events.vault import Vault

if TYPE_CHECKING:
    from engine.delivery.lookups.mx import MxChecker


@dataclass(frozen=True, slots=True)
class Services:
    """Every service of one open engine: the public ones the facade forwards to, then the shared ones."""

    workspaces: WorkspaceService
    management: ManagementService
    campaigns: CampaignService
    stats: StatsService
    forecasts: ForecastService
    previews: PreviewService
    sending: SendingService
    inbound: InboundService
    tracking: TrackingService
    reports: ReportService
    webhooks: WebhookService
    usage: UsageCounts
    suppressions: Suppressions
    stops: EnrollmentStops
    guards: DeliveryGuards
    unsubscribes: Unsubscribes
    work: WorkSignal
    stop_notes: StopNotes
    auto_enroll: AutoEnroll


def build_services(*, store: EventStore, clock: Clock, vault: Vault, options: dict[str, Any], public_url: str,
                   mailer: SmtpMailer, mx: MxChecker) -> Services:
    """Build the services on an open store, each with exactly what it uses."""
    work = WorkSignal()
    stop_notes = StopNotes()
    usage = UsageCounts(store, clock)
    suppressions = Suppressions(store, vault)
    stops = EnrollmentStops(store)
    guards = DeliveryGuards(store, stops, suppressions)
    unsubscribes = Unsubscribes(store, vault, stops, suppressions)
    stats = StatsService(store, clock)
    campaigns = CampaignService(store, clock, vault, stats=stats, suppressions=suppressions, stops=stops,
                                usage=usage, work=work)
    auto_enroll = AutoEnroll(store, enroll=campaigns.enroll_contacts)
    return Services(
        workspaces=WorkspaceService(store, clock),
        management=ManagementService(store, clock, vault, options, public_url, mailer=mailer,
                                     suppressions=suppressions, stops=stops, usage=usage, work=work,
                                     auto_enroll=auto_enroll),
        campaigns=campaigns,
        stats=stats,
        forecasts=ForecastService(store, clock),
        previews=PreviewService(store, clock, vault, options, public_url, mailer=mailer, usage=usage,
                                suppressions=suppressions),
        sending=SendingService(store, clock, vault, options, public_url, mailer=mailer, mx=mx,
                               suppressions=suppressions, guards=guards, stop_notes=stop_notes),
        inbound=InboundService(store, clock, vault, options, guards=guards, stops=stops, unsubscribes=unsubscribes),
        tracking=TrackingService(store, clock, vault, options, unsubscribes=unsubscribes),
        reports=ReportService(store, clock, stats=stats),
        webhooks=WebhookService(store, clock, vault, options),
        usage=usage,
        suppressions=suppressions,
        stops=stops,
        guards=guards,
        unsubscribes=unsubscribes,
        work=work,
        stop_notes=stop_notes,
        auto_enroll=auto_enroll,
    )


__all__ = ["Services", "build_services"]
