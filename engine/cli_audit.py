"""CLI commands that look back at the log: ``replay``, ``audit verify``, ``events export|tail``, ``history``.

``register(app)`` adds them to the main typer app. Every command is a thin shell over
``engine/service/audit.py``: parse options, run one coroutine, print. Exit codes: 0 done,
1 tampering found or an unknown contact/enrollment/campaign, 2 bad input (nothing changed).

:func:`run_command` and :func:`make_console` are shared with ``engine/cli.py``: every command of
the CLI turns expected failures into one line on stderr and those exit codes.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager, redirect_stdout
from typing import Any, NoReturn

import typer
from cryptography.exceptions import InvalidTag
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from engine.errors import EngineError, NotFound, SecretKeyMismatch
from engine.facade import DEFAULT_URL, CampaignEngine
from engine.secret_key import secret_bytes
from engine.service import audit
from events.context import acting
from events.registry import format_time

PIPED_WIDTH = 10_000  # piped output is read by programs: never cut a table to 80 columns


def make_console(*, stderr: bool = False) -> Console:
    """A rich console that is as wide as the terminal, or unbounded when the output is piped or
    redirected (``$COLUMNS``, when set, still wins)."""
    stream = sys.stderr if stderr else sys.stdout
    try:
        piped = not stream.isatty()
    except (AttributeError, ValueError):  # closed or replaced by something without isatty
        piped = True
    width = PIPED_WIDTH if piped and not os.environ.get("COLUMNS") else None
    return Console(stderr=stderr, highlight=False, width=width)


out = make_console()
err = make_console(stderr=True)

DB_OPTION = typer.Option(None, "--db", help="Database URL (default: $CAMPAIGN_ENGINE_DB or ./campaign-engine.db)")
PROGRESS_THRESHOLD = 2000  # events: below this a replay is over before a bar would be readable


@asynccontextmanager
async def open_engine(url: str) -> AsyncIterator[CampaignEngine]:
    """The engine on an existing database with its secret key (checked by
    :func:`engine.service.audit.engine_database`: never a new database, never a new key)."""
    engine = CampaignEngine(await audit.engine_database(url))
    with redirect_stdout(sys.stderr):  # start-up logs must not pollute JSON lines on stdout
        await engine.open()
    try:
        yield engine
    finally:
        await engine.close()


def _db(db: str | None) -> str:
    return db or os.environ.get("CAMPAIGN_ENGINE_DB") or DEFAULT_URL


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one ``error:`` line on stderr and exit with ``code``."""
    err.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def describe(exc: EngineError) -> str:
    """An engine error as one line: validation failures name each field."""
    problems = exc.details.get("errors") if isinstance(exc.details, dict) else None
    if isinstance(problems, list) and problems:
        return "; ".join(f"{p.get('field')}: {p.get('message')}" if isinstance(p, dict) else str(p) for p in problems)
    return exc.message


