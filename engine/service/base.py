"""Plumbing every service uses, by composition: ids, paging, retries, reads, sender connections."""

from __future__ import annotations

import itertools
import json
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from engine.delivery.inbound.imap import ImapSettings
from engine.delivery.outbound.smtp import SmtpSettings
from engine.domain import campaign as campaign_domain
from engine.errors import NotFound, ValidationFailed
from engine.service.cursors import Cursors, Listing, after_key
from events import schema
from events.store import ConcurrencyError, EventStore
from events.vault import Vault
from projections import tables as t

T = TypeVar("T")
MAX_PER_PAGE = 200


_SEQUENCE = itertools.count(secrets.randbelow(1 << 24))


def new_id(prefix: str, now: datetime) -> str:
    """``prefix_`` + 28 hex digits: the engine clock's millisecond (12), a per-process sequence (6)
    and 40 random bits (10).

    Ids stay opaque to clients, but ids created one after another sort together: the streams
    named after them land at the end of the log's (stream, version) index and of the read models'
    primary keys instead of at random pages, which is most of an append's database cost. The time
    is the engine clock's (under a ManualClock the sequence alone keeps them in order). Ids of one
    process never repeat (time and sequence); other processes start their sequence at random and
    add 40 random bits.
    """
    ms = int(now.timestamp() * 1000) & 0xFFFF_FFFF_FFFF
    return f"{prefix}_{ms:012x}{next(_SEQUENCE) & 0xFF_FFFF:06x}{secrets.token_hex(5)}"


@dataclass(frozen=True, slots=True)
class Page:
    """Which page a listing answers: by number (``page``, an OFFSET) or after a ``cursor`` (a seek)."""

    page: int
    per_page: int
    cursor: str | None = None

    @classmethod
    def of(cls, page: Any = 1, per_page: Any = 50, cursor: Any = None) -> Page:
        """Checked paging arguments. An empty ``cursor`` is the first page, as no cursor is, so a
        client may send ``cursor=`` on its first call; ``page`` beyond 1 together with a cursor is
        refused, since the two would name different pages."""
        errors = []
        try:
            p = int(page if page is not None else 1)
            if p < 1:
                raise ValueError
        except (TypeError, ValueError):
            errors.append({"field": "page", "message": "page must be an integer >= 1"})
            p = 1
        try:
            pp = int(per_page if per_page is not None else 50)
            if not 1 <= pp <= MAX_PER_PAGE:
                raise ValueError
        except (TypeError, ValueError):
            errors.append({"field": "per_page", "message": f"per_page must be between 1 and {MAX_PER_PAGE}"})
            pp = 50
        if cursor is not None and not isinstance(cursor, str):
            errors.append({"field": "cursor", "message": "cursor must be a next_cursor string this listing answered"})
            cursor = None
        if cursor and p != 1:
            errors.append({"field": "cursor", "message": "give page or cursor, not both"})
        if errors:
            raise ValidationFailed(errors)
        return cls(p, pp, cursor or None)


async def retry(fn: Callable[[], Awaitable[T]], attempts: int = 8) -> T:
    """Run a load -> decide -> append cycle again when another writer got there first."""
    for i in range(attempts):
        try:
            return await fn()
        except ConcurrencyError:
            if i == attempts - 1:
                raise
    raise AssertionError("unreachable")


