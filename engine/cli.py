"""The command line (typer + rich): serve, worker, workspaces and their API keys, contacts import, demo,
forecast.

Every command runs through :func:`engine.cli_audit.run_command`: an expected failure (bad input,
an unknown id, a refused request, an unreachable database, a bad secret key) is one ``error:``
line on stderr and exit 1 (not found) or 2 (anything else), never a traceback; a closed stdout
(``| head``) ends the command quietly. Output is full width when piped.

Logging is configured once per command by :func:`engine.logging_setup.configure_logging`, from the
global ``--log-format`` / ``--log-level`` (also accepted after ``serve`` and ``worker``) or
``$CAMPAIGN_ENGINE_LOG_FORMAT`` / ``$CAMPAIGN_ENGINE_LOG_LEVEL``: lines on stderr, console on a
terminal, JSON lines otherwise. ``serve`` and ``worker`` log from ``info``; the one-shot commands from
``warning``, since their stdout and stderr are what a user reads (or a script parses).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import shlex
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from engine.cli_audit import fail, make_console, run_command
from engine.facade import CampaignEngine
from engine.logging_setup import LogFormat, LoggingChoice, LogLevel, configure_logging
from engine.service import contact_csv
from events.gc_pause import freeze_long_lived

app = typer.Typer(help="campaign-engine: event-sourced sending engine for multi-step email campaigns.",
                  no_args_is_help=True)
workspace_app = typer.Typer(help="Workspaces and API keys.", no_args_is_help=True)
app.add_typer(workspace_app, name="workspace")
keys_app = typer.Typer(help="A workspace's API keys: list, create (the key is shown once), revoke.",
                       no_args_is_help=True)
workspace_app.add_typer(keys_app, name="keys")
contacts_app = typer.Typer(help="Contacts: import a file.", no_args_is_help=True)
app.add_typer(contacts_app, name="contacts")
console = make_console()
error_console = make_console(stderr=True)  # progress bars: stdout stays the result alone
CLI_ACTOR = "cli"
IMPORT_CHUNK = 5000  # rows per transaction batch of `contacts import`, and per step of its progress bar
IMPORT_SHOWN_INVALID = 20  # refused rows printed one per line; the rest are counted

DB_OPTION = typer.Option(None, "--db", help="Database URL (default: $CAMPAIGN_ENGINE_DB or ./campaign-engine.db)")
WORKSPACE_OPTION = typer.Option(None, "--workspace", "-w",
                                help="Workspace id or name (default: the only workspace, when there is one)")
JSON_OPTION = typer.Option(False, "--json", help="Print JSON instead of a table")
LOG_FORMAT_HELP = "Log lines on stderr: console, json, or auto (console on a terminal, JSON lines otherwise)"
LOG_LEVEL_HELP = "Lowest log level written (default: info for serve and worker, warning for other commands)"
LONG_RUNNING = ("serve", "worker")  # their log lines are their output: they log from info
PRIVATE_WEBHOOKS_OPTION = typer.Option(
    True, "--private-webhooks/--no-private-webhooks", envvar="CAMPAIGN_ENGINE_PRIVATE_WEBHOOKS",
    help="Let webhooks call loopback and private-network addresses (link-local ones never)")


def _version_callback(value: bool) -> None:
    if value:
        try:
            found = package_version("campaign-engine")
        except PackageNotFoundError:  # running from a source tree that was never installed
            found = "unknown"
        console.print(f"campaign-engine {found}")
        raise typer.Exit()


@app.callback()
def _options(ctx: typer.Context,
             version: bool = typer.Option(False, "--version", is_eager=True, callback=_version_callback,
                                          help="Print the version and exit"),
             log_format: LogFormat | None = typer.Option(None, "--log-format", envvar="CAMPAIGN_ENGINE_LOG_FORMAT",
                                                         case_sensitive=False, help=LOG_FORMAT_HELP),
             log_level: LogLevel | None = typer.Option(None, "--log-level", envvar="CAMPAIGN_ENGINE_LOG_LEVEL",
                                                       case_sensitive=False, help=LOG_LEVEL_HELP)) -> None:
    """campaign-engine: event-sourced sending engine for multi-step email campaigns."""
    default_level = LogLevel.info if ctx.invoked_subcommand in LONG_RUNNING else LogLevel.warning
    ctx.obj = configure_logging(log_format, log_level, default_level=default_level)


def _relog(ctx: typer.Context, log_format: LogFormat | None, log_level: LogLevel | None) -> LoggingChoice:
    """``serve --log-format json`` and the like: the command's own options over the global ones."""
    chosen = ctx.obj if isinstance(ctx.obj, LoggingChoice) else None
    if log_format is None and log_level is None and chosen is not None:
        return chosen
    return configure_logging(log_format or (chosen.format if chosen else None),
                             log_level or (chosen.level if chosen else None), default_level=LogLevel.info)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command()
