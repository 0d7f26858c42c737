"""A bare slack-bolt AsyncApp for bench/ack.py to compare layerbot with: a ``/publish``
listener that only acks, served by the same stack as ``layerbot serve`` (an aiohttp
``web.Application`` behind an ``AppRunner`` and a ``TCPSite``; bolt checks the signature
itself). ``GET /healthz?window=`` reports its event loop's worst lag like layerbot's.

Run by bench/ack.py: SLACK_BOT_TOKEN=... SLACK_SIGNING_SECRET=... SLACK_API_URL=...
python bench/bare_bolt.py --port 3001
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.metrics.loop_lag import LoopLagMonitor


def bolt_app() -> AsyncApp:
    # popped: bolt would warn that the variable is unused when a client is given
    client = AsyncWebClient(token=os.environ.pop("SLACK_BOT_TOKEN"), base_url=os.environ["SLACK_API_URL"])
    app = AsyncApp(client=client, signing_secret=os.environ["SLACK_SIGNING_SECRET"], name="bare")

    @app.command("/publish")
    async def publish(ack: AsyncAck) -> None:
        await ack()

    return app


async def serve(host: str, port: int) -> None:
    app = bolt_app()
    monitor = LoopLagMonitor()
    stop = asyncio.Event()

    async def events(request: web.Request) -> web.Response:
        return await to_aiohttp_response(await app.async_dispatch(await to_bolt_request(request)))

    async def healthz(request: web.Request) -> web.Response:
        window = float(request.query.get("window", "0")) or None
        return web.json_response({"ok": True, "loop_lag_ms": round(monitor.worst(window) * 1000, 1)})

    web_app = web.Application()
    web_app.router.add_post("/slack/events", events)
    web_app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(web_app, access_log=None, auto_decompress=False)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    lag = asyncio.create_task(monitor.run(stop))
    await stop.wait()
    await lag
    await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port))
