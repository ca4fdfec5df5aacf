"""Campaign stats as counters, kept as events land, so that reading a campaign's stats is a few
primary-key reads instead of a grouped count over all its emails and enrollments.

The figures of ``GET .../stats`` (and of ``stats/steps``, ``stats/timeline``, the senders' lines,
the list items and the campaign object) are sums over ``rm_emails`` rows of a few predicates
(status, sent or not, flags). A sum of per-row figures can be kept exactly: each email's current
facts are kept here (``rm_stats_emails``, the columns those predicates read), and when events
change an email, the counters lose the email's old figures and gain its new ones. The facts
follow ``rm_emails``' rules (``projections/sending.py``), event by event, from event data only,
so that the counters equal a recount of ``rm_emails`` and a rebuild gives the same rows.

``rm_campaign_counts`` holds one row per (campaign, kind, key):

==============  =========================  ========================================================
kind            key                        counts
==============  =========================  ========================================================
``campaign``    ``""``                     every email of the campaign, ``contacted``, ``opens_total``
``sender``      sender id                  the emails whose current sender it is
``step``        step number                the emails of that step
``variant``     ``<step>|<variant>``       the emails that carry that A/B variant
``enrollment``  enrollment status          ``total``: the enrollments in that status
``skip``        skip reason                ``total``: the skips recorded with that reason
==============  =========================  ========================================================

``rm_campaign_minutes`` counts per campaign and UTC minute the times the timeline reports (sent,
first open, first click, first human reply, the bounce); every zone offset in use is a whole
number of minutes, so any local hour, day or week is a range of these rows.
``rm_stats_contacted`` counts each (campaign, contact)'s sent emails, so that ``contacted``
(distinct contacts sent to) moves only when a contact's first email is sent or its last unsent.
``rm_campaign_sends`` counts each campaign's sends per current sender and UTC hour, and again per
UTC minute: the throughput windows (last hour, last day) read the whole hours inside them (at most
24 rows per sender), the whole minutes of their two partial hours (at most 59 rows per sender at
each end), and only the two partial minutes at their ends from ``rm_stats_emails``' index on
(campaign, sent time): a read bounded by a few rows per sender and two minutes of sends,
whatever the campaign's size or sending rate.

A counter row whose figures all return to zero is deleted, so the rows do not depend on how the
log was cut into appends (inline) or batches (rebuild).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from operator import itemgetter
from typing import Any

from sqlalchemy import Boolean, Column, Index, Integer, String, Table, bindparam, select, text, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from events.store import StoredEvent
from projections.base import ReshapingProjection, Statement, TimeTexts, insert_statement, metadata

# The figures of an email, in the order of rm_campaign_counts' columns.
EMAIL_FIGURES = ("total", "scheduled", "claimed", "sent", "deferred", "failed", "bounced", "refused", "cancelled",
                 "uncertain", "quarantined", "hard", "soft", "block", "opened", "clicked", "replied",
                 "unsubscribed", "complained", "out_of_office")
FIGURES = (*EMAIL_FIGURES, "contacted", "opens_total")
TIMELINE_FIGURES = ("sent", "opened", "clicked", "replied", "bounced")
# Statuses counted by name (a sent email counts by its sent time instead, as the stats do).
_STATUS_FIGURES = frozenset({"scheduled", "claimed", "failed", "bounced", "cancelled", "uncertain", "quarantined"})

CAMPAIGN, SENDER, STEP, VARIANT, ENROLLMENT, SKIP = "campaign", "sender", "step", "variant", "enrollment", "skip"

counts = Table(
    "rm_campaign_counts", metadata,
    Column("campaign_id", String(64), primary_key=True),
    Column("kind", String(16), primary_key=True),
    Column("key", String(128), primary_key=True),
    *[Column(name, Integer, nullable=False) for name in FIGURES],
)

minutes = Table(
    "rm_campaign_minutes", metadata,
    Column("campaign_id", String(64), primary_key=True),
    Column("minute", String(16), primary_key=True),  # "2026-01-05T09:00", the prefix of format_time
    *[Column(name, Integer, nullable=False) for name in TIMELINE_FIGURES],
)

sends = Table(
    "rm_campaign_sends", metadata,
    Column("campaign_id", String(64), primary_key=True),
    Column("span", String(8), primary_key=True),  # "hour" or "minute"
    Column("start", String(32), primary_key=True),  # format_time of the UTC hour's or minute's start
    Column("sender_id", String(64), primary_key=True),  # "" for the emails with no sender now
    Column("sent", Integer, nullable=False),
)

contacted = Table(
    "rm_stats_contacted", metadata,
    Column("campaign_id", String(64), primary_key=True),
    Column("contact_id", String(64), primary_key=True),
    Column("sent", Integer, nullable=False),
)

# Each email's facts that the figures read (rm_emails' columns of the same names, the message and
# unsubscribe times reduced to whether they are set).
email_facts = Table(
    "rm_stats_emails", metadata,
    Column("email_id", String(96), primary_key=True),
    Column("campaign_id", String(64), nullable=False),
    Column("contact_id", String(64), nullable=False),
    Column("step", Integer, nullable=False),
    Column("sender_id", String(64)),
    Column("variant", String(32)),
    Column("status", String(16), nullable=False),
    Column("has_message", Boolean, nullable=False),
    Column("bounce_type", String(8)),
    Column("bounce_source", String(8)),
    Column("sent_at", String(32)),
    Column("opened_at", String(32)),
    Column("clicked_at", String(32)),
    Column("replied_at", String(32)),
    Column("out_of_office", Boolean, nullable=False),
    Column("unsubscribed", Boolean, nullable=False),
    Column("complained", Boolean, nullable=False),
    Column("updated_at", String(32), nullable=False),
    # The throughput windows: the campaign's sends in a time range, per sender, from the index alone.
    # Partial: the emails not sent (every one at enrollment) cost no index entry.
    Index("ix_rm_stats_emails_sent", "campaign_id", "sent_at", "sender_id",
          sqlite_where=text("sent_at IS NOT NULL"), postgresql_where=text("sent_at IS NOT NULL")),
)

enrollment_facts = Table(
    "rm_stats_enrollments", metadata,
    Column("enrollment_id", String(64), primary_key=True),
    Column("campaign_id", String(64), nullable=False),
    Column("status", String(16), nullable=False),
)

# Version 3: sends per sender, UTC hour and minute (rm_campaign_sends) for the throughput windows.
campaign_stats = ReshapingProjection("campaign_stats", 3, [counts, minutes, sends, contacted, email_facts,
                                                           enrollment_facts])

_EMAIL_COLUMNS = tuple(c.name for c in email_facts.columns)
_EMAIL_INSERT = insert_statement(email_facts)
_EMAIL_UPDATE = Statement(
    lambda: update(email_facts).where(email_facts.c.email_id == bindparam("p_email_id")).values(
        {name: bindparam(f"p_{name}") for name in _EMAIL_COLUMNS[1:]}),
    [f"p_{name}" for name in _EMAIL_COLUMNS[1:]] + ["p_email_id"])
_CONTACTED_READ = select(contacted.c.contact_id, contacted.c.sent).where(
    contacted.c.campaign_id == bindparam("cid"), contacted.c.contact_id.in_(bindparam("ids", expanding=True)))
_email_row = itemgetter(*_EMAIL_COLUMNS)
_email_update_row = itemgetter(*_EMAIL_COLUMNS[1:], "email_id")
_ENROLLMENT_INSERT = insert_statement(enrollment_facts)
_ENROLLMENT_UPDATE = Statement(
    lambda: update(enrollment_facts).where(enrollment_facts.c.enrollment_id == bindparam("p_id"))
    .values(status=bindparam("p_status")), ["p_status", "p_id"])

_EMAIL_TYPES = ("email.scheduled", "email.claimed", "email.sent", "email.deferred", "email.released",
                "email.failed", "email.uncertain", "email.quarantined", "email.cancelled", "email.bounced",
                "email.opened", "email.clicked", "email.replied", "email.complained")
_FLAGS = {"email.opened": "opened_at", "email.clicked": "clicked_at", "email.replied": "replied_at"}
_ENROLLMENT_STATUS = {"enrollment.completed": "completed", "enrollment.removed": "stopped"}
_CHUNK = 500
# The facts an email's counter figures and rows depend on (of the times, only whether they are set).
_SHAPE = ("campaign_id", "step", "sender_id", "variant", "status", "has_message", "bounce_type", "bounce_source",
          "sent_at", "opened_at", "clicked_at", "replied_at", "out_of_office", "unsubscribed", "complained")

_SHAPE_TIMES = tuple(name for name in _SHAPE if name.endswith("_at"))
_shape_values = itemgetter(*[name for name in _SHAPE if not name.endswith("_at")])

Facts = dict[str, Any]
CounterKey = tuple[str, str, str]  # (campaign_id, kind, key)


def email_figures(facts: Facts) -> dict[str, int]:
    """The figures one email adds to each counter row it belongs to: ``GET .../stats``' predicates
    over its ``rm_emails`` row (see ``engine/service/stats.py``), each 0 or 1."""
    status = facts["status"]
    bounced = status == "bounced"
    found = {"total": 1}
    if status in _STATUS_FIGURES:
        found[status] = 1
    if facts["sent_at"] is not None:
        found["sent"] = 1
    if facts["has_message"] and status == "scheduled":  # a 4xx or no connection at all, waiting for its retry
        found["deferred"] = 1
    if bounced and facts["bounce_source"] == "smtp":  # refused during SMTP: attempted, never counted as sent
        found["refused"] = 1
    if facts["bounce_type"] in ("hard", "soft", "block"):
        found[facts["bounce_type"]] = 1
    for name in ("opened", "clicked", "replied"):
        if facts[f"{name}_at"] is not None:
            found[name] = 1
    if facts["unsubscribed"] or facts["complained"]:
        found["unsubscribed"] = 1
    if facts["complained"]:
        found["complained"] = 1
    if facts["out_of_office"]:
        found["out_of_office"] = 1
    return found


def counter_keys(facts: Facts) -> list[CounterKey]:
    """The counter rows an email counts in: its campaign, its current sender, its step, its variant."""
    cid = facts["campaign_id"]
    keys = [(cid, CAMPAIGN, ""), (cid, STEP, str(facts["step"]))]
    if facts["sender_id"] is not None:
        keys.append((cid, SENDER, facts["sender_id"]))
    if facts["variant"] is not None:
        keys.append((cid, VARIANT, f"{facts['step']}|{facts['variant']}"))
    return keys


def timeline_minutes(facts: Facts) -> list[tuple[str, str]]:
    """(figure, UTC minute) of each time the timeline counts this email at."""
    found = [(name, facts[f"{name}_at"][:16]) for name in ("sent", "opened", "clicked", "replied")
             if facts[f"{name}_at"] is not None]
    if facts["status"] == "bounced":  # the bounce's time: the row's last change, as rm_emails' updated_at
        found.append(("bounced", facts["updated_at"][:16]))
    return found


def hour_of(time_text: str) -> str:
    """The start of the UTC hour of a ``format_time`` text, as ``format_time`` writes it."""
    return time_text[:13] + ":00:00.000000Z"


def minute_of(time_text: str) -> str:
    """The start of the UTC minute of a ``format_time`` text, as ``format_time`` writes it."""
    return time_text[:16] + ":00.000000Z"


def _new_email(d: Any, at: str) -> Facts:
    return {"email_id": d.email_id, "campaign_id": d.campaign_id, "contact_id": d.contact_id, "step": d.step,
            "sender_id": d.sender_id, "variant": None, "status": "scheduled", "has_message": False,
            "bounce_type": None, "bounce_source": None, "sent_at": None, "opened_at": None, "clicked_at": None,
            "replied_at": None, "out_of_office": False, "unsubscribed": False, "complained": False,
            "updated_at": at}


def evolve_email(facts: Facts, type_: str, d: Any, at: str) -> None:
    """Apply one event to an email's facts, as ``projections/sending.py`` changes its ``rm_emails`` row."""
    if type_ in ("email.opened", "email.clicked", "email.replied", "email.complained"):
        if getattr(d, "prefetch", False):
            return  # a proxy fetched the pixel, not a person
        if getattr(d, "out_of_office", False):
            facts["out_of_office"] = True
        elif type_ == "email.complained":
            facts["complained"] = True
        elif facts[_FLAGS[type_]] is None:
            facts[_FLAGS[type_]] = at
        return
    if type_ == "contact.unsubscribed":
        facts["unsubscribed"] = True
        return
    facts["updated_at"] = at
    if type_ == "email.claimed":
        facts.update(status="claimed", sender_id=d.sender_id)
    elif type_ == "email.sent":
        facts.update(status="sent", sent_at=at, variant=d.variant)
    elif type_ in ("email.deferred", "email.released"):
        facts["status"] = "scheduled"
        if facts["step"] == 1:  # a first step may change sender
            facts["sender_id"] = None
        if type_ == "email.deferred":
            facts["has_message"] = True
    elif type_ in ("email.failed", "email.uncertain", "email.quarantined"):
        facts.update(status=type_.split(".")[1], has_message=True)
    elif type_ == "email.cancelled":
        facts["status"] = "cancelled"
    elif type_ == "email.bounced":
        facts.update(status="bounced", bounce_type=d.bounce_type, bounce_source=d.source)
        if d.variant is not None:  # a DSN names no variant: the one recorded when the email was sent stays
            facts["variant"] = d.variant


