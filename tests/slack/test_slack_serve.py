"""``layerbot serve`` as a process: environment, HTTP endpoints, graceful stop."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from bot.catalog import load_catalog
from bot.slack.service import SettingsError, SlackService, SlackSettings
from bot.store.task_store import TaskStore
from tests.slack.conftest import BOT_TOKEN, SECRET, sign
from tests.slack.slack_double import SlackDouble

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_settings_come_from_the_environment_and_hide_secrets() -> None:
    with pytest.raises(SettingsError, match="SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET"):
        SlackSettings.from_env({})
    s = SlackSettings.from_env({"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SECRET,
                                "SLACK_API_URL": "http://127.0.0.1:9/api"})
    assert s.api_url == "http://127.0.0.1:9/api/" and not s.socket_mode
    assert BOT_TOKEN not in repr(s) and SECRET not in repr(s)
    socket_mode = SlackSettings.from_env({"SLACK_BOT_TOKEN": BOT_TOKEN,
                                          "SLACK_APP_TOKEN": "xapp-1"})
    assert socket_mode.socket_mode and socket_mode.api_url == "https://slack.com/api/"
    assert "xapp-1" not in repr(socket_mode)


def test_serve_without_tokens_is_a_usage_error(catalog_dir: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_")}
    proc = subprocess.run(
        [sys.executable, "-m", "bot.cli.commands", "--config", str(catalog_dir / "layerbot.yml"),
         "--db", str(tmp_path / "db"), "serve"], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=60)
    assert proc.returncode == 2
    assert "SLACK_BOT_TOKEN" in proc.stderr


async def test_serve_answers_slack_and_stops_on_sigterm(catalog_dir: Path, tmp_path: Path) -> None:
    double = await SlackDouble().start()
    port = free_port()
    env = {**os.environ, "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SECRET,
           "SLACK_API_URL": double.api_url}
    env.pop("SLACK_APP_TOKEN", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli.commands", "--config", str(catalog_dir / "layerbot.yml"),
        "--db", str(tmp_path / "serve.db"), "serve", "--host", "127.0.0.1", "--port", str(port),
        cwd=ROOT, env=env, stderr=asyncio.subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                try:
                    async with session.get(base + "/healthz") as resp:
                        assert (await resp.json())["ok"] is True
                        break
                except aiohttp.ClientConnectionError:
                    assert proc.returncode is None
                    await asyncio.sleep(0.05)
            body = ("command=%2Fpublish&text=help&user_id=UALICE&channel_id=COPS&team_id=T0001"
                    f"&trigger_id=t&response_url={double.new_response_url()}")
            headers = {"Content-Type": "application/x-www-form-urlencoded", **sign(body)}
            async with session.post(base + "/slack/events", data=body, headers=headers) as resp:
                assert resp.status == 200
            answer = await double.wait_for(lambda: double.of("response_url"))
            assert "/publish NAME" in answer[0].params["text"]
            bad = {**headers, "X-Slack-Signature": "v0=" + "0" * 64}
            async with session.post(base + "/slack/events", data=body, headers=bad) as resp:
                assert resp.status == 401
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        assert proc.stderr is not None
        log = (await proc.stderr.read()).decode()
        assert "layerbot serve: HTTP on 127.0.0.1" in log and "stopping" in log
        assert BOT_TOKEN not in log and SECRET not in log
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await double.close()


async def test_a_rejected_token_stops_the_start(catalog_dir: Path, tmp_path: Path) -> None:
    double = await SlackDouble().start()
    double.reject_tokens.add(BOT_TOKEN)
    store = TaskStore(tmp_path / "db")
    settings = SlackSettings(bot_token=BOT_TOKEN, signing_secret=SECRET, api_url=double.api_url)
    service = SlackService(settings, load_catalog(catalog_dir / "layerbot.yml"), store)
    try:
        with pytest.raises(SettingsError, match="Slack rejected SLACK_BOT_TOKEN: invalid_auth"
                           ) as err:
            await service.start("127.0.0.1", 0)
        assert BOT_TOKEN not in str(err.value)
    finally:
        await service.close()
        await double.close()
        store.close()
