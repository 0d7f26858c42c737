"""What a cleanup removed (or could not) reaches Slack in words: never the partial copy's
path nor the platform's exception text, which stay in the events the CLI shows and in the log."""

from __future__ import annotations

import errno
import logging
import re
import threading
from pathlib import Path
from typing import Any

import pytest

import adapters.local
from bot.store import states
from tests.fake_adapter import with_fake
from tests.slack.conftest import MakeSlack, texts
from tests.slack.test_slack_failures import PYTHON, everything_said, failed_reply
from tests.slack.test_slack_tasks import start


def _copy_fails_midway(*args: Any) -> None:
    locked = args[1]
    assert Path(locked.path).exists()  # the .partial is there when the copy fails
    raise OSError(errno.EIO, "Input/output error")


async def test_a_copy_failing_after_the_partial_exists_says_so_without_paths(
        make_slack: MakeSlack, catalog_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(adapters.local, "_copy", _copy_fails_midway)
    slack = await make_slack()
    task = await start(slack)
    reply = await failed_reply(slack, task.id)
    assert "the partial upload was removed" in reply, reply
    events = slack.store.events(task.id)
    assert any(".partial" in e.message for e in events)  # the CLI still has the details
    status = texts(await slack.answer(await slack.command(f"status {task.id}")))
    assert "the partial upload was removed" in status, status
    said = everything_said(slack)
    assert not [m for m in said if PYTHON.search(m)], [PYTHON.search(m) for m in said]
    assert not [m for m in said if "Cleaned up" in m or "cleaned up: file" in m], said


def _copy_waits_for_cancel(*args: Any) -> None:
    stop: threading.Event = args[-1]
    stop.wait(60)
    raise adapters.local._Stopped


async def test_a_copy_cancelled_midway_says_so_without_paths(
        make_slack: MakeSlack, catalog_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(adapters.local, "_copy", _copy_waits_for_cancel)
    slack = await make_slack()
    task = await start(slack)
    await slack.double.wait_for(lambda: list((catalog_dir / "published").rglob("*.partial")))
    await slack.answer(await slack.click("task_cancel", task.id))
    assert (await slack.task_done(task.id)).status == states.CANCELLED
    await slack.double.wait_for(lambda: any("*Cancelled*" in t for t in everything_said(slack)))
    status = texts(await slack.answer(await slack.command(f"status {task.id}")))
    assert "the partial upload was removed" in status, status
    said = everything_said(slack)
    assert not [m for m in said if PYTHON.search(m)], [PYTHON.search(m) for m in said]


async def test_a_connector_failing_unexpectedly_shows_a_reference_not_the_exception(
        make_slack: MakeSlack, caplog: pytest.LogCaptureFixture) -> None:
    slack = await make_slack(with_fake("broken: true"))
    with caplog.at_level(logging.ERROR, logger="bot.slack"):
        answer = texts(await slack.answer(await slack.command("win10-office")))
    found = re.search(r"reference `(\w+)`", answer)
    assert found and "cannot load the CA certificate" not in answer, answer
    logged = [r for r in caplog.records if found.group(1) in r.getMessage()]
    assert logged and "cannot load the CA certificate" in str(logged[0].exc_info[1])
