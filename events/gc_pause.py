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
