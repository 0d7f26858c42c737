"""The notifier edits each task message at most once per interval, honours 429
Retry-After, and a restarted app continues the same message and thread."""

from __future__ import annotations

import itertools
from pathlib import Path

from bot.store import states
from tests.fake_adapter import with_fake
from tests.slack.conftest import MakeSlack, Slack, texts
from tests.slack.test_slack_tasks import start, task_message_now, thread_of


def edit_times(slack: Slack, ts: str) -> list[float]:
    return [c.at for c in slack.double.calls if c.method == "chat.update"
            and c.params.get("ts") == ts]


async def finish_watched(slack: Slack, task_id: str, catalog_dir: Path) -> None:
    """Let a fake-hypervisor task reach Action required, then power its guest off."""
    await slack.double.wait_for(lambda: "Action required" in task_message_now(slack, task_id))
    vm = next((catalog_dir / "vms").glob("*.vm"))
    Path(f"{vm}.off").touch()
    assert (await slack.task_done(task_id)).status == states.DONE
    await slack.double.wait_for(lambda: "Done" in task_message_now(slack, task_id), timeout=15)


async def test_edits_are_throttled_to_one_per_three_seconds(make_slack: MakeSlack,
                                                           catalog_dir: Path) -> None:
    slack = await make_slack(with_fake(), update_interval=3.0)
    task = await start(slack)
    await finish_watched(slack, task.id, catalog_dir)
    ts = slack.store.get(task.id).message_ts
    assert ts
    posted = [c.at for c in slack.double.calls if c.method == "chat.postMessage"
              and c.params.get("thread_ts") is None]
    times = posted[:1] + edit_times(slack, ts)
    changes = [e for e in slack.store.events(task.id) if e.kind != "created"]
    assert len(times) >= 3 and len(changes) > len(times)  # edits were coalesced
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 2.9, gaps


async def test_429_from_chat_update_is_retried_after_retry_after(make_slack: MakeSlack,
                                                                 catalog_dir: Path) -> None:
    slack = await make_slack(with_fake(), update_interval=0.2)
    slack.double.rate_limit_updates = 1
    slack.double.retry_after = 1
    task = await start(slack)
    await finish_watched(slack, task.id, catalog_dir)
    limited = [c for c in slack.double.calls if c.method == "chat.update" and c.status == 429]
    assert len(limited) == 1
    after = [c.at for c in slack.double.calls if c.method == "chat.update"
             and c.at > limited[0].at]
    assert after and after[0] - limited[0].at >= 0.95
    assert "*Done*" in task_message_now(slack, task.id)


async def test_a_restarted_app_continues_the_same_message_and_thread(
        make_slack: MakeSlack, catalog_dir: Path) -> None:
    first = await make_slack(with_fake())
    task = await start(first)
    await first.double.wait_for(lambda: first.store.get(task.id).status == states.ACTION_REQUIRED
                                and len(thread_of(first, task.id)) >= 2)
    ts = first.store.get(task.id).message_ts
    await first.service.close()  # the runner lets go of the task; the VM keeps running

    second = await make_slack(double=first.double)
    vm = next((catalog_dir / "vms").glob("*.vm"))
    Path(f"{vm}.off").touch()
    assert (await second.task_done(task.id)).status == states.DONE
    await second.double.wait_for(lambda: any("*Done*" in t for t in thread_of(second, task.id)))
    assert second.store.get(task.id).message_ts == ts
    parents = [c for c in second.double.of("chat.postMessage", thread_ts=None)
               if task.id in texts(c.params)]
    assert len(parents) == 1  # not reposted
    thread = thread_of(second, task.id)
    assert sum("Disk created" in t for t in thread) == 1
    assert sum("*Done*" in t for t in thread) == 1
    await second.double.wait_for(lambda: any("Done" in texts(c.params)
                                             for c in second.double.of("chat.update", ts=ts)))


async def test_edits_of_all_tasks_are_spaced(make_slack: MakeSlack, catalog_dir: Path) -> None:
    second = """\
  plain-os:
    os_layer: base-os
    connector: fake-hv
    disk: {size_gib: 1}
"""
    text = with_fake().replace("runner:\n", second + "runner:\n")
    slack = await make_slack(text, update_interval=0.2, update_spacing=1.0)
    intent = await slack.card("win10-office plain-os")
    await slack.answer(await slack.click("intent_confirm", intent))
    tasks = slack.store.list_tasks()
    for t in tasks:
        await slack.double.wait_for(lambda t=t: "Action required" in task_message_now(slack, t.id))
    edits = [c.at for c in slack.double.calls if c.method == "chat.update"]
    assert len(edits) >= 2
    assert min(b - a for a, b in itertools.pairwise(edits)) >= 0.95
    for vm in (catalog_dir / "vms").glob("*.vm"):
        Path(f"{vm}.off").touch()
    for t in tasks:
        await slack.task_done(t.id)
