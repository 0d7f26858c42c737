"""The planner's process ends with serve: when serve is killed, when it stops while a plan
runs, when its start fails; a planning error the parent cannot unpickle still reaches the user."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import adapters
from bot.catalog import load_catalog
from bot.runner.planner import Planner, UnexpectedPlanError
from bot.slack import service as slack_service
from bot.slack.service import SlackService, SlackSettings
from bot.store.task_store import TaskStore
from tests.conftest import BASIC_CATALOG
from tests.slack.conftest import BOT_TOKEN, SECRET, MakeSlack, texts
from tests.slack.planning_adapter import with_planning_connector
from tests.slack.slack_double import SlackDouble

ROOT = Path(__file__).resolve().parents[2]
adapters.register("planning-test", "tests.slack.planning_adapter")

#: Starts a planner, prints its child's pid and waits to be killed.
PARENT = """\
import asyncio, sys
from pathlib import Path
from bot.catalog import load_catalog
from bot.runner.planner import Planner

async def main() -> None:
    planner = Planner(load_catalog(Path(sys.argv[1])))
    await planner.start()
    print(*planner._pool._processes, flush=True)
    await asyncio.sleep(120)

asyncio.run(main())
"""


def gone(pid: int) -> bool:
    """Exited: no such process, or a zombie its new parent has not reaped."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return status.rsplit(")", 1)[1].split()[0] == "Z"


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def child_pids(planner: Planner) -> list[int]:
    assert planner._pool is not None
    return list(planner._pool._processes)  # type: ignore[attr-defined]


@pytest.mark.timeout(60)
def test_the_planner_process_dies_with_a_killed_parent(catalog_dir: Path) -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(catalog_dir / "layerbot.yml")],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    child = 0
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert not gone(child)
        parent.kill()
        parent.wait(10)
        assert wait_gone(child, 10), "the planner process outlived its killed parent"
    finally:
        parent.kill()
        parent.wait(10)
        assert parent.stdout is not None
        parent.stdout.close()
        if child and not gone(child):
            os.kill(child, signal.SIGKILL)


@pytest.mark.timeout(60)
async def test_close_does_not_wait_for_a_running_plan(catalog_dir: Path) -> None:
    (catalog_dir / "layerbot.yml").write_text(with_planning_connector(BASIC_CATALOG, seconds=30))
    planner = Planner(load_catalog(catalog_dir / "layerbot.yml"))
    await planner.start()
    [child] = child_pids(planner)
    planning = asyncio.ensure_future(planner.plans(["win10-office"], check_cache=False))
    await asyncio.sleep(0.5)  # the child is in the plan's sleep
    started = time.monotonic()
    await asyncio.wait_for(planner.close(), 20)
    assert time.monotonic() - started < 10
    assert await asyncio.to_thread(wait_gone, child, 5)
    with pytest.raises(Exception):  # noqa: B017 (the pool's error for a terminated child)
        await planning


@pytest.mark.timeout(60)
async def test_a_failed_start_stops_the_planner_process(catalog_dir: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slack_service, "tune_process", lambda loop: None)  # process-wide settings
    double = await SlackDouble().start()
    store = TaskStore(tmp_path / "db")
    settings = SlackSettings(bot_token=BOT_TOKEN, signing_secret=SECRET, api_url=double.api_url)
    service = SlackService(settings, load_catalog(catalog_dir / "layerbot.yml"), store)
    children: list[int] = []
    start = service.planner.start

    async def start_and_remember() -> None:
        await start()
        children.extend(child_pids(service.planner))

    monkeypatch.setattr(service.planner, "start", start_and_remember)
    taken = socket.socket()
    try:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError):
            await slack_service.serve_forever(service, "127.0.0.1", taken.getsockname()[1])
        [child] = children
        assert service.planner._pool is None
        assert await asyncio.to_thread(wait_gone, child, 5)
    finally:
        taken.close()
        await service.close()
        await double.close()
        store.close()


@pytest.mark.timeout(120)
async def test_an_error_the_parent_cannot_unpickle_reaches_the_log_under_a_reference(
        make_slack: MakeSlack, caplog: pytest.LogCaptureFixture) -> None:
    slack = await make_slack(with_planning_connector(BASIC_CATALOG, odd=True))
    planner = slack.service.planner
    [child] = child_pids(planner)
    with caplog.at_level(logging.ERROR, logger="bot.slack.handlers"):
        answer = await slack.answer(await slack.command("win10-office"))
    # the user gets a reference, the admin the error under it (issue 16: no exception text)
    match = re.search(r"reference `([0-9a-f]{6})`", texts(answer))
    assert match, texts(answer)
    assert "OddError" not in texts(answer) and "died" not in texts(answer)
    logged = [r for r in caplog.records if match.group(1) in r.getMessage()]
    assert logged and "OddError: hv1.example answered 503" in str(logged[0].exc_info[1])
    with pytest.raises(UnexpectedPlanError, match=r"OddError: hv1\.example answered 503"):
        await planner.plans(["win10-office"], check_cache=False)
    assert child_pids(planner) == [child]  # the same pool and process: not marked broken
