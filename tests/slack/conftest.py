"""The Slack app under test: the real AsyncApp and the job runner, served over HTTP on
a random port, talking to a local Slack Web API double; requests are signed."""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from slack_sdk.signature import SignatureVerifier

import adapters
from bot.catalog import load_catalog
from bot.slack.service import SlackService, SlackSettings
from bot.store.task_store import Task, TaskStore
from tests.slack.slack_double import TEAM, SlackDouble

adapters.register("fake", "tests.fake_adapter")

SECRET = "test-signing-secret-0123456789"
BOT_TOKEN = "xoxb-test-token-0123456789"
ALICE, BOB, CAROL = "UALICE", "UBOB", "UCAROL"
CHANNEL = "COPS"

def sign(body: str, secret: str = SECRET, timestamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    return {"X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": str(SignatureVerifier(secret).generate_signature(timestamp=ts,
                                                                                  body=body))}


class Slack:
    """Plays Slack's side: sends signed commands, clicks and events to the app."""

    def __init__(self, service: SlackService, double: SlackDouble, session: aiohttp.ClientSession,
                 store: TaskStore) -> None:
        self.service = service
        self.double = double
        self.session = session
        self.store = store
        self.url = f"http://127.0.0.1:{service.port}/slack/events"
        double.diagnose = self.diagnose

    def diagnose(self) -> str:
        notifier = self.service.notifier
        lines = [f"notifier dirty={sorted(notifier._dirty)} runner busy={self.service.runner.busy}"]
        for t in self.store.list_tasks():
            events = [e.kind for e in self.store.events(t.id)]
            lines.append(f"{t.id} {t.status} {t.stage} {t.progress:.0f}% ts={t.message_ts} {events}")
        return "\n".join(lines)

    async def post(self, body: str, content_type: str, *, headers: dict[str, str] | None = None,
                   ) -> aiohttp.ClientResponse:
        hdrs = {"Content-Type": content_type, **(headers if headers is not None else sign(body))}
        async with self.session.post(self.url, data=body.encode(), headers=hdrs) as resp:
            await resp.read()
            return resp

    def command_body(self, text: str, user: str = ALICE, channel: str = CHANNEL,
                     response_url: str | None = None) -> str:
        return urllib.parse.urlencode({
            "token": "legacy", "team_id": TEAM, "team_domain": "example", "channel_id": channel,
            "channel_name": "ops", "user_id": user, "user_name": user.lower(),
            "command": "/publish", "text": text, "api_app_id": "A0001",
            "response_url": response_url or self.double.new_response_url(),
            "trigger_id": "trigger-" + str(time.monotonic_ns()),
        })

    async def command(self, text: str, user: str = ALICE, channel: str = CHANNEL) -> str:
        """Run /publish; returns the response_url id its answer goes to."""
        response_url = self.double.new_response_url()
        resp = await self.post(self.command_body(text, user, channel, response_url),
                               "application/x-www-form-urlencoded")
        assert resp.status == 200
        return response_url.rsplit("/", 1)[1]

    def payload_body(self, payload: dict[str, Any]) -> str:
        return urllib.parse.urlencode({"payload": json.dumps(payload)})

    def click_payload(self, action_id: str, value: str, user: str = ALICE,
                      channel: str | None = CHANNEL) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "type": "block_actions", "team": {"id": TEAM}, "api_app_id": "A0001",
            "user": {"id": user, "team_id": TEAM}, "trigger_id": "trigger-click",
            "response_url": self.double.new_response_url(),
            "container": {"type": "message", "channel_id": channel},
            "actions": [{"type": "button", "action_id": action_id, "block_id": "b",
                         "value": value, "action_ts": str(time.time())}],
        }
        if channel is not None:
            payload["channel"] = {"id": channel}
        return payload

    async def click(self, action_id: str, value: str, user: str = ALICE,
                    channel: str | None = CHANNEL) -> str:
        """Click a button; returns the response_url id of the click."""
        payload = self.click_payload(action_id, value, user, channel)
        resp = await self.post(self.payload_body(payload), "application/x-www-form-urlencoded")
        assert resp.status == 200
        return payload["response_url"].rsplit("/", 1)[1]

    async def event(self, event: dict[str, Any]) -> aiohttp.ClientResponse:
        body = json.dumps({"token": "legacy", "team_id": TEAM, "api_app_id": "A0001",
                           "type": "event_callback", "event_id": f"Ev{time.monotonic_ns()}",
                           "event_time": int(time.time()), "event": event})
        return await self.post(body, "application/json")

    # ------------------------------------------------------------ reading answers
    async def answer(self, response_id: str) -> dict[str, Any]:
        calls = await self.double.wait_for(
            lambda: self.double.of("response_url", id=response_id))
        return calls[-1].params

    async def card(self, text: str, user: str = ALICE, channel: str = CHANNEL) -> str:
        """/publish NAMES → the confirm card's intent id."""
        answer = await self.answer(await self.command(text, user, channel))
        return button_value(answer["blocks"], "intent_confirm")

    async def idle(self) -> None:
        await self.service.background.drain()

    async def task_done(self, task_id: str, timeout: float = 60.0) -> Task:
        await self.double.wait_for(lambda: self.store.get(task_id).finished, timeout)
        return self.store.get(task_id)


