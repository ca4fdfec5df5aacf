"""Opens, clicks and one-click unsubscribes, recorded from the signed links inside sent emails.

These are the engine's only unauthenticated commands: the caller is a recipient's mail client,
an image proxy or a link scanner, and the only proof it carries is a token signed with the
engine's token key (:mod:`engine.delivery.content.tokens`), holding ids and nothing personal. A token
that does not verify changes nothing.

Prefetchers. Some mail systems fetch every remote image of a message on their own, whether or
not a person ever reads it; counting those fetches as opens would inflate open rates. A fetch
is flagged ``prefetch=True`` (recorded, never counted: the ``rm_emails`` projection skips it)
when its ``User-Agent``

- is exactly ``Mozilla/5.0`` with nothing after it: Apple Mail Privacy Protection's proxy (its
  Apple-owned source addresses are not visible behind a reverse proxy, its user agent is);
- contains ``GoogleImageProxy`` or ``ggpht.com``: Gmail's image proxy
  (``Mozilla/5.0 (...) (via ggpht.com GoogleImageProxy)``);
- contains ``YahooMailProxy``: Yahoo and AOL Mail's image proxy;
- is missing or blank: every real mail client sends one, scanners and scripts often do not.

The substring list is :data:`PREFETCH_USER_AGENTS`; the option ``prefetch_user_agents`` of
:class:`~engine.facade.CampaignEngine` replaces it (the Apple and blank rules always apply).
Note that Gmail's and Yahoo's proxies usually fetch when the message is displayed, so this
list errs towards under-counting opens at those providers rather than over-counting.

Each email is counted once: a second genuine open appends nothing, and so does a second
prefetch. Every click is recorded (``email.clicked``), but the stats count an email once; a
click implies an open, so one is recorded with it when none was. Only an email that was
actually sent can be opened or clicked, and nothing is recorded for an erased contact.

Link scanners. Corporate mail gateways (Microsoft Safe Links, Mimecast, Proofpoint, Barracuda)
follow every link of a message on delivery to check where it leads, and scripts fetch links
too. Such a click is recorded with ``prefetch=True`` (kept in the activity, never counted: the
``rm_emails`` and ``engagement`` projections skip it, and it implies no open) when

- it is a ``HEAD`` request: a browser following a link asks with ``GET``; a ``HEAD`` only
  checks that the link answers;
- its ``User-Agent`` is missing or blank, or contains one of :data:`SCANNER_USER_AGENTS`
  (HTTP libraries, named gateways, crawlers and link previewers; each entry says why);
- it arrives less than :data:`SCANNER_WINDOW` after the email was sent, on the engine clock:
  gateways scan on delivery, whatever user agent they claim, and a person needs longer than
  that to receive, open, read and click.

Whoever asks is redirected to the real destination all the same: a scanner that got a
different answer could flag the message, and a person misjudged as a scanner must still arrive.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any, Final
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from engine.clock import Clock
from engine.delivery.content.tokens import read_click, read_open
from engine.errors import NotFound
from engine.service.base import retry
from engine.service.unsubscribes import Unsubscribes
from events.catalog import email as em
from events.registry import Event, parse_time
from events.store import EventStore
from events.vault import Vault
from projections import tables as t
from projections.sending import emails

__all__ = ["PREFETCH_USER_AGENTS", "SCANNER_USER_AGENTS", "SCANNER_WINDOW", "TrackingService", "is_prefetch",
           "is_scanner", "redirect_target"]

PREFETCH_USER_AGENTS: Final[tuple[str, ...]] = ("GoogleImageProxy", "ggpht.com", "YahooMailProxy")
APPLE_PROXY_USER_AGENT: Final = "Mozilla/5.0"
MAX_USER_AGENT: Final = 512
MAX_REDIRECT: Final = 8192
UNSUBSCRIBED, SUBSCRIBED = "unsubscribed", "subscribed"

# Lower-case substrings of a ``User-Agent`` that mark an automated click, each with its reason.
# Conservative: every entry is a product token or phrase no person's browser sends, so a bare
# ``bot`` (it is inside phone names such as ``CUBOT``) is spelt only with what follows a bot's name.
SCANNER_USER_AGENTS: Final[Mapping[str, str]] = {
    # HTTP libraries and command-line clients: scripts and home-made scanners, never a mail reader.
    "python-requests/": "Python requests library",
    "python-urllib/": "Python standard library urllib",
    "python-httpx/": "Python httpx library",
    "aiohttp/": "Python aiohttp library",
    "curl/": "curl command-line client",
    "wget/": "GNU Wget",
    "go-http-client/": "Go net/http default client",
    "java/": "Java's HttpURLConnection default (Java/1.8.0_...)",
    "apache-httpclient/": "Apache HttpClient (Java)",
    "okhttp/": "OkHttp library (Java/Android) used without a browser",
    "libwww-perl/": "Perl LWP",
    "node-fetch/": "Node.js node-fetch",
    "axios/": "Node.js axios",
    # Mail security gateways that rewrite and pre-check every link on delivery.
    "barracuda": "Barracuda Email Protection link protection",
    "mimecast": "Mimecast URL Protect",
    "proofpoint": "Proofpoint URL Defense",
    # Microsoft Office: Protocol/Existence Discovery requests are the Office app probing a link
    # before handing it to the browser, which then asks again with its own user agent.
    "microsoft office": "Microsoft Office Protocol/Existence Discovery",
    "msoffice": "Outlook's embedded renderer (MSOffice 16), not the reader's browser",
    # Crawlers and link previewers: "Googlebot/2.1", "bingbot/2.0", "Slackbot-LinkExpanding",
    # "TelegramBot (like TwitterBot)", "+http://..." contact links, "Google Web Preview".
    "bot/": "a crawler's product token (Googlebot/, bingbot/, Twitterbot/, Discordbot/)",
    "bot-": "a crawler's product token (Slackbot-LinkExpanding)",
    "bot;": "a crawler in a compatible comment (compatible; SomeBot; +http...)",
    "bot)": "a crawler in a comment (like TwitterBot)",
    "bot (": "a crawler followed by its comment (TelegramBot (like TwitterBot))",
    "+http": "a crawler's contact URL, a convention of bots that browsers never follow",
    "crawler": "a self-declared crawler",
    "spider": "a self-declared spider (Baiduspider)",
    "preview": "a link previewer (Google Web Preview, SkypeUriPreview)",
    "facebookexternalhit": "Facebook's link previewer",
}
# Gateways fetch each link as the message arrives; nobody reads and clicks within this time.
SCANNER_WINDOW: Final = timedelta(seconds=10)

E = emails.c


def clean_user_agent(user_agent: str | None) -> str | None:
    """The header as stored: printable characters only, bounded, ``None`` when empty."""
    if user_agent is None:
        return None
    text = "".join(ch for ch in user_agent if ch.isprintable()).strip()[:MAX_USER_AGENT]
    return text or None


def is_prefetch(user_agent: str | None, patterns: Iterable[str] = PREFETCH_USER_AGENTS) -> bool:
    """Whether a pixel fetch with this ``User-Agent`` comes from a proxy rather than a reader."""
    ua = clean_user_agent(user_agent)
    if ua is None or ua == APPLE_PROXY_USER_AGENT:
        return True
    lowered = ua.lower()
    return any(p and p.lower() in lowered for p in patterns)


def is_scanner(user_agent: str | None, patterns: Iterable[str] = SCANNER_USER_AGENTS) -> bool:
    """Whether a click with this ``User-Agent`` comes from a program rather than a reader.

    A missing or blank header counts: every browser sends one, scripts often do not.
    """
    ua = clean_user_agent(user_agent)
    if ua is None:
        return True
    lowered = ua.lower()
    return any(p and p.lower() in lowered for p in patterns)


def redirect_target(url: Any) -> str | None:
    """``url`` when it is safe to redirect to: an absolute http(s) URL with a host, no controls.

    The links were http(s) when the email was built; this is checked again so that nothing read
    back from the database can turn the click endpoint into a ``javascript:`` or header-splitting
    redirect.
    """
    if not isinstance(url, str) or not url or len(url) > MAX_REDIRECT:
        return None
    if any(not ch.isprintable() or ch.isspace() for ch in url):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return url


class TrackingService:
    """Commands behind ``/t/o``, ``/t/c`` and ``/u``: each starts from a token, never an API key."""

    def __init__(self, store: EventStore, clock: Clock, vault: Vault, options: dict[str, Any], *,
                 unsubscribes: Unsubscribes) -> None:
        self.store = store
        self.clock = clock
        self.vault = vault
        self.options = options
        self.unsubscribes = unsubscribes

    def _prefetch_patterns(self) -> tuple[str, ...]:
        configured = self.options.get("prefetch_user_agents")
        return PREFETCH_USER_AGENTS if configured is None else tuple(str(p) for p in configured)

    async def _sent_email(self, conn: AsyncConnection, email_id: str) -> Any:
        """The email's row with its contact's erasure flag, when it was sent; else ``None``."""
        q = (select(E.email_id, E.workspace_id, E.campaign_id, E.enrollment_id, E.contact_id, E.step, E.links,
                    E.opened_at, E.sent_at, t.contacts.c.erased)
             .join(t.contacts, t.contacts.c.id == E.contact_id)
             .where(E.email_id == email_id, E.sent_at.is_not(None)))
        return (await conn.execute(q)).mappings().first()

    @staticmethod
    def _ids(row: Any) -> dict[str, Any]:
        return {"enrollment_id": row["enrollment_id"], "campaign_id": row["campaign_id"],
                "contact_id": row["contact_id"], "email_id": row["email_id"], "step": row["step"]}

    async def _any_open(self, conn: AsyncConnection, row: Any) -> bool:
        """Whether an ``email.opened`` of this email, prefetch or not, is already in the log."""
        events = await self.store.read_stream(f"enrollment-{row['enrollment_id']}", conn=conn)
        return any(e.type == "email.opened" and getattr(e.event, "email_id", None) == row["email_id"]
                   for e in events)

    # -- opens -----------------------------------------------------------------------------------
    async def track_open(self, token: str, user_agent: str | None = None) -> bool:
        """Record a pixel fetch; ``True`` when an event was appended.

        A bad token, an unsent email, an erased contact or an email already opened appends
        nothing: the caller answers the same pixel whatever happens here.
        """
        found = read_open(self.vault.token_key, token)
        if found is None:
            return False
        prefetch = is_prefetch(user_agent, self._prefetch_patterns())
        ua = clean_user_agent(user_agent)

        async def attempt() -> bool:
            async with self.store.transaction() as conn:
                row = await self._sent_email(conn, found.email_id)
                if row is None or row["erased"] or row["opened_at"] is not None:
                    return False
                if prefetch and await self._any_open(conn, row):
                    return False
                await self.store.append(f"enrollment-{row['enrollment_id']}", [em.EmailOpened(
                    **self._ids(row), prefetch=prefetch, user_agent=ua)], None, workspace_id=row["workspace_id"],
                    metadata={"actor": "system:tracking"}, conn=conn)
                return True

        return await retry(attempt)

    # -- clicks ----------------------------------------------------------------------------------
    def _scanned_on_delivery(self, sent_at: Any) -> bool:
        """Whether now is within :data:`SCANNER_WINDOW` of ``sent_at`` (or before it: another
        node's clock may run a little behind the one that recorded the send)."""
        if not sent_at:
            return False
        return self.clock.now() - parse_time(str(sent_at)) < SCANNER_WINDOW

    async def track_click(self, token: str, user_agent: str | None = None, *, head: bool = False) -> str:
        """Record a click and return the original link to redirect to.

        ``head`` is true for a ``HEAD`` request. A click from a scanner (see the module's text) is
        recorded with ``prefetch=True`` and records no open; the link returned is the same.
        NotFound for a forged or altered token, an unknown or unsent email, a link index out of
        range, or a stored target that is not an absolute http(s) URL: never a redirect elsewhere.
        """
        found = read_click(self.vault.token_key, token)
        if found is None:
            raise NotFound("link", token)
        ua = clean_user_agent(user_agent)
        automated = head or is_scanner(user_agent)

        async def attempt() -> str:
            async with self.store.transaction() as conn:
                row = await self._sent_email(conn, found.email_id)
                links = json.loads(row["links"]) if row is not None and row["links"] else []
                if not isinstance(links, list) or found.link_index >= len(links):
                    raise NotFound("link", token)
                url = redirect_target(links[found.link_index])
                if url is None:
                    raise NotFound("link", token)
                if row["erased"]:
                    return url
                prefetch = automated or self._scanned_on_delivery(row["sent_at"])
                events: list[Event] = [em.EmailClicked(**self._ids(row), url=url, link_index=found.link_index,
                                                       prefetch=prefetch, user_agent=ua)]
                if row["opened_at"] is None and not prefetch:
                    events.insert(0, em.EmailOpened(**self._ids(row), prefetch=False, user_agent=ua))
                await self.store.append(f"enrollment-{row['enrollment_id']}", events, None,
                                        workspace_id=row["workspace_id"], metadata={"actor": "system:tracking"},
                                        conn=conn)
                return url

        return await retry(attempt)

    # -- unsubscribe -----------------------------------------------------------------------------
    async def unsubscribe_status(self, token: str) -> str:
        """``"subscribed"`` or ``"unsubscribed"`` (erased counts as out); NotFound for a bad token.

        Reading only: mail scanners follow ``GET`` links, so showing the page must change nothing.
        """
        _found, row = await self.unsubscribes.token_contact(None, token)
        return UNSUBSCRIBED if row["unsubscribed"] or row["erased"] else SUBSCRIBED

    async def unsubscribe_one_click(self, token: str) -> bool:
        """RFC 8058 one-click unsubscribe; ``True`` when anything was appended.

        In one transaction: ``contact.unsubscribed`` (reason ``one_click``) on the contact's
        stream, the address into the suppressions (the contact as subject, so erasure shreds it),
        and every open enrollment of the contact stopped as ``unsubscribed`` with its waiting email
        cancelled. Each part is skipped when already true, so a repeat appends nothing; an erased
        contact appends nothing. NotFound for a bad token or an unknown contact.
        """
        async def attempt() -> bool:
            async with self.store.transaction() as conn:
                return await self.unsubscribes.unsubscribe_by_token(conn, token)

        return await retry(attempt)
