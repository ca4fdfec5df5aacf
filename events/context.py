"""Who is acting: the metadata every appended event carries without each caller passing it.

The edge that knows (the API with its key and request id, the CLI, the runtime loop, the inbound
poller, the tracking endpoints) opens an :func:`acting` block; every append inside it, however
deep, records that ``actor`` and ``request_id``. An append outside any block is a direct call of
an embedding application: ``actor: "embedded"``. Metadata passed to an append explicitly wins.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

_CURRENT: ContextVar[dict[str, Any] | None] = ContextVar("campaign_engine_actor", default=None)
EMBEDDED = "embedded"


@contextmanager
def acting(**fields: Any) -> Iterator[dict[str, Any]]:
    """Events appended inside carry `fields` (actor, request_id, route...); an outer block's fields
    stay unless named again. Yields the block's dict, which the edge may complete later (the API
    learns the key's id only after authenticating it)."""
    outer = _CURRENT.get()
    current = {**(outer or {}), **{key: value for key, value in fields.items() if value is not None}}
    token = _CURRENT.set(current)
    try:
        yield current
    finally:
        _CURRENT.reset(token)


def current() -> dict[str, Any]:
    """The metadata of the innermost block (empty outside any)."""
    return dict(_CURRENT.get() or {})


def note(**fields: Any) -> None:
    """Complete the innermost block (no effect outside one)."""
    found = _CURRENT.get()
    if found is not None:
        found.update({key: value for key, value in fields.items() if value is not None})


def event_metadata(explicit: dict[str, Any] | None) -> dict[str, Any]:
    """What an append records: the block's fields, ``actor`` at least, then the explicit ones."""
    return {"actor": EMBEDDED, **(_CURRENT.get() or {}), **(explicit or {})}
