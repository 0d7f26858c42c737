"""The task lines of `/publish status`, `status TEMPLATE` and App Home show the step and the
overall progress the task message shows — never lower than before, nothing for a queued task —
and `status TASK` counts the steps as its events do (issue 16 items 2 and 9)."""

from __future__ import annotations

import re

from bot.store import states
from bot.store.states import EventKind
from tests.slack.conftest import ALICE, MakeSlack, Slack, texts
from tests.slack.test_slack_task_times import ELSEWHERE
from tests.slack.test_slack_tasks import start


async def status(slack: Slack, word: str) -> str:
    return texts(await slack.answer(await slack.command(f"status {word}", user=ALICE)))


async def home(slack: Slack) -> str:
    before = len(slack.double.of("views.publish"))
    await slack.event({"type": "app_home_opened", "user": ALICE, "channel": "DALICE", "tab": "home"})
    calls = await slack.double.wait_for(lambda: slack.double.of("views.publish")[before:])
    return texts(calls[0].params["view"])


def line_of(shown: str, task_id: str) -> str:
    [line] = {line for line in shown.splitlines() if f"`{task_id}`" in line}  # fallback = block
    return line


async def lines(slack: Slack, task_id: str) -> list[str]:
    """The task's line in `status all`, `status TEMPLATE` and App Home."""
    return [line_of(await status(slack, "all"), task_id),
            line_of(await status(slack, "win10-office"), task_id),
            line_of(await home(slack), task_id)]


def percent(line: str) -> int:
    [found] = re.findall(r"\u00b7 (\d+)%", line)
    return int(found)


async def test_list_lines_show_the_step_and_overall_progress_never_lower(make_slack: MakeSlack) -> None:
    slack = await make_slack(ELSEWHERE)
    task = await start(slack)
    for line in await lines(slack, task.id):
        assert "Queued" in line and "queued" not in line and "%" not in line, line

    store = slack.store
    store.update(task.id, None, status=states.COMPOSITING, stage="compositing", progress=0.0,
                 event=(EventKind.STAGE, "Compositing 3 layers"), data={"step": 1, "steps": 3})
    store.update(task.id, None, progress=92.0, event=(EventKind.PROGRESS, "compositing: 92%"),
                 data={"percent": 92.0})
    composing = await lines(slack, task.id)
    for line in composing:
        assert "Step 1 of 3 \u00b7 Compositing 3 layers \u00b7 31%" in line, line  # 0.92 / 3
    store.update(task.id, None, status=states.UPLOADING, stage="uploading", progress=0.0,
                 event=(EventKind.STAGE, "Uploading to Local folder"), data={"step": 2, "steps": 3})
    store.update(task.id, None, progress=21.0, event=(EventKind.PROGRESS, "uploading: 21%"),
                 data={"percent": 21.0})
    uploading = await lines(slack, task.id)
    for before, line in zip(composing, uploading, strict=True):
        assert "Step 2 of 3 \u00b7 Uploading to Local folder \u00b7 40%" in line, line  # 1.21 / 3
        assert percent(line) >= percent(before) and "uploading 21%" not in line, line

    detail = await status(slack, task.id)
    assert "Step 2 of 3 \u00b7 Uploading to Local folder" in detail and "Step 2 of 2" not in detail
    assert "` 40%" in detail, detail  # the task message's bar, not the stage's 21 %
    store.update(task.id, None, status=states.CANCELLED)  # let the app close at once
