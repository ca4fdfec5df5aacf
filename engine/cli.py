"""The command line (typer + rich): serve, workspace create."""

from __future__ import annotations

import asyncio
import ipaddress
import os
from typing import Any

import typer
from rich.console import Console

from engine.facade import CampaignEngine

app = typer.Typer(help="campaign-engine: event-sourced sending engine for multi-step email campaigns.",
                  no_args_is_help=True)
workspace_app = typer.Typer(help="Workspaces and API keys.", no_args_is_help=True)
app.add_typer(workspace_app, name="workspace")
console = Console()

DB_OPTION = typer.Option(None, "--db", help="Database URL (default: $CAMPAIGN_ENGINE_DB or ./campaign-engine.db)")
PRIVATE_WEBHOOKS_OPTION = typer.Option(
    True, "--private-webhooks/--no-private-webhooks", envvar="CAMPAIGN_ENGINE_PRIVATE_WEBHOOKS",
    help="Let webhooks call loopback and private-network addresses (link-local ones never)")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command()
def serve(db: str | None = DB_OPTION, host: str = typer.Option("127.0.0.1", help="Interface to listen on"),
          port: int = typer.Option(8080, help="TCP port"), private_webhooks: bool = PRIVATE_WEBHOOKS_OPTION) -> None:
    """Serve the REST API. On an empty database, create workspace `default` and print its key once."""
    if not _is_loopback(host) and not os.environ.get("CAMPAIGN_ENGINE_SECRET_KEY"):
        console.print("[red]Refusing to listen on a non-loopback host without CAMPAIGN_ENGINE_SECRET_KEY.[/red]")
        raise typer.Exit(2)
    asyncio.run(_serve(db, host, port, private_webhooks))


async def _serve(db: str | None, host: str, port: int, private_webhooks: bool) -> None:
    import uvicorn

    from engine.api import create_app

    async with CampaignEngine(db, public_url=os.environ.get("CAMPAIGN_ENGINE_PUBLIC_URL"),
                              webhook_allow_private_addresses=private_webhooks) as engine:
        if not await engine.has_workspaces():
            ws = await engine.create_workspace("default")
            console.print(f"Created workspace [bold]default[/bold] ({ws.id}). Its API key, shown once:")
            console.print(f"  [bold green]{ws.api_key}[/bold green]")
            console.print(f"Try: curl -H 'Authorization: Bearer {ws.api_key}' http://{host}:{port}/v1/account",
                          soft_wrap=True)
        console.print(f"Interactive docs at http://{host}:{port}/docs")
        config = uvicorn.Config(create_app(engine), host=host, port=port, log_level="info")
        stop = asyncio.Event()
        loop_task = asyncio.create_task(engine.run(stop))
        try:
            await uvicorn.Server(config).serve()  # returns on SIGINT / SIGTERM
        finally:
            stop.set()
            await loop_task  # finishes the tick in flight: every claim gets its outcome


@app.command()
def worker(db: str | None = DB_OPTION,
           lease_seconds: float = typer.Option(600.0, help="How long a claim may wait for its SMTP outcome"),
           safety_seconds: float = typer.Option(300.0, help="Tick at least this often"),
           poll_seconds: float = typer.Option(60.0, help="Mailbox polling interval"),
           smtp_timeout: float = typer.Option(30.0, help="SMTP timeout in seconds"),
           private_webhooks: bool = PRIVATE_WEBHOOKS_OPTION) -> None:
    """Run the sending loop only (add nodes on PostgreSQL). SIGTERM finishes in-flight sends first."""
    asyncio.run(_worker(db, lease_seconds=lease_seconds, safety_seconds=safety_seconds, poll_seconds=poll_seconds,
                        smtp_timeout=smtp_timeout, private_webhooks=private_webhooks))


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
        console.print("worker running; SIGTERM or Ctrl-C to stop")
        await engine.run(stop, safety_seconds=safety_seconds, poll_seconds=poll_seconds)
        console.print("worker stopped")


@workspace_app.command("create")
def workspace_create(name: str, db: str | None = DB_OPTION,
                     monthly_limit: int | None = typer.Option(None, "--monthly-limit", help="Emails per month"),
                     require_approval: bool = typer.Option(False, "--require-approval")) -> None:
    """Create a workspace and print its API key (shown once; only its hash is stored)."""

    async def run() -> None:
        async with CampaignEngine(db) as engine:
            ws = await engine.create_workspace(name, monthly_limit=monthly_limit, require_approval=require_approval)
            console.print(f"workspace {ws.id} created")
            console.print(f"api key: {ws.api_key}")

    asyncio.run(run())


@app.command()
def demo() -> None:
    """A 3-step campaign to 50 generated contacts over a simulated week, on a throwaway database
    and a local SMTP capture server: prints sends per day next to the forecast, emails and stats."""
    from engine.demo import main as run_demo

    result = run_demo(console)
    if not result["matches"]:
        raise typer.Exit(1)


@app.command()
def forecast(campaign_id: str, db: str | None = DB_OPTION,
             days: int = typer.Option(7, help="Local calendar days from today"),
             workspace: str | None = typer.Option(None, help="Workspace id (default: the campaign's)")) -> None:
    """The emails a campaign will send per day: a table and a bar chart."""
    from rich.table import Table

    async def run() -> dict[str, Any]:
        async with CampaignEngine(db) as engine:
            ws = workspace or await engine.workspace_of_campaign(campaign_id)
            return await engine.forecast(ws, campaign_id, days)

    try:
        result = asyncio.run(run())
    except LookupError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
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
    console.print(f"total: {result['total']}")


from engine.cli_audit import register as _register_audit  # noqa: E402

_register_audit(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
