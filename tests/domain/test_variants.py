"""A/B variants: the seeded weighted choice, the auto-winner rule, and step validation."""

from __future__ import annotations

from collections import Counter

import pytest

from engine.domain import models as m
from engine.domain.campaign import template_problems
from engine.domain.definition import StepDefinition
from engine.domain.variants import VariantCounts, choose_variant, pick_winner

RAW_STEP = {"subject": "S", "variants": [{"id": "A", "weight": 1}, {"id": "B", "weight": 3}]}
STEP = StepDefinition.from_dict(RAW_STEP)


def test_choice_is_stable_per_enrollment_and_step() -> None:
    """A retry (or the forecast) draws again and must get the same variant."""
    for n in range(50):
        first = choose_variant(STEP, f"enr_{n}", 1)
        assert first in ("A", "B")
        assert all(choose_variant(STEP, f"enr_{n}", 1) == first for _ in range(3))


def test_choice_follows_the_weights() -> None:
    drawn = Counter(choose_variant(STEP, f"enr_{n}", 2) for n in range(4000))
    assert set(drawn) == {"A", "B"}
    assert 0.70 < drawn["B"] / 4000 < 0.80  # weight 3 of 4


def test_a_recorded_winner_gets_every_email_and_no_variants_means_none() -> None:
    assert {choose_variant(STEP, f"enr_{n}", 1, "A") for n in range(200)} == {"A"}
    assert choose_variant(STEP, "enr_1", 1, "Z") in ("A", "B")  # a winner no longer in the step: drawn
    assert choose_variant(StepDefinition.from_dict({"subject": "S"}), "enr_1", 1) is None


def test_winner_once_the_step_has_sent_enough_across_its_variants() -> None:
    step = StepDefinition.from_dict({**RAW_STEP, "winner": {"metric": "reply_rate", "after_sends": 10}})
    few = [VariantCounts("A", 4, 0, 0, 1), VariantCounts("B", 5, 0, 0, 0)]
    assert pick_winner(step, few) is None
    enough = [VariantCounts("A", 4, 0, 0, 1), VariantCounts("B", 6, 0, 0, 0)]
    assert pick_winner(step, enough) == ("A", 25.0)
    tie = [VariantCounts("B", 5, 0, 0, 0), VariantCounts("A", 5, 0, 0, 0)]
    assert pick_winner(step, tie) == ("A", 0.0)  # a tie goes to the variant listed first
    assert pick_winner(STEP, enough) is None  # no winner rule


def test_step_validation_defaults_ids_and_checks_counts_and_tags() -> None:
    step = m.StepIn.model_validate({"subject": "x", "variants": [{"subject": "a"}, {"body_html": "b", "weight": 5}],
                                    "winner": {"metric": "open_rate", "after_sends": 20}})
    assert [v.id for v in step.variants or []] == ["A", "B"]
    for bad in ({"variants": [{"subject": "a"}]},
                {"variants": [{"id": "A"}, {"id": "A"}]},
                {"variants": [{"id": "A"}, {"id": "B", "weight": 0}]},
                {"variants": [{}, {}], "winner": {"metric": "bounce_rate"}},
                {"winner": {"metric": "open_rate"}}):
        with pytest.raises(ValueError):
            m.StepIn.model_validate({"subject": "x", **bad})
    problems = template_problems({"steps": [{"subject": "x", "variants": [{"subject": "{{nope}}"}, {}]}]})
    assert [p["field"] for p in problems] == ["steps.0.variants.0.subject"]
