"""Reasons named by the error catalogues of large remote mail providers."""

from __future__ import annotations

from engine.delivery.dsn_model import Finding


def rhost_reason(f: Finding) -> str:
    """The reason a known remote provider's error wording names, or ``""``."""
    return ""


__all__ = ["rhost_reason"]
