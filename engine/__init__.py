"""campaign-engine: an event-sourced sending engine for multi-step email campaigns.

Public names are imported lazily so that importing one pure module (say the classifier) does not
pull in the database layer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from engine.api import create_app
    from engine.clock import Clock, ManualClock, SystemClock
    from engine.delivery.bounces import classify_message
    from engine.facade import CampaignEngine

__all__ = ["CampaignEngine", "Clock", "ManualClock", "SystemClock", "classify_message", "create_app"]

_LAZY = {
    "CampaignEngine": ("engine.facade", "CampaignEngine"),
    "Clock": ("engine.clock", "Clock"),
    "ManualClock": ("engine.clock", "ManualClock"),
    "SystemClock": ("engine.clock", "SystemClock"),
    "classify_message": ("engine.delivery.bounces", "classify_message"),
    "create_app": ("engine.api", "create_app"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
