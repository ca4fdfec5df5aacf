"""A model of the engine's tick loop over the public planner API, as the lead will wire it.

Each tick rebuilds the usage from the list of sends (as the engine reads it from its log), calls
plan(), "sends", queues the next step with follow_up() and asks next_due_at() when to wake.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from engine.schedule import (
    Assignment,
    CampaignPlan,
    Plan,
    QueueItem,
    SenderPlan,
    SendRecord,
    SimulatedSend,
    Usage,
    default_email_id,
    follow_up,
    next_due_at,
    plan,
)


@dataclass
class Ticker:
    campaigns: Mapping[str, CampaignPlan]
    senders: Mapping[str, SenderPlan]
    queue: list[QueueItem]
    history: list[SendRecord] = field(default_factory=list)
    monthly_limits: Mapping[str, int | None] = field(default_factory=dict)
    sent: list[Assignment] = field(default_factory=list)
    next_due: datetime | None = None

    def usage(self) -> Usage:
        return Usage.from_sends(self.history, self.campaigns)

    def tick(self, now: datetime) -> Plan:
        p = plan(now, self.queue, self.campaigns, self.senders, self.usage(), self.monthly_limits)
        gone = {a.item.email_id for a in p.sends}
        self.queue = [i for i in self.queue if i.email_id not in gone]
        followed = False
        for a in p.sends:
            campaign = self.campaigns[a.item.campaign_id]
            self.sent.append(a)
            self.history.append(SendRecord(campaign.campaign_id, a.sender_id, campaign.workspace_id, a.at,
                                           a.item.domain))
            nxt = follow_up(a, campaign, default_email_id(a.item.enrollment_id, a.item.step + 1))
            if nxt is not None:
                self.queue.append(nxt)
                followed = True
        usage = self.usage()
        assert p.usage == usage, "plan() usage differs from the usage rebuilt from the sends"
        self.next_due = next_due_at(now, self.queue, self.campaigns, self.senders, usage, self.monthly_limits)
        if not followed:
            assert p.next_due_at == self.next_due
        return p

    def run(self, start: datetime, until: datetime) -> None:
        """Tick at `start`, then at each next due time up to `until` (inclusive)."""
        at: datetime | None = start
        while at is not None and at <= until:
            self.tick(at)
            at = self.next_due

    def simulated(self) -> list[SimulatedSend]:
        return as_simulated(self.sent)


def as_simulated(sends: Iterable[Assignment]) -> list[SimulatedSend]:
    return [
        SimulatedSend(
            email_id=a.item.email_id,
            enrollment_id=a.item.enrollment_id,
            campaign_id=a.item.campaign_id,
            step=a.item.step,
            sender_id=a.sender_id,
            at=a.at,
        )
        for a in sends
    ]