class Reads:
    """The read helpers every service uses on the read models and the log: rows, pages, campaigns.

    Each service builds its own from the store it was given (it holds nothing else), so that no
    service needs another one to read.
    """

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.cursors = Cursors(store.vault)

    async def fold_campaign(self, conn: AsyncConnection | None, campaign_id: str
                            ) -> tuple[campaign_domain.CampaignState, int]:
        """The campaign's state folded from its stream, and the stream's version (0 when empty).

        Enrollment's skip records (``enrollment.skipped``) are on the campaign's stream, so that an
        enroll is ordered against the campaign's changes, but they change nothing of its state:
        they stay in the database instead of being decoded, so a campaign that skipped 100,000
        contacts (a list enrolled again) folds as fast as one that skipped none, and an enroll
        does not grow slower with every enroll before it.
        """
        stream = f"campaign-{campaign_id}"
        log = schema.events.c
        events = await self.store.query(select(schema.events).where(
            log.stream == stream, log.type != "enrollment.skipped").order_by(log.version), conn)
        state = campaign_domain.CampaignState()
        for stored in events:
            state = campaign_domain.evolve(state, stored.event)
        return state, await self.store.stream_version(stream, conn)

    async def campaign(self, ws: str, campaign_id: str, conn: AsyncConnection | None = None
                       ) -> tuple[campaign_domain.CampaignState, int]:
        """The campaign's state and version, or NotFound for an unknown, deleted or foreign id."""
        c = t.campaigns.c
        q = select(c.id).where(c.id == campaign_id, c.workspace_id == ws, c.deleted.is_(False))
        if conn is None:
            async with self.store.reading() as rc:
                found = (await rc.execute(q)).first()
        else:
            found = (await conn.execute(q)).first()
        if found is None:
            raise NotFound("campaign", campaign_id)
        return await self.fold_campaign(conn, campaign_id)

    async def one(self, q: Any, kind: str, ident: str, conn: AsyncConnection | None = None) -> Any:
        """The one row ``q`` finds, or NotFound(kind, ident)."""
        if conn is None:
            async with self.store.reading() as rc:
                row = (await rc.execute(q)).mappings().first()
        else:
            row = (await conn.execute(q)).mappings().first()
        if row is None:
            raise NotFound(kind, ident)
        return row

    async def paged(self, q: Select[Any], page: Page, view: Callable[[Any], dict[str, Any]], listing: Listing,
                    *, counted: Select[Any] | None = None, total: Select[Any] | None = None) -> dict[str, Any]:
        """One page of ``q`` in the contract's ``{data, pagination}`` shape, in ``listing``'s order.

        By number, the page is an OFFSET, as it always was. After a cursor, it is the rows after
        the cursor's key (an index seek on the listing's order, whatever the depth), one more row
        read to know whether another page follows. Either way ``next_cursor`` leads to the next
        page (null on the last), so a client can switch from pages to cursors at any page.
        ``total``, when given, is a query answering the number of rows from a counter kept as
        events land (``projections/listing_totals.py``): a primary-key read, so that no page costs
        more than its seek. Without it (a filter no counter covers) the filtered rows are counted;
        ``counted``, when given, is a cheaper query with the same rows to count (without a join
        that only adds columns).
        """
        scope = listing.scope()
        position = self.cursors.decode(scope, page.cursor, len(listing.order)) if page.cursor else None
        ordered = q.order_by(None).order_by(*listing.ordering())
        async with self.store.reading() as rc:
            if total is None:
                to_count = (counted if counted is not None else q).order_by(None)
                total = select(func.count()).select_from(to_count.subquery())
            found_total = int((await rc.execute(total)).scalar() or 0)
            if position is None:
                offset = (page.page - 1) * page.per_page
                rows = await self._page_at(rc, q, ordered, listing, offset, page.per_page)
                has_more = page.page * page.per_page < found_total
            else:
                offset = position.offset
                found = (await rc.execute(ordered.where(after_key(listing.order, position.key))
                                          .limit(page.per_page + 1))).mappings().all()
                rows, has_more = found[:page.per_page], len(found) > page.per_page
        next_cursor = (self.cursors.encode(scope, listing.key_of(rows[-1]), offset + len(rows))
                       if has_more and rows else None)
        return {"data": [view(r) for r in rows],
                "pagination": {"page": offset // page.per_page + 1, "per_page": page.per_page, "total": found_total,
                               "has_more": has_more, "next_cursor": next_cursor}}

    @staticmethod
    async def _page_at(conn: AsyncConnection, q: Select[Any], ordered: Select[Any], listing: Listing, offset: int,
                       limit: int) -> Sequence[Any]:
        """The ``limit`` rows from ``offset`` on, in the listing's order.

        The OFFSET walks only the sort key's columns, to find the key of the row before the page
        (a walk of the listing's index alone, where the index covers the filters: no table row is
        read for the rows skipped, which made a deep page on PostgreSQL cost tens of milliseconds),
        then the page is the seek after that key, as a cursor's page is.
        """
        found: Sequence[Any]
        if not offset:
            found = (await conn.execute(ordered.limit(limit))).mappings().all()
            return found
        keys = q.with_only_columns(*[key.column for key in listing.order]).order_by(None).order_by(
            *listing.ordering())
        before = (await conn.execute(keys.offset(offset - 1).limit(1))).first()
        if before is None:
            return []
        found = (await conn.execute(ordered.where(after_key(listing.order, tuple(before))).limit(limit))
                 ).mappings().all()
        return found

    async def all(self, q: Any, conn: AsyncConnection | None = None) -> Sequence[Any]:
        """Every row of ``q`` as mappings, in the caller's transaction when given one."""
        if conn is None:
            async with self.store.reading() as rc:
                return (await rc.execute(q)).mappings().all()
        return (await conn.execute(q)).mappings().all()


class SenderConnections:
    """A sender row's SMTP and IMAP settings, passwords decrypted only here, at the edge."""

    def __init__(self, vault: Vault, options: dict[str, Any]) -> None:
        self.vault = vault
        self.options = options

    def smtp(self, sender: Any) -> SmtpSettings:
        smtp = json.loads(sender["smtp"])
        return SmtpSettings(host=smtp["host"], port=int(smtp["port"]), username=smtp.get("username"),
                            password=self.vault.decrypt_secret(smtp["password_enc"])
                            if smtp.get("password_enc") else None, security=smtp.get("security", "starttls"),
                            timeout=float(self.options.get("smtp_timeout", 30.0)),
                            validate_certs=bool(self.options.get("smtp_validate_certs", True)))

    def imap(self, sender: Any) -> ImapSettings:
        imap = json.loads(sender["imap"])
        return ImapSettings(host=imap["host"], port=int(imap["port"]), username=imap["username"],
                            password=self.vault.decrypt_secret(imap["password_enc"])
                            if imap.get("password_enc") else "", security=imap.get("security", "tls"),
                            folder=imap.get("folder") or "INBOX",
                            timeout=float(self.options.get("imap_timeout", 30.0)))
