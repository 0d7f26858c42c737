"""/publish → confirm card → Publish Layered Images → task message and thread → Done,
through the real app, the job runner and the local-folder target."""

from __future__ import annotations

import re

from bot import messages
from bot.store import states
from tests.conftest import BASIC_CATALOG
from tests.slack.conftest import ALICE, CHANNEL, MakeSlack, button_value, texts
from tests.slack.test_slack_tasks import task_message_now


async def test_publish_confirm_and_follow_to_done(make_slack: MakeSlack) -> None:
    slack = await make_slack()
    card = await slack.answer(await slack.command("win10-office"))
    assert card["response_type"] == "ephemeral"
    shown = texts(card)
    for expected in ("Review and publish", ":computer:", "Windows 10 with Office", "base-os",
                     "office", "vda", "folder (Local folder)", "1 GiB ext4, qcow2", "setup.sh",
                     "no, the layers are composited"):
        assert expected in shown, expected
    intent = button_value(card["blocks"], "intent_confirm")
    assert intent.startswith("i") and len(intent) < 40  # an id, not the payload
    assert slack.store.list_tasks() == []  # nothing starts before the click

    replaced = await slack.answer(await slack.click("intent_confirm", intent))
    assert replaced["replace_original"] is True
    assert replaced["text"] == f"Publishing 1 layered image \u2014 requested by <@{ALICE}>"

    [task] = slack.store.list_tasks()
    assert task.idempotency_key == f"{intent}:win10-office"
    task = await slack.task_done(task.id)
    assert task.status == states.DONE, task.error

    double = slack.double
    parent = await double.wait_for(lambda: double.of("chat.postMessage", channel=CHANNEL,
                                                     thread_ts=None))
    assert messages.task_header("win10-office") in texts(parent[0].params)
    assert parent[0].params["_token"].startswith("xoxb-")
    ts = await double.wait_for(lambda: slack.store.get(task.id).message_ts)
    assert slack.store.get(task.id).thread_ts == ts

    def replies() -> list[str]:
        return [texts(c.params) for c in double.of("chat.postMessage", thread_ts=ts)]

    await double.wait_for(lambda: any("*Done*" in r for r in replies()))
    thread = replies()
    assert len(thread) == 2, thread
    # a folder's file:// link opens nothing in Slack: the reply names the file, the next step
    # the folder
    assert "Disk created" in thread[0] and task.link and task.link not in thread[0]
    assert task.link.removeprefix("file://") in thread[0]
    assert "Next:" in thread[0] and "Copy it to your platform" in thread[0]
    assert "local user" not in thread[0]  # a file in a folder: no guest is logged into
    assert re.search(r"\*Done\* \u00b7 win10-office \u00b7 in \d+ s", thread[1]), thread[1]
    # Done is on the task message; nothing of a success is sent to the channel again
    assert all(not c.params.get("reply_broadcast") for c in double.of(
        "chat.postMessage", thread_ts=ts))

    # the task message ends as Done, without a Cancel button
    await double.wait_for(lambda: "Done" in task_message_now(slack, task.id))
    final = task_message_now(slack, task.id)
    assert "Cancel" not in final and "%" not in final and "took" in final


PLAIN_OS = """\
  plain-os:
    description: Only the OS
    os_layer: base-os
    connector: folder
    disk: {size_gib: 1}
"""


async def test_two_templates_start_two_tasks(make_slack: MakeSlack) -> None:
    slack = await make_slack(BASIC_CATALOG.replace("runner:\n", PLAIN_OS + "runner:\n"))
    intent = await slack.card("win10-office plain-os")
    await slack.answer(await slack.click("intent_confirm", intent))
    tasks = slack.store.list_tasks()
    assert sorted(t.template for t in tasks) == ["plain-os", "win10-office"]
    for t in tasks:
        assert (await slack.task_done(t.id)).status == states.DONE
    await slack.double.wait_for(lambda: len([c for c in slack.double.of("chat.postMessage")
                                             if "*Done*" in texts(c.params)]) == 2)


async def test_task_messages_go_to_the_connectors_notify_channel(make_slack: MakeSlack) -> None:
    text = BASIC_CATALOG.replace("    format: qcow2\n", "    format: qcow2\n    notify_channel: CNOTIFY\n")
    slack = await make_slack(text)
    intent = await slack.card("win10-office")
    await slack.answer(await slack.click("intent_confirm", intent))
    [task] = slack.store.list_tasks()
    assert task.channel == "CNOTIFY"
    await slack.task_done(task.id)
    await slack.double.wait_for(lambda: any("*Done*" in texts(c.params) for c in
                                            slack.double.of("chat.postMessage", channel="CNOTIFY")))


async def test_a_channel_the_bot_cannot_post_in_falls_back_to_a_dm(make_slack: MakeSlack) -> None:
    slack = await make_slack()
    slack.double.missing_channels.add(CHANNEL)
    intent = await slack.card("win10-office")
    await slack.answer(await slack.click("intent_confirm", intent))
    [task] = slack.store.list_tasks()
    await slack.task_done(task.id)
    await slack.double.wait_for(lambda: slack.store.get(task.id).channel == "DALICE")
    await slack.double.wait_for(lambda: any("*Done*" in texts(c.params) for c in
                                            slack.double.of("chat.postMessage", channel="DALICE")))


async def test_answers_on_response_urls_share_one_connection(make_slack: MakeSlack) -> None:
    """bolt's respond opened a connection (at Slack, a TLS handshake) per message."""
    slack = await make_slack()
    for _ in range(3):
        await slack.answer(await slack.command("help"))
    assert len(slack.double.response_peers) == 3
    assert len(set(slack.double.response_peers)) == 1, slack.double.response_peers
