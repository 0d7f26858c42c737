"""Retry edits the failed task's message to link to the retry, the retry's message links back,
and a second Retry click on the same task says where the retry is."""

from __future__ import annotations

from bot.store import states
from bot.store.model import Task
from tests.fake_adapter import with_fake
from tests.slack.conftest import ALICE, BOB, CHANNEL, MakeSlack, Slack, button_value
from tests.slack.test_slack_tasks import start, task_message_now


def permalink(channel: str, ts: str) -> str:
    """As the Slack double's chat.getPermalink makes them."""
    return f"https://example.slack.com/archives/{channel}/p{ts.replace('.', '')}"


async def linked_both_ways(slack: Slack, task: Task, retry: Task) -> tuple[Task, str]:
    """Wait until the failed task's message links to its retry and the retry's links back;
    returns the failed task as stored and the retry message's ts."""
    new_ts = await slack.double.wait_for(lambda: slack.store.get(retry.id).message_ts)
    old = slack.store.get(task.id)
    assert old.channel and old.message_ts
    to_new = f"Retried as <{permalink(old.channel, new_ts)}|task `{retry.id}`>"
    to_old = f"Retry of <{permalink(old.channel, old.message_ts)}|task `{task.id}`>"
    await slack.double.wait_for(lambda: to_new in task_message_now(slack, task.id))
    await slack.double.wait_for(lambda: to_old in task_message_now(slack, retry.id))
    return old, str(new_ts)


async def test_retry_links_both_messages_and_a_second_click_says_where(make_slack: MakeSlack) -> None:
    slack = await make_slack(with_fake("fail_upload: true"))
    task = await start(slack)
    assert (await slack.task_done(task.id)).status == states.FAILED
    await slack.double.wait_for(lambda: "Failed" in task_message_now(slack, task.id))

    first = await slack.answer(await slack.click("task_retry", task.id, user=ALICE))
    assert "Retrying task" in first["text"]
    [retry] = [t for t in slack.store.list_tasks() if t.idempotency_key == f"retry:{task.id}"]
    old, new_ts = await linked_both_ways(slack, task, retry)
    edited = slack.double.of("chat.update", ts=old.message_ts)[-1].params
    assert "task_retry" not in str(edited["blocks"])  # retried: no Retry button any more

    again = await slack.answer(await slack.click("task_retry", task.id, user=BOB))
    assert "Retrying" not in again["text"], again["text"]
    assert f"already retried as <{permalink(old.channel, new_ts)}|task `{retry.id}`>" in again["text"]
    assert [t.id for t in slack.store.list_tasks() if t.template == "win10-office"
            and t.id != task.id] == [retry.id]
    await slack.task_done(retry.id)


async def test_a_retry_a_second_person_approved_is_linked_both_ways(make_slack: MakeSlack) -> None:
    slack = await make_slack(with_fake("fail_upload: true\naccess: {approval: second_person}"))
    note = await slack.answer(await slack.command("win10-office", user=ALICE))
    assert "Approval needed" in note["text"], note["text"]
    [card] = await slack.double.wait_for(lambda: slack.double.of("chat.postMessage", channel=CHANNEL))
    await slack.click("intent_confirm", button_value(card.params["blocks"], "intent_confirm"), user=BOB)
    [task] = await slack.double.wait_for(lambda: slack.store.list_tasks())
    assert (await slack.task_done(task.id)).status == states.FAILED
    await slack.double.wait_for(lambda: "Failed" in task_message_now(slack, task.id))

    await slack.answer(await slack.click("task_retry", task.id, user=ALICE))
    retry_card = await slack.double.wait_for(lambda: [
        c for c in slack.double.of("chat.postMessage", channel=CHANNEL)
        if "intent_confirm" in str(c.params.get("blocks"))][1:])
    await slack.click("intent_confirm", button_value(retry_card[0].params["blocks"], "intent_confirm"),
                      user=BOB)
    [retry] = await slack.double.wait_for(lambda: [t for t in slack.store.list_tasks() if t.id != task.id])
    old, new_ts = await linked_both_ways(slack, task, retry)

    again = await slack.answer(await slack.click("task_retry", task.id, user=ALICE))
    assert f"already retried as <{permalink(old.channel, new_ts)}|task `{retry.id}`>" in again["text"], (
        again["text"])
    assert len(slack.store.list_tasks()) == 2
    await slack.task_done(retry.id)