def serve(ctx: typer.Context, db: str | None = DB_OPTION,
          host: str = typer.Option("127.0.0.1", help="Interface to listen on"),
          port: int = typer.Option(8080, help="TCP port"), private_webhooks: bool = PRIVATE_WEBHOOKS_OPTION,
          log_format: LogFormat | None = typer.Option(None, "--log-format", case_sensitive=False,
                                                      help=LOG_FORMAT_HELP),
          log_level: LogLevel | None = typer.Option(None, "--log-level", case_sensitive=False,
                                                    help=LOG_LEVEL_HELP)) -> None:
    """Serve the REST API. On an empty database, create workspace `default` and print its key once."""
    logging_choice = _relog(ctx, log_format, log_level)
    if not _is_loopback(host) and not os.environ.get("CAMPAIGN_ENGINE_SECRET_KEY"):
        console.print("[red]Refusing to listen on a non-loopback host without CAMPAIGN_ENGINE_SECRET_KEY.[/red]")
        raise typer.Exit(2)
    if not _is_loopback(host):
        _warn_public_defaults(private_webhooks)
    run_command(lambda: _serve(db, host, port, private_webhooks, logging_choice))


def _warn_public_defaults(private_webhooks: bool) -> None:
    """Defaults that suit a laptop but not a public host, named with the setting that changes them.

    Without a public URL every tracking link and unsubscribe page in every email points at
    127.0.0.1; with private webhooks on, any workspace's webhook can reach this host's LAN and
    loopback services. Both still start (a proxy or a trusted tenant may make them right), loudly.
    """
    public_url = os.environ.get("CAMPAIGN_ENGINE_PUBLIC_URL", "")
    link_host = urlsplit(public_url).hostname or ""
    if not public_url or _is_loopback(link_host):
        console.print("[yellow]warning:[/yellow] CAMPAIGN_ENGINE_PUBLIC_URL is not set to this host's public "
                      "address: tracking links and unsubscribe pages in emails would point at "
                      f"{escape(public_url or 'http://127.0.0.1:8080')}", soft_wrap=True)
    if private_webhooks:
        console.print("[yellow]warning:[/yellow] webhooks may call loopback and private-network addresses; on a "
                      "shared or public host use --no-private-webhooks (or CAMPAIGN_ENGINE_PRIVATE_WEBHOOKS=false)",
                      soft_wrap=True)


def _db_flag(db: str | None) -> str:
    """The ``--db`` part of a command to suggest: only when the user gave one."""
    return f" --db {shlex.quote(db)}" if db else ""


async def _serve(db: str | None, host: str, port: int, private_webhooks: bool, logging_choice: LoggingChoice
                 ) -> None:
    import uvicorn

    from engine.api import create_app

    # serve always runs the loop: /readyz is 503 until it runs (and after it stopped)
    async with CampaignEngine(db, public_url=os.environ.get("CAMPAIGN_ENGINE_PUBLIC_URL"),
                              webhook_allow_private_addresses=private_webhooks, ready_requires_runtime=True) as engine:
        if not await engine.has_workspaces():
            ws = await engine.create_workspace("default", actor=CLI_ACTOR)
            console.print(f"Created workspace [bold]default[/bold] ({ws.id}). Its API key, shown once:")
            console.print(f"  [bold green]{ws.api_key}[/bold green]")
            console.print(f"Try: curl -H 'Authorization: Bearer {ws.api_key}' http://{host}:{port}/v1/account",
                          soft_wrap=True)
        else:
            workspaces = await engine.list_workspaces()
            names = ", ".join(f"{escape(w['name'])} ({w['id']})" for w in workspaces[:5])
            more = f" and {len(workspaces) - 5} more" if len(workspaces) > 5 else ""
            first = shlex.quote(workspaces[0]["name"])
            console.print(f"Workspaces: {names}{more}. API keys are shown only when created; to get a new one:",
                          soft_wrap=True)
            console.print(f"  campaign-engine workspace keys create --workspace {escape(first)} --name NAME"
                          f"{escape(_db_flag(db))}", soft_wrap=True)
        console.print(f"Interactive docs at http://{host}:{port}/docs")
        # log_config=None: uvicorn installs no handlers of its own; its loggers propagate to the
        # handler configure_logging put on the root, so its lines share the engine's format
        config = uvicorn.Config(create_app(engine), host=host, port=port, log_config=None,
                                log_level=logging_choice.level_number)
        freeze_long_lived()  # started: full collections need not walk the start-up's objects again
        stop = asyncio.Event()
        loop_task = asyncio.create_task(engine.run(stop))
        try:
            await uvicorn.Server(config).serve()  # returns on SIGINT / SIGTERM
        finally:
            stop.set()
            await loop_task  # finishes the tick in flight: every claim gets its outcome


