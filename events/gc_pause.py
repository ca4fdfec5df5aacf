"""Pausing Python's cyclic garbage collector around a synchronous burst of allocations."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused_gc() -> Iterator[None]:
    """The cyclic collector off for the ``with`` block (synchronous code only), as it was after.

    A bulk path (an import's rows, an append of thousands of events) allocates tens of thousands
    of small containers that all live to its end; each automatic collection on the way walks them
    again, and the full ones walk every object of the process too: a sixth of an import's CPU.
    Reference counting still frees everything that is not a cycle; the collector runs as usual at
    the next allocations after the block. Only for code that does not await: other tasks would run
    with the collector off.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def freeze_long_lived() -> int:
    """Move every object alive now out of the cyclic collector's sight; the count moved.

    A served process keeps hundreds of thousands of objects from its start for ever (modules,
    classes, the app's routes and schemas, SQLAlchemy's compiled statements). Each full collection
    walks them all again: about 60 ms with 200,000 objects, landing on whichever request is
    running, which made the slowest pages of a listing. Called once when ``serve`` or ``worker`` has
    finished starting (``gc.freeze``, meant for this), the later collections walk only what was made
    since. Nothing is leaked: frozen objects are still freed by reference counting.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