_UPSERTS: dict[tuple[str, str], Statement] = {}


def _upsert(dialect_name: str, table: Table, figures: Sequence[str]) -> Statement:
    """INSERT of a first count, adding to the stored counts when the row exists: built and compiled
    once per (dialect, table), run with one tuple per row in the table's column order."""
    found = _UPSERTS.get((dialect_name, table.name))
    if found is None:
        keys = [c.name for c in table.primary_key.columns]

        def build() -> Any:
            insert = postgresql_insert if dialect_name == "postgresql" else sqlite_insert
            stmt = insert(table).values({c.name: bindparam(f"p_{c.name}") for c in table.columns})
            return stmt.on_conflict_do_update(index_elements=keys,
                                              set_={n: table.c[n] + stmt.excluded[n] for n in figures})

        found = _UPSERTS[(dialect_name, table.name)] = Statement(build, [f"p_{c.name}" for c in table.columns])
    return found


async def _add(conn: AsyncConnection, table: Table, figures: Sequence[str],
               deltas: dict[tuple[str, ...], dict[str, int]]) -> None:
    """Add ``deltas`` (primary key -> figure -> change) to ``table``; then delete the rows that a
    decrease may have brought back to all zeros (a row of zeros is a row that never was)."""
    keys = [c.name for c in table.primary_key.columns]
    if [c.name for c in table.columns] != [*keys, *figures]:
        raise ValueError(f"{table.name}: the figures must be the columns after the key")
    rows: list[tuple[Any, ...]] = [(*key, *[change.get(n, 0) for n in figures]) for key, change in deltas.items()
                                   if any(change.values())]
    if not rows:
        return
    await _upsert(conn.dialect.name, table, figures).run(conn, rows)
    width = len(keys)
    lowered = [row for row in rows if any(n < 0 for n in row[width:])]
    if lowered:
        cols = table.c
        await conn.execute(table.delete().where(
            *[cols[k] == bindparam(f"k_{k}") for k in keys], *[cols[n] == 0 for n in figures]),
            [{f"k_{k}": row[i] for i, k in enumerate(keys)} for row in lowered])


