"""``layerbot serve --log-format json``: its start and stop lines are JSON records too."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp

from tests.slack.conftest import BOT_TOKEN, SECRET
from tests.slack.slack_double import SlackDouble
from tests.slack.test_slack_serve import free_port
from tests.test_json_service_log import json_lines

ROOT = Path(__file__).resolve().parents[2]


async def test_serve_writes_only_json_lines(catalog_dir: Path, tmp_path: Path) -> None:
    double = await SlackDouble().start()
    port = free_port()
    env = {**os.environ, "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SECRET,
           "SLACK_API_URL": double.api_url}
    env.pop("SLACK_APP_TOKEN", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli.commands", "--config", str(catalog_dir / "layerbot.yml"),
        "--db", str(tmp_path / "serve.db"), "--log-format", "json", "serve", "--host", "127.0.0.1",
        "--port", str(port), cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                try:
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                        assert resp.status == 200
                        break
                except aiohttp.ClientConnectionError:
                    assert proc.returncode is None
                    await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await double.close()
    assert json_lines(stdout.decode()) == []
    messages = [str(r["message"]) for r in json_lines(stderr.decode())]
    assert any(m.startswith("layerbot serve: HTTP on 127.0.0.1") for m in messages), messages
    assert any(m.startswith("layerbot serve: stopping after") for m in messages), messages
