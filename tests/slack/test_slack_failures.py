"""A failure reads as a sentence the requester can act on, @mentions them and goes to the
channel; it never shows a Python exception or a temporary file name. An unexpected error
carries a short reference the admin finds in the log, with its traceback."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from bot.store import states
from tests.fake_adapter import with_fake
from tests.slack.conftest import ALICE, MakeSlack, Slack, texts
from tests.slack.test_slack_tasks import start, task_message_now, thread_of

PYTHON = re.compile(r"\b[A-Z]\w*(Error|Exception)\b|Traceback|internal error|\.partial\b")


def everything_said(slack: Slack) -> list[str]:
    return [texts(c.params) for c in slack.double.calls
            if c.method in ("chat.postMessage", "chat.update", "response_url")]


async def failed_reply(slack: Slack, task_id: str) -> str:
    assert (await slack.task_done(task_id)).status == states.FAILED
    await slack.double.wait_for(lambda: any("*Failed*" in t for t in thread_of(slack, task_id)))
    await slack.double.wait_for(lambda: "*Failed*" in task_message_now(slack, task_id))
    return next(t for t in thread_of(slack, task_id) if "*Failed*" in t)


async def test_an_unwritable_folder_fails_in_words(make_slack: MakeSlack, catalog_dir: Path) -> None:
    slack = await make_slack()
    (catalog_dir / "published").mkdir()
    (catalog_dir / "published" / "win10-office").write_text("a file where the folder goes\n")
    task = await start(slack)
    reply = await failed_reply(slack, task.id)
    assert f"<@{ALICE}>" in reply and "Not a directory" in reply, reply
    assert str(catalog_dir / "published") in reply, reply
    broadcast = slack.double.of("chat.postMessage", reply_broadcast=True)
    assert [c for c in broadcast if "*Failed*" in texts(c.params)]
    said = everything_said(slack)
    assert not [m for m in said if PYTHON.search(m)], [PYTHON.search(m) for m in said]


async def test_an_unexpected_error_gets_a_reference_found_in_the_log(
        make_slack: MakeSlack, caplog: pytest.LogCaptureFixture) -> None:
    slack = await make_slack(with_fake("crash_upload: true"))
    with caplog.at_level(logging.ERROR, logger="bot.runner"):
        task = await start(slack)
        reply = await failed_reply(slack, task.id)
    found = re.search(r"reference `(\w+)`", reply)
    assert found and f"<@{ALICE}>" in reply, reply
    said = everything_said(slack)
    assert not [m for m in said if PYTHON.search(m) or "vm_uuid" in m], said
    logged = [r for r in caplog.records if found.group(1) in r.getMessage()]
    assert logged and logged[0].exc_info and "vm_uuid" in str(logged[0].exc_info[1])