@app.command()
def worker(ctx: typer.Context, db: str | None = DB_OPTION,
           lease_seconds: float = typer.Option(600.0, help="How long a claim may wait for its SMTP outcome"),
           safety_seconds: float = typer.Option(300.0, help="Tick at least this often"),
           poll_seconds: float = typer.Option(60.0, help="Mailbox polling interval"),
           smtp_timeout: float = typer.Option(30.0, help="SMTP timeout in seconds"),
           private_webhooks: bool = PRIVATE_WEBHOOKS_OPTION,
           metrics_port: int | None = typer.Option(None, "--metrics-port", min=1, max=65535,
                                                   help="Serve this worker's Prometheus metrics on this port"),
           metrics_host: str = typer.Option("127.0.0.1", "--metrics-host", help="Interface for --metrics-port"),
           log_format: LogFormat | None = typer.Option(None, "--log-format", case_sensitive=False,
                                                       help=LOG_FORMAT_HELP),
           log_level: LogLevel | None = typer.Option(None, "--log-level", case_sensitive=False,
                                                     help=LOG_LEVEL_HELP)
           ) -> None:
    """Run the sending loop only (add nodes on PostgreSQL). SIGTERM finishes in-flight sends first."""
    _relog(ctx, log_format, log_level)
    if metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr=metrics_host)  # the default registry: engine/metrics.py
    run_command(lambda: _worker(db, lease_seconds=lease_seconds, safety_seconds=safety_seconds,
                                poll_seconds=poll_seconds, smtp_timeout=smtp_timeout,
                                private_webhooks=private_webhooks))


async def _worker(db: str | None, *, lease_seconds: float, safety_seconds: float, poll_seconds: float,
                  smtp_timeout: float, private_webhooks: bool) -> None:
    import signal

    async with CampaignEngine(db, public_url=os.environ.get("CAMPAIGN_ENGINE_PUBLIC_URL"),
                              lease_seconds=lease_seconds, smtp_timeout=smtp_timeout,
                              webhook_allow_private_addresses=private_webhooks) as engine:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        freeze_long_lived()  # started: full collections need not walk the start-up's objects again
        console.print("worker running; SIGTERM or Ctrl-C to stop")
        await engine.run(stop, safety_seconds=safety_seconds, poll_seconds=poll_seconds)
        console.print("worker stopped")


@workspace_app.command("create")
def workspace_create(name: str, db: str | None = DB_OPTION,
                     monthly_limit: int | None = typer.Option(None, "--monthly-limit", help="Emails per month"),
                     require_approval: bool = typer.Option(False, "--require-approval")) -> None:
    """Create a workspace and print its API key (shown once; only its hash is stored). Names are unique."""

    async def run() -> None:
        async with CampaignEngine(db) as engine:
            ws = await engine.create_workspace(name, monthly_limit=monthly_limit, require_approval=require_approval,
                                               actor=CLI_ACTOR)
            console.print(f"workspace {ws.id} created")
            console.print(f"api key: {ws.api_key}", soft_wrap=True)

    run_command(run)


