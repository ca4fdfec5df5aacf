"""Campaign lifecycle events. ``definition`` is the whole normalised campaign body."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from events.registry import Event, register


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class CampaignCreated(Event):
    TYPE = "campaign.created"
    campaign_id: str
    definition: dict[str, Any]
    copied_from: str | None = None


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class CampaignUpdated(Event):
    TYPE = "campaign.updated"
    campaign_id: str
    changes: dict[str, Any]


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class CampaignScheduleChanged(Event):
    TYPE = "campaign.schedule_changed"
    campaign_id: str
    schedule: dict[str, Any]


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class CampaignApproved(Event):
    TYPE = "campaign.approved"
    campaign_id: str


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class CampaignLaunched(Event):
    """``status`` is ``active``, or ``scheduled`` when ``launch_at`` lies in the future."""

    TYPE = "campaign.launched"
    campaign_id: str
    status: str
    launch_at: datetime | None


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class CampaignActivated(Event):
    """A scheduled campaign reached its ``launch_at`` (recorded by tick)."""

    TYPE = "campaign.activated"
    campaign_id: str


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class CampaignPaused(Event):
    """``reason`` says why the engine paused it (a bounce or complaint guard); None for a user's pause."""

    TYPE = "campaign.paused"
    campaign_id: str
    reason: str | None = None


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class CampaignResumed(Event):
    TYPE = "campaign.resumed"
    campaign_id: str


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class CampaignCompleted(Event):
    TYPE = "campaign.completed"
    campaign_id: str


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class CampaignCancelled(Event):
    TYPE = "campaign.cancelled"
    campaign_id: str


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class CampaignArchived(Event):
    TYPE = "campaign.archived"
    campaign_id: str


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class CampaignDeleted(Event):
    TYPE = "campaign.deleted"
    campaign_id: str


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class CampaignBatchDispatched(Event):
    TYPE = "campaign.batch_dispatched"
    campaign_id: str
    batch_number: int


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class CampaignVariantWon(Event):
    """A step's auto-winner was decided: ``variant`` gets every later email of ``step``.

    ``value`` is the variant's ``metric`` (a percentage, as in ``stats/steps``) when it won.
    """

    TYPE = "campaign.variant_won"
    campaign_id: str
    step: int
    variant: str
    metric: str
    value: float
