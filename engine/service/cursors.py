"""Keyset cursors: the opaque ``cursor`` / ``next_cursor`` strings of every long listing.

A page reached by ``page=N`` costs an OFFSET: the database walks the N-1 pages before it. A page
reached by a cursor costs one index seek whatever its depth: the cursor carries the sort key of the
last row answered (``created_at`` and ``id`` of a contact, ``seq`` and ``id`` of an enrollment, a
log position...), and the next page is the rows after that key in the listing's order.

A cursor is ``<payload>.<mac>``, both base64url: the payload is the key and the number of rows
before the next page (JSON), the MAC an HMAC-SHA256 under a key derived from the engine's secret
over the payload *and* what the cursor belongs to (the listing, the workspace and the listing's
filters). So a client cannot forge one, and a cursor altered, cut, or taken to another listing,
another set of filters or another workspace fails the MAC and answers 422 ``validation_failed``
naming ``cursor``, before anything is read. Nothing in a cursor is secret (it holds sort keys the
client has already seen); it is signed so that a seek always starts from a key the engine made.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, or_, tuple_
from sqlalchemy.sql.elements import ColumnElement

from engine.errors import ValidationFailed
from events.vault import Vault

KeyValue = str | int
"""One sort key value of a row: the listings order by strings (times, ids) and integers only."""

MAX_CURSOR_LENGTH = 2048
"""Longer than any cursor the engine makes (a few keys of at most 64 characters): anything longer
is refused before it is decoded."""

_LABEL = b"campaign-engine pagination cursors v1"
_MAC_BYTES = 16


def cursor_error(message: str = "cursor is malformed, was altered, or belongs to another listing, "
                                "filter or workspace") -> ValidationFailed:
    """The one refusal of a bad cursor: 422 validation_failed naming ``cursor``."""
    return ValidationFailed([{"field": "cursor", "message": message}])


@dataclass(frozen=True, slots=True)
class Position:
    """Where a cursor page starts: after the row whose sort key is ``key``, ``offset`` rows in."""

    key: tuple[KeyValue, ...]
    offset: int


class Cursors:
    """Makes and checks cursors under a key derived from the engine's secret.

    The key is an HMAC of a fixed label under the vault's token key: derived, so a cursor's MAC
    tells nothing of the keys that sign tracking tokens, and fixed, so cursors stay valid across
    restarts of an engine that keeps its secret.
    """

    def __init__(self, vault: Vault) -> None:
        self._key = hmac.new(vault.token_key, _LABEL, hashlib.sha256).digest()

    def _mac(self, scope: bytes, payload: bytes) -> bytes:
        return hmac.new(self._key, scope + b"\x00" + payload, hashlib.sha256).digest()[:_MAC_BYTES]

    @staticmethod
    def scope(listing: str, workspace: str, filters: Mapping[str, Any]) -> bytes:
        """What a cursor belongs to, in one canonical byte string (filters in key order)."""
        return json.dumps([listing, workspace, filters], sort_keys=True, separators=(",", ":"),
                          default=str).encode()

    def encode(self, scope: bytes, key: Sequence[KeyValue], offset: int) -> str:
        """The cursor of the page after the row with sort key ``key``, ``offset`` rows from the start."""
        payload = json.dumps({"k": list(key), "o": offset}, separators=(",", ":")).encode()
        return f"{_b64(payload)}.{_b64(self._mac(scope, payload))}"

    def decode(self, scope: bytes, cursor: Any, width: int) -> Position:
        """The position a cursor made by :meth:`encode` for the same scope holds, or 422 naming ``cursor``.

        ``width`` is the number of sort key columns of the listing: a payload of another shape is
        refused even under a good MAC (it would be a cursor of an older shape of the listing).
        """
        if not isinstance(cursor, str) or not cursor or len(cursor) > MAX_CURSOR_LENGTH:
            raise cursor_error("cursor must be a next_cursor string this listing answered")
        encoded_payload, dot, encoded_mac = cursor.partition(".")
        try:
            payload, mac = _unb64(encoded_payload), _unb64(encoded_mac)
        except (binascii.Error, ValueError):
            raise cursor_error() from None
        if not dot or not hmac.compare_digest(mac, self._mac(scope, payload)):
            raise cursor_error()
        try:
            decoded = json.loads(payload)
        except ValueError:
            raise cursor_error() from None
        key, offset = (decoded.get("k"), decoded.get("o")) if isinstance(decoded, dict) else (None, None)
        if (not isinstance(key, list) or len(key) != width
                or not all(isinstance(v, str | int) and not isinstance(v, bool) for v in key)
                or not isinstance(offset, int) or isinstance(offset, bool) or offset < 0):
            raise cursor_error()
        return Position(tuple(key), offset)


@dataclass(frozen=True, slots=True)
class SortKey:
    """One column of a listing's order: the column, the name its value has in a result row, the direction."""

    column: Any
    name: str
    descending: bool = False

    def ordering(self) -> Any:
        return self.column.desc() if self.descending else self.column.asc()


@dataclass(frozen=True, slots=True)
class Listing:
    """One listing as a cursor sees it: its name, the workspace, the filters in force, its order.

    The order ends with a unique column (an id, a log position), so that "after this key" is exact
    even between rows that tie on the first columns (contacts imported in one request share their
    ``created_at``), and every page-based listing orders by exactly these columns, so that walking
    by pages and walking by cursors give the same rows in the same order.
    """

    name: str
    workspace: str
    filters: Mapping[str, Any]
    order: tuple[SortKey, ...]

    def scope(self) -> bytes:
        return Cursors.scope(self.name, self.workspace, self.filters)

    def ordering(self) -> list[Any]:
        return [key.ordering() for key in self.order]

    def key_of(self, row: Mapping[str, Any]) -> tuple[KeyValue, ...]:
        """The sort key of a result row, as a cursor carries it."""
        return tuple(row[key.name] for key in self.order)


def after_key(columns: Sequence[SortKey], key: Sequence[KeyValue]) -> ColumnElement[bool]:
    """The condition "the row comes after ``key`` in the order of ``columns``", written for an index seek.

    When every column runs the same way it is one row-value comparison, ``(a, b) > (x, y)``, which
    SQLite and PostgreSQL both answer with a range seek on an index over those columns. Mixed
    directions (a campaign listing by ``name desc`` then ``id asc``) cannot be one comparison: the
    condition is then ``a <= x AND (a < x OR (a = x AND b > y) ...)``, whose first term still bounds
    the index range.
    """
    if all(c.descending == columns[0].descending for c in columns):
        left, right = tuple_(*[c.column for c in columns]), tuple_(*key)
        return left < right if columns[0].descending else left > right
    alternatives = []
    for i, col in enumerate(columns):
        beyond = col.column < key[i] if col.descending else col.column > key[i]
        alternatives.append(and_(*[columns[j].column == key[j] for j in range(i)], beyond))
    first = columns[0]
    bound = first.column <= key[0] if first.descending else first.column >= key[0]
    return and_(bound, or_(*alternatives))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not text.isascii():
        raise ValueError("not base64url")
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


__all__ = ["MAX_CURSOR_LENGTH", "Cursors", "KeyValue", "Listing", "Position", "SortKey", "after_key", "cursor_error"]
