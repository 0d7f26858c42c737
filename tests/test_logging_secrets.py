"""No secret in any output: distinctive values in the variables the configuration names (Slack's
token and signing secret, a Nutanix connector's user_env/password_env), ``serve`` answering Slack
and working a task, ``publish`` queuing and ``worker`` working one, all at DEBUG in both formats;
then every byte they wrote is searched: stdout, stderr, the database files, the task events."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.store import states
from bot.store.task_store import TaskStore
from tests.nutanix.conftest import PASSWORD, USER, prism, prism_ca  # noqa: F401 (fixtures)
from tests.nutanix.prism_double import PrismDouble
from tests.nutanix.test_nutanix_runner import with_nutanix
from tests.slack.conftest import sign
from tests.slack.slack_double import SlackDouble
from tests.slack.test_slack_serve import free_port

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[1]
SLACK_TOKEN = "xoxb-LEAKCHECK-bot-7f3a9c1e2d"
SIGNING_SECRET = "LEAKCHECK-signing-5b8e2f0a91c4"
SECRETS = (SLACK_TOKEN, SIGNING_SECRET, PASSWORD,
           base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode())  # HTTP Basic auth


class Layerbot:
    def __init__(self, catalog: Path, db: Path, log_format: str) -> None:
        self.catalog, self.db, self.log_format = catalog, db, log_format
        self.outputs: list[bytes] = []
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("LAYERBOT_LOG_", "SLACK_APP_TOKEN"))}

    async def start(self, *args: str, **env: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.cli.commands", "--config", str(self.catalog), "--db",
            str(self.db), "--log-level", "debug", "--log-format", self.log_format, *args,
            cwd=ROOT, env={**self.env, **env}, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)

    async def finish(self, proc: asyncio.subprocess.Process) -> int:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 120)
        self.outputs += [stdout, stderr]
        assert proc.returncode is not None
        return proc.returncode

    async def queue(self) -> str:
        assert await self.finish(await self.start("publish", "win10-office", "--yes", "--no-run")) == 0
        store = TaskStore(self.db)
        try:
            return store.list_tasks()[0].id  # newest first
        finally:
            store.close()

    async def run_until_published(self, task_id: str, *args: str, **env: str) -> None:
        """Run ``args`` until the task waits for its guest (compose and upload done); then
        SIGTERM, a clean stop."""
        proc = await self.start(*args, **env)
        store = TaskStore(self.db)
        try:
            deadline = time.monotonic() + 120
            while (task := store.get(task_id)).status != states.ACTION_REQUIRED:
                assert not task.finished, task.error
                assert proc.returncode is None and time.monotonic() < deadline, args
                await asyncio.sleep(0.1)
        finally:
            store.close()
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        assert await self.finish(proc) == 0

    def written(self) -> list[tuple[str, bytes]]:
        """Every output, every database file, every task's fields and events."""
        found = [(f"output {i}", out) for i, out in enumerate(self.outputs)]
        found += [(p.name, p.read_bytes()) for p in self.db.parent.glob(self.db.name + "*")]
        store = TaskStore(self.db)
        try:
            for task in store.list_tasks():
                found.append((f"task {task.id}", repr(task).encode()))
                for event in store.events(task.id):
                    text = event.message + json.dumps(event.data, default=str)
                    found.append((f"event {event.id} of {task.id}", text.encode()))
        finally:
            store.close()
        return found


async def slack_asks(base: str, double: SlackDouble) -> None:
    """A slash command (answered on its response_url) and App Home (views.publish, with the
    token): the Slack client's requests as DEBUG records."""
    async with aiohttp.ClientSession() as session:
        for _ in range(600):
            try:
                async with session.get(base + "/healthz") as resp:
                    if resp.status == 200:
                        break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
        requests = [
            ("command=%2Fpublish&text=help&user_id=UALICE&channel_id=COPS&team_id=T0001"
             f"&trigger_id=t&response_url={double.new_response_url()}",
             "application/x-www-form-urlencoded"),
            (json.dumps({"token": "legacy", "team_id": "T0001", "api_app_id": "A0001",
                         "type": "event_callback", "event_id": "Ev1", "event_time": int(time.time()),
                         "event": {"type": "app_home_opened", "user": "UALICE", "tab": "home"}}),
             "application/json"),
        ]
        for body, content_type in requests:
            headers = {"Content-Type": content_type, **sign(body, SIGNING_SECRET)}
            async with session.post(base + "/slack/events", data=body, headers=headers) as resp:
                assert resp.status == 200, await resp.text()
    await double.wait_for(lambda: double.of("response_url") and double.of("views.publish"))
    assert double.of("views.publish")[0].params["_token"] == SLACK_TOKEN


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_no_secret_in_any_output(log_format: str, prism: PrismDouble,  # noqa: F811
                                       prism_ca: Any, write_catalog: Any,  # noqa: F811
                                       tmp_path: Path) -> None:
    catalog = write_catalog(with_nutanix(prism, prism_ca[1]))
    layerbot = Layerbot(catalog, tmp_path / "layerbot.db", log_format)
    double = await SlackDouble().start()
    try:
        served = await layerbot.queue()
        port = free_port()
        asking = asyncio.create_task(slack_asks(f"http://127.0.0.1:{port}", double))
        await layerbot.run_until_published(
            served, "serve", "--host", "127.0.0.1", "--port", str(port),
            SLACK_BOT_TOKEN=SLACK_TOKEN, SLACK_SIGNING_SECRET=SIGNING_SECRET,
            SLACK_API_URL=double.api_url)
        await asyncio.wait_for(asking, 60)
    finally:
        await double.close()
    worked = await layerbot.queue()
    await layerbot.run_until_published(worked, "worker")

    written = layerbot.written()
    logs = b"\n".join(layerbot.outputs).decode()
    assert f"claimed {served}" in logs and f"claimed {worked}" in logs  # DEBUG/INFO came out
    assert "views.publish" in logs or "views_publish" in logs  # the Slack client's requests too
    leaks = [(where, secret) for where, data in written for secret in SECRETS
             if secret.encode() in data]
    assert leaks == []