def _add_figures(deltas: dict[tuple[str, ...], dict[str, int]], key: tuple[str, ...],
                 figures: Iterable[tuple[str, int]]) -> None:
    change = deltas.setdefault(key, {})
    for name, n in figures:
        change[name] = change.get(name, 0) + n


_LOADS: dict[str, Any] = {}


async def _load(conn: AsyncConnection, table: Table, ids: Sequence[str]) -> dict[str, Facts]:
    key = table.primary_key.columns.values()[0]
    statement = _LOADS.get(table.name)
    if statement is None:  # built once: a fresh select per batch cost more than the read itself
        statement = _LOADS[table.name] = select(table).where(key.in_(bindparam("ids", expanding=True)))
    names = [c.name for c in table.columns]
    at = names.index(key.name)
    found: dict[str, Facts] = {}
    for i in range(0, len(ids), _CHUNK):
        for row in (await conn.execute(statement, {"ids": ids[i:i + _CHUNK]})).all():
            found[row[at]] = dict(zip(names, row, strict=True))
    return found


@campaign_stats.on(*_EMAIL_TYPES, "contact.unsubscribed", "enrollment.created", "enrollment.skipped",
                   "enrollment.completed", "enrollment.removed", "enrollment.stopped")
async def _apply(conn: AsyncConnection, evs: Sequence[StoredEvent]) -> None:
    """One call per batch: the touched emails' and enrollments' facts are read once, evolved in log
    order, written back once, and the counters get the difference of their figures."""
    texts = TimeTexts()
    new_emails: set[str] = set()
    old_email_ids: set[str] = set()
    new_enrollments: set[str] = set()
    old_enrollment_ids: set[str] = set()
    for e in evs:
        d: Any = e.event
        if e.type == "email.scheduled":
            new_emails.add(d.email_id)
        elif e.type == "enrollment.created":
            new_enrollments.add(d.enrollment_id)
        elif e.type.startswith("enrollment."):
            if d.enrollment_id and d.enrollment_id not in new_enrollments:
                old_enrollment_ids.add(d.enrollment_id)
        else:
            email_id = d.email_id if e.type != "contact.unsubscribed" else getattr(d, "email_id", None)
            if email_id and email_id not in new_emails:
                old_email_ids.add(email_id)
            if e.type == "email.sent" and d.enrollment_id not in new_enrollments:
                old_enrollment_ids.add(d.enrollment_id)
    # A scheduled email or a created enrollment is new: rm_emails' and rm_enrollments' inserts
    # refuse a second one, so there is nothing stored to read for them.
    emails_before = await _load(conn, email_facts, sorted(old_email_ids))
    enrollments_before = await _load(conn, enrollment_facts, sorted(old_enrollment_ids))
    emails_now: dict[str, Facts] = {k: dict(v) for k, v in emails_before.items()}
    enrollments_now: dict[str, Facts] = {k: dict(v) for k, v in enrollments_before.items()}
    count_deltas: dict[tuple[str, ...], dict[str, int]] = {}
    for e in evs:
        d = e.event
        type_ = e.type
        at = texts[e.recorded_at]
        if type_ == "email.scheduled":
            emails_now[d.email_id] = _new_email(d, at)
        elif type_ == "enrollment.created":
            enrollments_now[d.enrollment_id] = {"enrollment_id": d.enrollment_id, "campaign_id": d.campaign_id,
                                                "status": "pending"}
        elif type_ == "enrollment.skipped":
            _add_figures(count_deltas, (d.campaign_id, SKIP, d.reason), [("total", 1)])
            if d.enrollment_id and d.enrollment_id in enrollments_now:
                enrollments_now[d.enrollment_id]["status"] = "skipped"
        elif type_.startswith("enrollment."):
            if d.enrollment_id in enrollments_now:
                enrollments_now[d.enrollment_id]["status"] = _ENROLLMENT_STATUS.get(type_) or d.status
        else:
            email_id = d.email_id if type_ != "contact.unsubscribed" else getattr(d, "email_id", None)
            facts = emails_now.get(email_id) if email_id else None
            if type_ == "email.opened" and not d.prefetch:  # every open a person made, as stats' opens_total
                _add_figures(count_deltas, (d.campaign_id, CAMPAIGN, ""), [("opens_total", 1)])
            if facts is not None:
                evolve_email(facts, type_, d, at)
            if type_ == "email.sent" and d.enrollment_id in enrollments_now:
                enrollments_now[d.enrollment_id]["status"] = "in_progress"

    minute_deltas: dict[tuple[str, ...], dict[str, int]] = {}
    send_deltas: dict[tuple[str, ...], dict[str, int]] = {}
    sent_deltas: dict[tuple[str, ...], int] = {}
    changed_emails: list[Facts] = []
    # Emails in the same state count the same: the batch's emails are netted per shape (a claim
    # and its send cancel out), and each shape's figures are computed and added once.
    shape_net: dict[tuple[Any, ...], int] = {}
    shape_facts: dict[tuple[Any, ...], Facts] = {}
    for email_id, now in emails_now.items():
        before = emails_before.get(email_id)
        if before == now:
            continue
        changed_emails.append(now)
        for facts, sign in ((before, -1), (now, 1)):
            if facts is None:
                continue
            shape = (*_shape_values(facts), *[facts[name] is not None for name in _SHAPE_TIMES])
            if shape in shape_net:
                shape_net[shape] += sign
            else:
                shape_net[shape] = sign
                shape_facts[shape] = facts
            for name, minute in timeline_minutes(facts):
                _add_figures(minute_deltas, (facts["campaign_id"], minute), [(name, sign)])
            if facts["sent_at"] is not None:
                pair = (facts["campaign_id"], facts["contact_id"])
                sent_deltas[pair] = sent_deltas.get(pair, 0) + sign
                for span, start in (("hour", hour_of(facts["sent_at"])), ("minute", minute_of(facts["sent_at"]))):
                    _add_figures(send_deltas, (facts["campaign_id"], span, start, facts["sender_id"] or ""),
                                 [("sent", sign)])
    for shape, net in shape_net.items():
        if net:
            facts = shape_facts[shape]
            items = [(name, net * value) for name, value in email_figures(facts).items()]
            for key in counter_keys(facts):
                _add_figures(count_deltas, key, items)
    changed_enrollments: list[Facts] = []
    for enrollment_id, now in enrollments_now.items():
        before = enrollments_before.get(enrollment_id)
        if before == now:
            continue
        changed_enrollments.append(now)
        if before is not None:
            _add_figures(count_deltas, (before["campaign_id"], ENROLLMENT, before["status"]), [("total", -1)])
        _add_figures(count_deltas, (now["campaign_id"], ENROLLMENT, now["status"]), [("total", 1)])

    await _write_facts(conn, changed_emails, changed_enrollments, new_emails, new_enrollments)
    await _count_contacted(conn, sent_deltas, count_deltas)
    await _add(conn, counts, FIGURES, count_deltas)
    await _add(conn, minutes, TIMELINE_FIGURES, minute_deltas)
    await _add(conn, sends, ("sent",), send_deltas)


