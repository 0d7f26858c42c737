"""The Slack Web API double of the tests (tests/slack/slack_double.py) in a process of its own,
for bench/ack.py: in the bench's process, its handling of the confirm cards would share the
event loop that times the acks. ``GET /calls/<method>`` on the control port lists the params
of the calls recorded (``response_url`` for the answers on response URLs). Prints
``<api url> <control url>`` once both listen.

Run by bench/ack.py: python bench/slack_peer.py
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.slack.slack_double import SlackDouble


async def main() -> None:
    double = await SlackDouble().start()

    async def calls(request: web.Request) -> web.Response:
        return web.json_response([c.params for c in double.of(request.match_info["method"])])

    control = web.Application()
    control.router.add_get("/calls/{method}", calls)
    runner = web.AppRunner(control, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(double.url, f"http://127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    await double.close()


if __name__ == "__main__":
    asyncio.run(main())
