"""The task message's thread is quiet: one channel post per successful task, the disk's link,
next step and (on a VM target only) the local-user hint in one reply, and only failures and
*Action required* broadcast to the channel."""

from __future__ import annotations

from pathlib import Path

import adapters
from adapters.base import guest_login
from bot.store import states
from tests.conftest import BASIC_CATALOG
from tests.slack.conftest import MakeSlack, Slack
from tests.slack.test_slack_tasks import task_message_now, thread_of

TWO_MORE = """\
  plain-os:
    description: Only the OS
    os_layer: base-os
    connector: folder
    disk: {size_gib: 1}
  os-office:
    os_layer: base-os
    app_layers: [office]
    connector: folder
    disk: {size_gib: 1}
"""


def channel_posts(slack: Slack, task_id: str) -> int:
    """The task message plus every thread reply also sent to the channel."""
    ts = slack.store.get(task_id).message_ts
    parents = [c for c in slack.double.of("chat.postMessage") if c.params.get("thread_ts") is None
               and c.params.get("text") and task_id in str(c.params.get("blocks"))]
    broadcast = slack.double.of("chat.postMessage", thread_ts=ts, reply_broadcast=True)
    return len(parents) + len(broadcast)


async def publish_and_count(slack: Slack, names: str) -> list[tuple[int, int]]:
    intent = await slack.card(names)
    await slack.answer(await slack.click("intent_confirm", intent))
    counts = []
    for task in slack.store.list_tasks():
        assert (await slack.task_done(task.id)).status == states.DONE
        await slack.double.wait_for(lambda t=task: "Done" in task_message_now(slack, t.id)
                                    and any("Done" in r for r in thread_of(slack, t.id)))
        await slack.idle()
        counts.append((channel_posts(slack, task.id), len(thread_of(slack, task.id))))
    return counts


async def test_a_folder_publish_posts_once_to_the_channel(make_slack: MakeSlack) -> None:
    slack = await make_slack()
    counts = await publish_and_count(slack, "win10-office")
    print("one template: (channel posts, thread replies) per task", counts)
    assert counts == [(1, 2)]


async def test_three_templates_post_three_times_to_the_channel(make_slack: MakeSlack) -> None:
    slack = await make_slack(BASIC_CATALOG.replace("runner:\n", TWO_MORE + "runner:\n"))
    counts = await publish_and_count(slack, "win10-office plain-os os-office")
    print("three templates: (channel posts, thread replies) per task", counts)
    assert counts == [(1, 2)] * 3


def test_the_hint_goes_only_where_a_guest_is_logged_into() -> None:
    assert not guest_login(adapters.adapter_class("local").capabilities)
    assert guest_login(adapters.adapter_class("qemu").capabilities)
    assert guest_login(adapters.adapter_class("fake").capabilities)


async def test_a_folder_publish_names_its_file_once_in_words_and_no_dead_link(
        make_slack: MakeSlack) -> None:
    """The disk reply of a folder target: the summary (file name, format, size), then the next
    step naming the folder once; no file:// link, which opens nothing in Slack."""
    slack = await make_slack()
    await publish_and_count(slack, "win10-office")
    [task] = slack.store.list_tasks()
    [reply] = [r for r in thread_of(slack, task.id) if "Disk created" in r]
    folder = str(Path(slack.store.get(task.id).link.removeprefix("file://")).parent)
    assert reply.count(folder) == reply.count("Disk created"), reply  # once per rendering (text, blocks)
    assert "file://" not in reply and f"{task.id}.qcow2 (qcow2, " in reply