@workspace_app.command("list")
def workspace_list(db: str | None = DB_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Every workspace with its number of live API keys."""

    async def run() -> None:
        async with CampaignEngine(db) as engine:
            found = await engine.list_workspaces()
        if as_json:
            console.print_json(json.dumps(found))
            return
        table = Table("id", "name", "monthly limit", "api keys", "created")
        for w in found:
            table.add_row(w["id"], escape(w["name"]), "-" if w["monthly_limit"] is None else str(w["monthly_limit"]),
                          str(w["api_keys"]), w["created_at"])
        console.print(table)

    run_command(run)


async def _workspace(engine: CampaignEngine, ref: str | None, db: str | None) -> str:
    """The workspace ``--workspace`` names, or the only one there is."""
    if ref is not None:
        return await engine.find_workspace(ref)
    found = await engine.list_workspaces()
    if len(found) == 1:
        return str(found[0]["id"])
    if not found:
        fail(f"no workspace yet: create one with `campaign-engine workspace create NAME{_db_flag(db)}`")
    fail(f"{len(found)} workspaces: name one with --workspace ID|NAME (see `campaign-engine workspace list"
         f"{_db_flag(db)}`)")


@keys_app.command("list")
def keys_list(workspace: str | None = WORKSPACE_OPTION, db: str | None = DB_OPTION,
              as_json: bool = JSON_OPTION) -> None:
    """The workspace's live keys: id, name, prefix (the key's first 8 characters), created, last used."""

    async def run() -> None:
        async with CampaignEngine(db) as engine:
            keys = await engine.list_api_keys(await _workspace(engine, workspace, db))
        if as_json:
            console.print_json(json.dumps(keys))
            return
        table = Table("id", "name", "prefix", "created", "last used")
        for k in keys:
            table.add_row(k["id"], escape(k["name"]), k["prefix"], k["created_at"], k["last_used_at"] or "never")
        console.print(table)

    run_command(run)


@keys_app.command("create")
def keys_create(workspace: str | None = WORKSPACE_OPTION, db: str | None = DB_OPTION,
                name: str = typer.Option("cli", "--name", help="What the key is for")) -> None:
    """Create a key and print it once (only its hash is stored: copy it now)."""

    async def run() -> None:
        async with CampaignEngine(db) as engine:
            created = await engine.create_api_key(await _workspace(engine, workspace, db), {"name": name},
                                                  actor=CLI_ACTOR)
        console.print(f"api key {created['id']} ({escape(created['name'])}) created; the key, shown once:")
        console.print(f"  {created['key']}", soft_wrap=True, highlight=False)

    run_command(run)


@keys_app.command("revoke")
def keys_revoke(key_id: str, workspace: str | None = WORKSPACE_OPTION, db: str | None = DB_OPTION) -> None:
    """Revoke a key by its id: it answers 401 at once. A workspace's last key cannot be revoked."""

    async def run() -> None:
        async with CampaignEngine(db) as engine:
            ws = await (engine.find_workspace(workspace) if workspace is not None
                        else engine.workspace_of_api_key(key_id))
            await engine.revoke_api_key(ws, key_id, actor=CLI_ACTOR)
        console.print(f"api key {key_id} revoked")

    run_command(run)


@contacts_app.command("import")
def contacts_import(file: Path = typer.Argument(..., help="A CSV (any of , ; tab |; headers in any spelling) "
                                                "or a JSON array of contacts (*.json)"),
                    workspace: str | None = WORKSPACE_OPTION, db: str | None = DB_OPTION,
                    list_id: str | None = typer.Option(None, "--list-id", help="Also add the contacts to this list"),
                    mapping: list[str] = typer.Option([], "--map", help="HEADER=FIELD: read a column as this "  # noqa: B006
                                                      "field (FIELD empty: skip the column)")) -> None:
    """Create or update contacts from a file, as POST /v1/contacts/import does; prints created,
    updated and the refused rows (the others are imported anyway)."""
    columns: dict[str, str | None] = {}
    for pair in mapping:
        header, sep, field = pair.partition("=")
        if not sep or not header.strip():
            fail(f"--map takes HEADER=FIELD, not {pair!r}", 2)
        columns[header.strip()] = field.strip() or None
    try:
        text = file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        fail(f"{file} is not UTF-8", 2)
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror or exc}", 2)

    async def run() -> None:
        rows = _import_rows(file, text, columns)  # a malformed file is refused before opening the database
        async with CampaignEngine(db) as engine:
            ws = await _workspace(engine, workspace, db)
            totals = await _import_in_chunks(engine, ws, rows, list_id)
        console.print(f"created {totals['created']}, updated {totals['updated']}, invalid {len(totals['invalid'])}"
                      + (f"; {totals['added_to_list']} on list {list_id}" if list_id else ""))
        for refused in totals["invalid"][:IMPORT_SHOWN_INVALID]:
            console.print(f"  row {refused['row']}: {escape(refused['error'])}", soft_wrap=True)
        if len(totals["invalid"]) > IMPORT_SHOWN_INVALID:
            console.print(f"  ... and {len(totals['invalid']) - IMPORT_SHOWN_INVALID} more")

    run_command(run)


