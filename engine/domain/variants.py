"""A/B variants of a step: which variant an enrollment gets, and when a step's auto-winner is decided.

Pure functions. The choice is a weighted draw seeded by a SHA-256 of (enrollment, step), never by
Python's ``hash()`` or a shared random state, so the same enrollment always gets the same variant:
a retry after a deferral sends the same content, and a forecast made now can tell which variant
the tick will send. Once a winner is recorded (``campaign.variant_won``), it replaces the draw.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from engine.domain.definition import StepDefinition
from engine.schedule.slots import stable_seed

__all__ = ["METRICS", "VariantCounts", "choose_variant", "pick_winner"]

#: The metrics an auto-winner may be chosen by, each the count it divides by ``sent``.
METRICS = {"reply_rate": "replied", "open_rate": "opened", "click_rate": "clicked"}


def choose_variant(step: StepDefinition, enrollment_id: str, step_number: int,
                   winner: str | None = None) -> str | None:
    """The variant id enrollment ``enrollment_id`` is sent for step ``step_number``, or None without variants.

    ``winner``: the variant recorded as the step's winner, which then gets every email (ignored
    when the step no longer has a variant of that id, e.g. after an edit).
    """
    if not step.variants:
        return None
    ids = step.variant_ids()
    if winner is not None and winner in ids:
        return winner
    weights = [variant.weight for variant in step.variants]
    draw = random.Random(stable_seed("variant", enrollment_id, step_number)).randrange(sum(weights))
    for variant, weight in zip(ids, weights, strict=True):
        if draw < weight:
            return variant
        draw -= weight
    raise AssertionError("unreachable: the draw is below the sum of the weights")


@dataclass(frozen=True, slots=True)
class VariantCounts:
    """One variant's counts in a step, as ``stats/steps`` reports them."""

    variant: str
    sent: int
    opened: int
    clicked: int
    replied: int

    def rate(self, metric: str) -> float:
        """``metric`` as a percentage of the sent emails, rounded as the stats round it."""
        count = getattr(self, METRICS[metric])
        return round(100.0 * count / self.sent, 2) if self.sent else 0.0


def pick_winner(step: StepDefinition, counts: Sequence[VariantCounts]) -> tuple[str, float] | None:
    """(variant, value) once the step has sent ``winner.after_sends`` emails across its variants, else None.

    The best rate by the step's metric wins; a tie goes to the variant listed first, so the
    decision does not depend on the order the counts come in.
    """
    rule = step.winner
    ids = step.variant_ids()
    if rule is None or not ids:
        return None
    metric = rule.metric
    by_id = {c.variant: c for c in counts if c.variant in ids}
    if sum(c.sent for c in by_id.values()) < rule.after_sends:
        return None
    zero = VariantCounts("", 0, 0, 0, 0)
    best = max(ids, key=lambda vid: (by_id.get(vid, zero).rate(metric), -ids.index(vid)))
    return best, by_id.get(best, zero).rate(metric)
