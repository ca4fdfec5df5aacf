"""Start-up objects frozen out of the cyclic collector's walks (``serve`` and ``worker`` do it once)."""

from __future__ import annotations

import gc

from events.gc_pause import freeze_long_lived


def test_objects_alive_at_start_up_are_no_longer_walked_by_collections() -> None:
    # Given a process holding long-lived containers, nothing frozen yet
    gc.unfreeze()
    held = [[index] for index in range(10_000)]
    try:
        # When it freezes what is alive once started
        frozen = freeze_long_lived()
        # Then those containers sit in the permanent generation: a full collection skips them
        assert frozen == gc.get_freeze_count() >= len(held)
        tracked = {id(item) for item in gc.get_objects()}
        assert not any(id(item) in tracked for item in held[:100])
    finally:
        gc.unfreeze()  # the rest of the suite runs as a process that froze nothing