def button_value(blocks: list[dict[str, Any]], action_id: str) -> str:
    for block in blocks:
        for element in [*(block.get("elements") or []), block.get("accessory") or {}]:
            if element.get("action_id") == action_id:
                return str(element["value"])
    raise AssertionError(f"no {action_id} button in {blocks}")


def texts(call_params: dict[str, Any]) -> str:
    """All the text of a message: fallback plus every block's text."""
    out = [call_params.get("text") or ""]
    for block in call_params.get("blocks") or []:
        text = block.get("text")
        if isinstance(text, dict):
            out.append(text.get("text", ""))
        for f in block.get("fields") or []:
            out.append(f.get("text", ""))
        for e in block.get("elements") or []:
            if isinstance(e.get("text"), str):
                out.append(e["text"])
            elif isinstance(e.get("text"), dict):
                out.append(e["text"].get("text", ""))
    return "\n".join(out)


MakeSlack = Callable[..., Awaitable[Slack]]


@pytest.fixture
async def make_slack(catalog_dir: Path, tmp_path: Path) -> AsyncIterator[MakeSlack]:
    """make_slack(catalog_text=None, update_interval=0.2, update_spacing=0, double=None) → a running app and
    its Web API double (a second app on the same database may share the first's double)."""
    started: list[tuple[SlackService, SlackDouble, aiohttp.ClientSession, TaskStore]] = []

    async def make(catalog_text: str | None = None, *, update_interval: float = 0.2,
                   update_spacing: float = 0.0, double: SlackDouble | None = None) -> Slack:
        if catalog_text is not None:
            (catalog_dir / "layerbot.yml").write_text(catalog_text)
        catalog = load_catalog(catalog_dir / "layerbot.yml")
        # keep composites in the test's directory (the defaults are relative to the cwd)
        catalog.runner.cache_dir = catalog_dir / ".layerbot" / "cache"
        catalog.runner.work_dir = catalog_dir / ".layerbot" / "work"
        double = double or await SlackDouble().start()
        store = TaskStore(tmp_path / "slack.db")
        settings = SlackSettings(bot_token=BOT_TOKEN, signing_secret=SECRET,
                                 api_url=double.api_url)
        service = SlackService(settings, catalog, store, update_interval=update_interval,
                               update_spacing=update_spacing, runner_poll=0.05)
        service.notifier.poll_interval = 0.05
        await service.start("127.0.0.1", 0)
        session = aiohttp.ClientSession()
        started.append((service, double, session, store))
        return Slack(service, double, session, store)

    yield make
    for service, double, session, store in reversed(started):
        await session.close()
        await service.close()
        await double.close()
        store.close()
