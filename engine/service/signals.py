"""In-process signals between the commands and the loop: "work may be due" and "a stop was committed".

Both are small objects shared by several services, built once in ``engine/service/wiring.py``:

- :class:`WorkSignal`: commands that create work earlier than the loop's next planned tick (a
  launch, an enrollment, a live edit) call :meth:`WorkSignal.notify`; the runtime loop, when one
  runs in this process, subscribes its wake-up to it. Without a loop nothing listens and nothing
  happens.
- :class:`StopNotes`: an after-commit hook of the store counts the commits that may stop claimed
  emails (a pause, an unsubscribe, an erasure...), so that a tick in flight checks its claims
  again before their SMTP transactions begin; a shutdown drains through it too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from events.store import StoredEvent

# Events after which a claim not yet sent may have to go back (see SendingService).
STOP_TYPES = frozenset({"campaign.paused", "campaign.cancelled", "campaign.deleted", "campaign.archived",
                        "contact.unsubscribed", "contact.erased", "suppression.added", "sender.disabled",
                        "sender.removed", "enrollment.stopped", "enrollment.removed"})


class WorkSignal:
    """Commands say "earlier work may exist now"; whoever subscribed (the runtime loop) is woken."""

    def __init__(self) -> None:
        self._listeners: list[Callable[[], None]] = []

    def subscribe(self, wake: Callable[[], None]) -> Callable[[], None]:
        """Call ``wake`` on every :meth:`notify` until the returned function is called."""
        self._listeners.append(wake)

        def unsubscribe() -> None:
            if wake in self._listeners:
                self._listeners.remove(wake)

        return unsubscribe

    def notify(self) -> None:
        """Tell the runtime loop (if one runs) that earlier work may exist now."""
        for wake in list(self._listeners):
            wake()


class StopNotes:
    """Counts committed stops (``generation``) and says whether the engine is shutting down."""

    def __init__(self) -> None:
        self.generation = 0  # bumped by every committed stop (and by a shutdown)
        self.draining = False  # shutting down: no new SMTP transaction starts

    async def note_stops(self, events: Sequence[StoredEvent]) -> None:
        """After-commit hook: a pause, cancel, unsubscribe, erasure, suppression or sender stop was
        committed, so the claims of a tick in flight are checked again before their SMTP begins."""
        if any(event.type in STOP_TYPES for event in events):
            self.generation += 1

    def drain(self) -> None:
        """Shutdown: SMTP transactions already started finish; claims not yet sent are released."""
        self.draining = True
        self.generation += 1

    def resume(self) -> None:
        """A new tick: a shutdown drains the tick in flight, not the engine's later use."""
        self.draining = False


__all__ = ["STOP_TYPES", "StopNotes", "WorkSignal"]
