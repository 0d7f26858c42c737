"""The task message shows when the task started and how long it took (Slack's ``<!date^…>``),
its step, and one overall progress bar that only moves forward; a finished task's message
has no percentage and its header does not say it is still publishing."""

from __future__ import annotations

import re
from pathlib import Path

from bot.store import states
from bot.store.states import EventKind
from tests.conftest import BASIC_CATALOG
from tests.fake_adapter import with_fake
from tests.slack.conftest import MakeSlack, Slack, texts
from tests.slack.test_slack_tasks import start, task_message_now, updates_of

#: No runner of the test app takes this connector's tasks: the test plays the runner.
ELSEWHERE = BASIC_CATALOG.replace("    format: qcow2\n",
                                  "    format: qcow2\n    runner_tags: [elsewhere]\n")


def percents(slack: Slack, task_id: str) -> list[int]:
    shown = [texts(c.params) for c in slack.double.of("chat.postMessage", thread_ts=None)
             if task_id in texts(c.params)] + updates_of(slack, task_id)
    return [int(p) for m in shown for p in re.findall(r"` (\d+)%", m)]


async def test_progress_only_moves_forward_across_stages(make_slack: MakeSlack) -> None:
    slack = await make_slack(ELSEWHERE)
    task = await start(slack)
    await slack.double.wait_for(lambda: slack.store.get(task.id).message_ts)
    store = slack.store

    async def runner_writes(shown: str, **fields: object) -> None:
        edits = len(updates_of(slack, task.id))
        store.update(task.id, None, **fields)
        await slack.double.wait_for(lambda: len(updates_of(slack, task.id)) > edits)
        assert shown in task_message_now(slack, task.id)

    store.update(task.id, None, status=states.COMPOSITING, stage="compositing", progress=0.0,
                 event=(EventKind.STAGE, "Compositing 3 layers"), data={"step": 1, "steps": 2})
    await runner_writes("Step 1 of 2 \u00b7 Compositing 3 layers", progress=92.0,
                        event=(EventKind.PROGRESS, "compositing: 92%"), data={"percent": 92.0})
    store.update(task.id, None, status=states.UPLOADING, stage="uploading", progress=0.0,
                 event=(EventKind.STAGE, "Uploading to Local folder"), data={"step": 2, "steps": 2})
    await runner_writes("Step 2 of 2 \u00b7 Uploading to Local folder", progress=21.0,
                        event=(EventKind.PROGRESS, "uploading: 21%"), data={"percent": 21.0})
    shown = percents(slack, task.id)
    assert shown == sorted(shown) and shown[-1] == 60, shown  # (1 + 0.21) / 2
    # a resumed task composites again (a cache hit): the bar stays where it was
    store.update(task.id, None, status=states.COMPOSITING, stage="compositing", progress=5.0,
                 event=(EventKind.STAGE, "Compositing 3 layers"), data={"step": 1, "steps": 2})
    await slack.double.wait_for(lambda: "Step 1 of 2" in task_message_now(slack, task.id))
    shown = percents(slack, task.id)
    assert shown == sorted(shown), shown
    store.update(task.id, None, status=states.CANCELLED)  # let the app close at once


async def test_the_task_message_is_timed_and_names_its_step(make_slack: MakeSlack,
                                                            catalog_dir: Path) -> None:
    slack = await make_slack(with_fake("upload_seconds: 1.5"))
    task = await start(slack)
    working = await slack.double.wait_for(
        lambda: "Step 2 of 3 \u00b7 Uploading to Fake hypervisor" in (m := task_message_now(
            slack, task.id)) and m)
    assert "Queued \u00b7 queued" not in working
    assert re.search(r"Started <!date\^\d+\^\{date_short_pretty\} at \{time\}\|[^>]+> \u00b7 \d+ s so far",
                     working), working
    waiting = await slack.double.wait_for(
        lambda: "Step 3 of 3" in (m := task_message_now(slack, task.id)) and m)
    assert "*Action required*" in waiting
    Path(f"{next((catalog_dir / 'vms').glob('*.vm'))}.off").touch()  # the guest powers off
    assert (await slack.task_done(task.id)).status == states.DONE
    final = await slack.double.wait_for(
        lambda: "*Done*" in (m := task_message_now(slack, task.id)) and m)
    assert "Publishing" not in final and "%" not in final, final
    assert re.search(r"Started <!date\^\d+\^[^|]+\|[^>]+> \u00b7 took \d+ s", final), final
    posted = slack.double.of("chat.update", ts=slack.store.get(task.id).message_ts)[-1].params
    assert posted["text"] == "Layered image \u00b7 win10-office: Done"
