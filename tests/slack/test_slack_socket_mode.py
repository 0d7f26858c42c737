"""With SLACK_APP_TOKEN the app takes its commands and clicks over a Socket Mode
WebSocket (here the double's) instead of HTTP; /healthz stays."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bot.catalog import load_catalog
from bot.slack.service import SlackService, SlackSettings
from bot.store import states
from bot.store.task_store import TaskStore
from tests.slack.conftest import ALICE, BOT_TOKEN, CHANNEL, button_value
from tests.slack.slack_double import TEAM, SlackDouble


@pytest.fixture
async def socket_app(catalog_dir: Path, tmp_path: Path
                     ) -> AsyncIterator[tuple[SlackService, SlackDouble, TaskStore]]:
    double = await SlackDouble().start()
    store = TaskStore(tmp_path / "socket.db")
    catalog = load_catalog(catalog_dir / "layerbot.yml")
    catalog.runner.cache_dir = catalog_dir / ".layerbot" / "cache"
    catalog.runner.work_dir = catalog_dir / ".layerbot" / "work"
    settings = SlackSettings.from_env({"SLACK_BOT_TOKEN": BOT_TOKEN,
                                       "SLACK_APP_TOKEN": "xapp-test-token",
                                       "SLACK_API_URL": double.api_url})
    service = SlackService(settings, catalog, store, update_interval=0.2,
                           update_spacing=0.0, runner_poll=0.05)
    await service.start("127.0.0.1", 0)
    yield service, double, store
    await service.close()
    await double.close()
    store.close()


async def test_publish_over_socket_mode(
        socket_app: tuple[SlackService, SlackDouble, TaskStore]) -> None:
    service, double, store = socket_app
    await double.wait_for(lambda: double.sockets)
    [opened] = double.of("apps.connections.open")
    assert opened.params["_token"] == "xapp-test-token"

    env = await double.send_envelope("slash_commands", {
        "team_id": TEAM, "channel_id": CHANNEL, "user_id": ALICE, "command": "/publish",
        "text": "win10-office", "response_url": double.new_response_url(),
        "trigger_id": "trigger-socket", "api_app_id": "A0001"})
    await double.wait_for(lambda: double.of("socket_ack", envelope_id=env))
    [card] = await double.wait_for(lambda: double.of("response_url"))
    intent = button_value(card.params["blocks"], "intent_confirm")

    click = await double.send_envelope("interactive", {
        "type": "block_actions", "team": {"id": TEAM}, "user": {"id": ALICE},
        "channel": {"id": CHANNEL}, "response_url": double.new_response_url(),
        "actions": [{"type": "button", "action_id": "intent_confirm", "value": intent,
                     "block_id": "intent"}]})
    await double.wait_for(lambda: double.of("socket_ack", envelope_id=click))
    [task] = await double.wait_for(lambda: store.list_tasks())
    await double.wait_for(lambda: store.get(task.id).finished, timeout=60)
    assert store.get(task.id).status == states.DONE

    async with aiohttp.ClientSession() as session:
        base = f"http://127.0.0.1:{service.port}"
        async with session.get(base + "/healthz") as resp:
            assert (await resp.json())["mode"] == "socket"
        async with session.post(base + "/slack/events", data="x") as resp:
            assert resp.status in (404, 405)  # no unsigned HTTP entry in Socket Mode


async def test_socket_mode_refuses_other_workspaces_and_malformed_payloads(
        socket_app: tuple[SlackService, SlackDouble, TaskStore],
        caplog: pytest.LogCaptureFixture) -> None:
    service, double, store = socket_app
    await double.wait_for(lambda: double.sockets)
    command = {"team_id": "T0THEIRS", "channel_id": CHANNEL, "user_id": ALICE,
               "command": "/publish", "text": "list", "response_url": double.new_response_url(),
               "trigger_id": "trigger-socket", "api_app_id": "A0001"}
    envelopes = [
        await double.send_envelope("slash_commands", command),
        await double.send_envelope("slash_commands", {**command, "team_id": TEAM, "user_id": 5}),
        await double.send_envelope("interactive", {
            "type": "block_actions", "team": {"id": TEAM}, "user": {"id": ALICE},
            "actions": [{"action_id": "task_retry", "value": {"id": "t1"}}]}),
    ]
    for envelope in envelopes:  # acknowledged, so Slack does not resend them
        await double.wait_for(lambda e=envelope: double.of("socket_ack", envelope_id=e))
    await service.background.drain()
    assert double.of("response_url") == []
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []
    reasons = [r["reason"] for r in store.rows("SELECT reason FROM audit WHERE allowed = 0")]
    assert len(reasons) == 3
    assert "workspace T0THEIRS is not the installed one (T0001)" in reasons[0]
    assert "user_id: input should be a valid string, got a number" in reasons[1]
    assert "actions[0].value" in reasons[2]