async def _write_facts(conn: AsyncConnection, emails_: list[Facts], enrollments_: list[Facts],
                       new_emails: set[str], new_enrollments: set[str]) -> None:
    await _EMAIL_INSERT.run(conn, [_email_row(f) for f in emails_ if f["email_id"] in new_emails])
    await _EMAIL_UPDATE.run(conn, [_email_update_row(f) for f in emails_ if f["email_id"] not in new_emails])
    await _ENROLLMENT_INSERT.run(conn, [(f["enrollment_id"], f["campaign_id"], f["status"]) for f in enrollments_
                                        if f["enrollment_id"] in new_enrollments])
    await _ENROLLMENT_UPDATE.run(conn, [(f["status"], f["enrollment_id"]) for f in enrollments_
                                        if f["enrollment_id"] not in new_enrollments])


async def _count_contacted(conn: AsyncConnection, sent_deltas: dict[tuple[str, ...], int],
                           count_deltas: dict[tuple[str, ...], dict[str, int]]) -> None:
    """Per (campaign, contact), its sent emails; ``contacted`` moves when that goes from or to zero."""
    pairs = [pair for pair, n in sent_deltas.items() if n]
    if not pairs:
        return
    stored: dict[tuple[str, ...], int] = {}
    for i in range(0, len(pairs), _CHUNK):
        chunk = pairs[i:i + _CHUNK]
        by_campaign: dict[str, list[str]] = {}
        for cid, contact_id in chunk:
            by_campaign.setdefault(cid, []).append(contact_id)
        for cid, contact_ids in by_campaign.items():
            for row in (await conn.execute(_CONTACTED_READ, {"cid": cid, "ids": contact_ids})).all():
                stored[(cid, row[0])] = int(row[1])
    for pair in pairs:
        before = stored.get(pair, 0)
        after = before + sent_deltas[pair]
        if (before > 0) != (after > 0):
            _add_figures(count_deltas, (pair[0], CAMPAIGN, ""), [("contacted", 1 if after > 0 else -1)])
    await _add(conn, contacted, ("sent",), {pair: {"sent": sent_deltas[pair]} for pair in pairs})