def _import_rows(file: Path, text: str, columns: dict[str, str | None]) -> list[Any]:
    """A ``.json`` file (or one that starts with ``[``) is a JSON array of contacts; anything
    else is a CSV read by the same rules as the REST import."""
    if file.suffix.lower() == ".json" or text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except ValueError as exc:
            fail(f"{file} is not valid JSON: {exc}", 2)
        if not isinstance(rows, list):
            fail(f"{file} must hold a JSON array of contacts", 2)
        return rows
    return contact_csv.read_rows(text, columns)


async def _import_in_chunks(engine: CampaignEngine, ws: str, rows: list[Any], list_id: str | None
                            ) -> dict[str, Any]:
    """Import ``IMPORT_CHUNK`` rows at a time so a large file shows progress; row numbers in the
    refusals stay those of the whole file. The first call checks ``--list-id`` before anything
    is written (an empty file still runs one, so an unknown list is an error there too)."""
    totals: dict[str, Any] = {"created": 0, "updated": 0, "added_to_list": 0, "invalid": []}
    with Progress(TextColumn("importing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=error_console, transient=True,
                  disable=not error_console.is_terminal or len(rows) <= IMPORT_CHUNK) as bar:
        task = bar.add_task("import", total=len(rows))
        for start in range(0, max(len(rows), 1), IMPORT_CHUNK):
            chunk = rows[start:start + IMPORT_CHUNK]
            result = await engine.import_contacts(ws, chunk, list_id=list_id)
            for key in ("created", "updated", "added_to_list"):
                totals[key] += result.get(key) or 0
            totals["invalid"] += [{**refused, "row": refused["row"] + start} for refused in result["invalid"]]
            bar.update(task, advance=len(chunk))
    return totals


@app.command()
def demo() -> None:
    """A 3-step campaign (step 1 an A/B test, French holidays kept) to 50 generated contacts over nine
    simulated days, with simulated opens, replies and a bounce through the inbound path, on a throwaway
    database and a local SMTP capture server: prints sends per day next to the forecast, and the stats."""
    from engine.demo import main as run_demo

    result = run_demo(console)
    if not result["matches"]:
        raise typer.Exit(1)


@app.command()
def forecast(campaign_id: str, db: str | None = DB_OPTION,
             days: int = typer.Option(7, help="Local calendar days from today"),
             workspace: str | None = typer.Option(None, help="Workspace id (default: the campaign's)"),
             what_if: list[str] = typer.Option([], "--what-if", help="KEY=VALUE: daily_limit, max_per_hour, "  # noqa: B006
                                               "every_minutes, senders_add, as_if=launched; changes nothing")
             ) -> None:
    """The emails a campaign will send per day: a table and a bar chart."""
    changes: dict[str, str] = {}
    for pair in what_if:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            fail(f"--what-if takes KEY=VALUE, not {pair!r}", 2)
        changes[key.strip()] = value.strip()

    async def run() -> None:
        async with CampaignEngine(db) as engine:
            ws = workspace or await engine.workspace_of_campaign(campaign_id)
            result = await engine.forecast(ws, campaign_id, days, **changes)
        _print_forecast(campaign_id, result)

    run_command(run)


def _print_forecast(campaign_id: str, result: dict[str, Any]) -> None:
    table = Table(title=f"Forecast for {campaign_id} ({result['timezone']})")
    for col in ("date", "emails", "by step", "by sender", ""):
        table.add_column(col)
    days_ = result["days"]
    peak = max([d["count"] for d in days_] + [1])
    for d in days_:
        bar = "█" * round(30 * d["count"] / peak)
        table.add_row(d["date"], str(d["count"]), ", ".join(f"{k}: {v}" for k, v in d["by_step"].items()),
                      ", ".join(f"{k}: {v}" for k, v in d["by_sender"].items()), f"[green]{bar}[/green]")
    console.print(table)
    console.print(f"total: {result['total']}; estimated completion: "
                  f"{result.get('estimated_completion') or 'past the horizon'}")
    if result.get("what_if"):
        console.print("what if: " + ", ".join(f"{k}={v}" for k, v in result["what_if"].items()) + " (nothing stored)")


from engine.cli_audit import register as _register_audit  # noqa: E402

_register_audit(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
