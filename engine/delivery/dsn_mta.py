"""Reasons that a bounce's own boilerplate states, before any generic wording rule is tried."""

from __future__ import annotations

from engine.delivery.dsn_model import Finding


def mta_reason(f: Finding, text: str, subject: str) -> str:
    """The reason the notifying MTA's own wording names for this recipient, or ``""``."""
    return ""


__all__ = ["mta_reason"]
