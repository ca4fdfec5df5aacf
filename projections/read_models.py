"""The management read models, in the order the projector applies them."""

from __future__ import annotations

from projections.base import Projection
from projections.campaigns import campaigns
from projections.contacts import contacts
from projections.engagement import engagement
from projections.enrollments import enrollments
from projections.listing_totals import listing_totals
from projections.senders import senders
from projections.workspaces import workspaces

MANAGEMENT: list[Projection] = [workspaces, senders, contacts, campaigns, enrollments, engagement, listing_totals]
