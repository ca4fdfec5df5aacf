"""One RFC 3463 status rule: a refusal during the SMTP dialogue is typed as the same answer quoted
in a delivery status notification is (``refusal_type`` and ``classify_message`` agree)."""

from __future__ import annotations

import pytest

from engine.delivery.bounces import classify_message, refusal_type
from engine.domain.enrollment import refusal_type as deciders_refusal_type
from tests.delivery.test_classify_unit import dsn

# Answers whose words say no more than their status, so the DSN is typed by its status alone.
STATUSES = ("5.1.1", "5.1.2", "5.1.8", "5.2.1", "5.2.2", "5.2.3", "5.3.4", "5.4.4", "5.6.0", "5.7.17")


@pytest.mark.parametrize("status", STATUSES)
def test_a_refusal_and_the_same_answer_in_a_dsn_get_one_type(status: str) -> None:
    [entry] = classify_message(dsn(status, f"550 {status} refused")).bounces
    assert refusal_type(550, status) == entry.type


def test_the_deciders_use_the_classifiers_rule_and_its_fallbacks() -> None:
    assert deciders_refusal_type is refusal_type
    assert refusal_type(550, "5.7.99") == "block"  # a detail the table lacks: its subject (policy)
    assert refusal_type(550, "5.1.99") == "hard"  # the address
    assert refusal_type(552, "5.0.0") == "soft" and refusal_type(550, None) == "hard"  # no subject: the reply