def quiet_stdout() -> None:
    """The reader of stdout went away (``| head``): point stdout at /dev/null so that the
    interpreter's last flush does not print a second broken-pipe error on the way out."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file descriptor (a test runner's capture)
        pass


def _check_secret_key() -> None:
    value = os.environ.get("CAMPAIGN_ENGINE_SECRET_KEY")
    if value is not None:
        try:
            secret_bytes(value)
        except ValueError:
            fail("CAMPAIGN_ENGINE_SECRET_KEY must be at least 16 bytes long")


def run_command(make: Callable[[], Coroutine[Any, Any, int | None]]) -> None:
    """Run one command's coroutine; turn expected failures into one line on stderr and an exit code.

    Exit 0 done (also when the reader of stdout went away: ``events export | head -3``), 1 an
    unknown id or tampering, 2 bad input, a refused request (nothing changed) or an unusable
    database or secret key (``secret_key_mismatch``: the database was created under another key,
    refused before anything was written). Anything else is a bug and keeps its traceback.
    """
    _check_secret_key()
    try:
        with acting(actor="cli"):  # what a command appends says so (the API and the loop say who else)
            code = asyncio.run(make())
    except BrokenPipeError:
        quiet_stdout()
        raise typer.Exit(0) from None
    except SecretKeyMismatch as exc:  # a configuration to fix, never tampering (exit 1)
        fail(exc.message, 2)
    except EngineError as exc:
        exit_code = getattr(exc, "exit_code", 1 if isinstance(exc, NotFound) else 2)
        fail(describe(exc), int(exit_code))
    except InvalidTag:
        fail("the secret key does not open this database's personal data (wrong CAMPAIGN_ENGINE_SECRET_KEY or "
             "key file)")
    except (SQLAlchemyError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        fail(f"cannot use the database: {first}")
    if code:
        raise typer.Exit(code)


_run = run_command


def _moment(value: str | None, option: str) -> Any:
    return audit.parse_moment(value, option) if value is not None else None


# -- replay -----------------------------------------------------------------------------------
def replay(
    db: str | None = DB_OPTION,
    until: str | None = typer.Option(None, "--until", help="Past moment (ISO 8601, UTC if no offset); needs --into"),
    position: int | None = typer.Option(None, "--position", help="Past log position; needs --into"),
    campaign: str | None = typer.Option(None, "--campaign", help="Only this campaign's events; needs --into"),
    into: str | None = typer.Option(None, "--into", help="Build the read models into this other database"),
) -> None:
    """Rebuild the read models from the log: in place (to the end), or into another database as of a
    past moment (--until / --position) or for one campaign, so the API or SQL can look at the past."""

    async def run() -> int:
        moment = _moment(until, "--until")
        async with open_engine(_db(db)) as engine:
            with Progress(TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                          console=err, transient=True, disable=not err.is_terminal) as bar:
                task = bar.add_task("replay", total=None)

                def progress(_stage: str, done: int, total: int) -> None:
                    if total >= PROGRESS_THRESHOLD:
                        bar.update(task, completed=done, total=total)

                result = await audit.replay(engine, until=moment, position=position, campaign_id=campaign,
                                            into=into, progress=progress)
        for warning in result.warnings:
            err.print(f"[yellow]warning:[/yellow] {escape(warning)}")
        _print_replay(result)
        return 0

    _run(run)


def _print_replay(result: audit.ReplayResult) -> None:
    table = Table("projection", "table", "rows", title="rebuilt read models")
    for name, tables in result.tables.items():
        for i, (tname, rows) in enumerate(tables.items()):
            table.add_row(name if i == 0 else "", tname, str(rows))
    out.print(table)
    when = format_time(result.recorded_at) if result.recorded_at else "-"
    where = f"into {result.into}" if result.into else "in place"
    scope = (f", campaign {result.campaign_id} only ({result.events_kept} events applied)"
             if result.campaign_id else "")
    out.print(f"replayed {result.events_read} events {escape(where)}: read models as of position {result.position} "
              f"(recorded {when}){scope}")


# -- audit verify ------------------------------------------------------------------------------
audit_app = typer.Typer(help="Check the log's integrity.", no_args_is_help=True)


@audit_app.command("verify")
def verify(db: str | None = DB_OPTION,
           batch_size: int = typer.Option(2000, "--batch-size", min=1, hidden=True)) -> None:
    """Check every stream's hash chain and version sequence, the stream heads and the positions.
    Exit 1 naming the first bad event when the log was tampered with."""

    async def run() -> int:
        async with audit.open_log(_db(db)) as store:
            report = await audit.verify_log(store, batch_size)
        for warning in report.warnings:
            out.print(f"[yellow]warning:[/yellow] {escape(warning)}")
        if report.ok:
            out.print(f"[green]log sound:[/green] {report.streams} streams, {report.events} events checked "
                      f"(hash chains, versions, stream heads; positions 1..{report.last_position} without gaps)")
            return 0
        first = report.first
        assert first is not None
        out.print(f"[red]TAMPERED:[/red] first bad event: position {first.position if first.position else '?'}, "
                  f"stream {escape(first.stream)}, version {first.version if first.version else '?'}: "
                  f"{escape(first.problem)}")
        if len(report.problems) > 1:
            out.print(f"{len(report.problems)} problems in all:")
            for p in report.problems[:20]:
                out.print(f"  position {p.position or '?'}  {escape(p.stream)}  v{p.version or '?'}  "
                          f"{escape(p.problem)}")
        out.print(f"({report.streams} streams, {report.events} events checked)")
        return 1

    _run(run)


# -- events export / tail ----------------------------------------------------------------------
events_app = typer.Typer(help="Read the raw event log.", no_args_is_help=True)


def _line(ev: Any) -> str:
    return json.dumps(audit.export_record(ev), ensure_ascii=False, separators=(",", ":"), default=str)


@events_app.command("export")
def export(db: str | None = DB_OPTION,
           campaign: str | None = typer.Option(None, "--campaign", help="Only events of this campaign"),
           since: str | None = typer.Option(None, "--since", help="Only events recorded at or after (ISO 8601)")
           ) -> None:
    """Every event as JSON lines on stdout: personal data decrypted (null once erased), secrets removed."""

    async def run() -> int:
        moment = _moment(since, "--since")
        async with open_engine(_db(db)) as engine:
            async for ev in audit.export_events(engine.store, campaign_id=campaign, since=moment):
                sys.stdout.write(_line(ev) + "\n")
        sys.stdout.flush()
        return 0

    _run(run)


@events_app.command("tail")
def tail(db: str | None = DB_OPTION,
         after: int = typer.Option(0, "--after", help="Start after this position (0: from the beginning)"),
         campaign: str | None = typer.Option(None, "--campaign", help="Only events of this campaign"),
         interval: float = typer.Option(0.5, "--interval", min=0.05, help="Seconds between polls"),
         max_events: int | None = typer.Option(None, "--max-events", min=1, hidden=True),
         idle_exit: float | None = typer.Option(None, "--idle-exit", min=0, hidden=True)) -> None:
    """Print existing events as JSON lines, then follow new ones as they are appended (Ctrl-C stops)."""

    async def run() -> int:
        async with open_engine(_db(db)) as engine:
            seen = 0
            async for ev in audit.follow(engine.store, after, poll_seconds=interval, idle_exit=idle_exit,
                                         campaign_id=campaign):
                sys.stdout.write(_line(ev) + "\n")
                sys.stdout.flush()
                seen += 1
                if max_events is not None and seen >= max_events:
                    break
        return 0

    try:
        _run(run)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


# -- history -----------------------------------------------------------------------------------
def history(db: str | None = DB_OPTION,
            contact: str | None = typer.Option(None, "--contact", help="The contact's email"),
            enrollment: str | None = typer.Option(None, "--enrollment", help="An enrollment id (enr_...)"),
            workspace: str | None = typer.Option(None, "--workspace", help="Only this workspace's contact")) -> None:
    """One contact's story in order: its own events, every enrollment's emails, skips and stops."""

    async def run() -> int:
        async with open_engine(_db(db)) as engine:
            stories = await audit.contact_history(engine, email=contact, enrollment_id=enrollment,
                                                  workspace_id=workspace)
        for story in stories:
            table = Table("#", "time", "event", "campaign", "step", "details",
                          title=f"contact {story.contact_id} ({story.email or 'erased'}), workspace "
                                f"{story.workspace_id}: {len(story.entries)} events")
            for e in story.entries:
                campaign_cell = f"{e.campaign} ({e.campaign_id})" if e.campaign else (e.campaign_id or "")
                table.add_row(str(e.position), e.at.strftime("%Y-%m-%d %H:%M:%SZ"), e.type, escape(campaign_cell),
                              str(e.step) if e.step is not None else "", escape(e.details))
            out.print(table)
        return 0

    _run(run)


def register(app: typer.Typer) -> None:
    """Add ``replay``, ``audit verify``, ``events export|tail`` and ``history`` to ``app``."""
    app.command("replay")(replay)
    app.add_typer(audit_app, name="audit")
    app.add_typer(events_app, name="events")
    app.command("history")(history)
