"""The working record of one failed (or delivered) recipient while a bounce is being read.

Each format-specific reader fills what its format states (recipient, status, diagnostic text, the
SMTP command, sometimes a reason it can tell from its own wording); the shared step in
:mod:`engine.delivery.bounces.finalise` then completes and reconciles the fields. It is mutable on
purpose and never leaves the package: the public result is the frozen ``BounceEntry``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Finding:
    """What is known about one recipient named in a delivery status notification."""

    recipient: str = ""
    status: str = ""
    reply_code: str = ""
    diagnosis: str = ""
    action: str = ""
    command: str = ""
    rhost: str = ""
    lhost: str = ""
    reason: str = ""
    diagnostic_type: str = ""

    def merge(self, other: Finding) -> None:
        """Fill the fields still empty here from ``other`` (a second reading of the same recipient)."""
        for name in ("status", "reply_code", "diagnosis", "action", "command", "rhost", "lhost", "reason",
                     "diagnostic_type"):
            if not getattr(self, name) and getattr(other, name):
                setattr(self, name, getattr(other, name))
