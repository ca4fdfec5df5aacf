"""The command line (typer + rich): serve, workspace create."""

from __future__ import annotations

import asyncio
import ipaddress
import os

import typer
from rich.console import Console

from engine.facade import CampaignEngine

app = typer.Typer(help="campaign-engine: event-sourced sending engine for multi-step email campaigns.",
                  no_args_is_help=True)
workspace_app = typer.Typer(help="Workspaces and API keys.", no_args_is_help=True)
app.add_typer(workspace_app, name="workspace")
console = Console()

DB_OPTION = typer.Option(None, "--db", help="Database URL (default: $CAMPAIGN_ENGINE_DB or ./campaign-engine.db)")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command()
def serve(db: str | None = DB_OPTION, host: str = typer.Option("127.0.0.1", help="Interface to listen on"),
          port: int = typer.Option(8080, help="TCP port")) -> None:
    """Serve the REST API. On an empty database, create workspace `default` and print its key once."""
    if not _is_loopback(host) and not os.environ.get("CAMPAIGN_ENGINE_SECRET_KEY"):
        console.print("[red]Refusing to listen on a non-loopback host without CAMPAIGN_ENGINE_SECRET_KEY.[/red]")
        raise typer.Exit(2)
    asyncio.run(_serve(db, host, port))


async def _serve(db: str | None, host: str, port: int) -> None:
    import uvicorn

    from engine.api import create_app

    async with CampaignEngine(db, public_url=os.environ.get("CAMPAIGN_ENGINE_PUBLIC_URL")) as engine:
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
def worker(db: str | None = DB_OPTION) -> None:
    """Run the sending loop only (add nodes on PostgreSQL). SIGTERM finishes in-flight sends first."""
    asyncio.run(_worker(db))


async def _worker(db: str | None) -> None:
    import signal

    async with CampaignEngine(db, public_url=os.environ.get("CAMPAIGN_ENGINE_PUBLIC_URL")) as engine:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        console.print("worker running; SIGTERM or Ctrl-C to stop")
        await engine.run(stop)
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


from engine.cli_audit import register as _register_audit  # noqa: E402

_register_audit(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
