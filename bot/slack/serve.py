"""The ``layerbot serve`` command (registered in :mod:`bot.cli.commands`); the Slack stack is
imported only when the command runs, so the other commands start fast."""

from __future__ import annotations

from typing import Any

import click


@click.command()
@click.option("--host", default="0.0.0.0", show_default=True, help="address to listen on")
@click.option("--port", default=3000, show_default=True, help="HTTP port (also /healthz, /readyz, /metrics)")
@click.option("--synchronous", type=click.Choice(["normal", "full"]), default="full",
              show_default=True,
              help="SQLite commit mode of the task database in this process: full (fsync every "
                   "commit; the runner commits from worker threads, never on the event loop) or "
                   "normal (WAL without fsync per commit; a power loss may drop the last commits)")
@click.pass_obj
def serve(ctx: Any, host: str, port: int, synchronous: str) -> None:
    """Run the Slack app, the job runner and the Slack notifier.

    Needs SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET; with SLACK_APP_TOKEN it uses
    Socket Mode. SLACK_API_URL points it at another Web API (staging, tests).

    Example: SLACK_BOT_TOKEN=xoxb-... SLACK_SIGNING_SECRET=... layerbot serve --port 3000
    """
    import asyncio

    from bot.slack.service import SettingsError, SlackService, SlackSettings, serve_forever

    try:
        settings = SlackSettings.from_env()
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
    catalog = ctx.service_catalog()
    store = ctx.store()
    store.set_synchronous(synchronous)

    async def main() -> None:
        service = SlackService(settings, catalog, store)
        await serve_forever(service, host, port)

    try:
        asyncio.run(main())
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
