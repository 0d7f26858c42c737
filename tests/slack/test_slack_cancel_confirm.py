"""Cancel on a shared task message asks first, and the channel learns who cancelled."""

from __future__ import annotations

from bot.store import states
from tests.fake_adapter import with_fake
from tests.slack.conftest import BOB, MakeSlack
from tests.slack.test_slack_tasks import start, task_message_now, thread_of


def cancel_button(blocks: list[dict]) -> dict:
    [button] = [e for b in blocks for e in b.get("elements") or []
                if e.get("action_id") == "task_cancel"]
    return button


async def test_cancel_asks_first_and_tells_who_cancelled(make_slack: MakeSlack) -> None:
    slack = await make_slack(with_fake("block_upload: true"))
    task = await start(slack)
    posted = await slack.double.wait_for(lambda: [
        c for c in slack.double.of("chat.postMessage", thread_ts=None) if task.id in str(c.params)])
    confirm = cancel_button(posted[0].params["blocks"])["confirm"]
    assert confirm["title"]["text"] == "Cancel this task?"
    assert "win10-office" in confirm["text"]["text"]
    assert confirm["confirm"]["text"] == "Cancel the task"
    assert confirm["deny"]["text"] == "Keep it running"
    assert confirm["style"] == "danger"

    await slack.answer(await slack.click("task_cancel", task.id, user=BOB))
    assert (await slack.task_done(task.id)).status == states.CANCELLED
    await slack.double.wait_for(lambda: any("*Cancelled*" in t for t in thread_of(slack, task.id)))
    assert f"Cancelled by <@{BOB}>" in thread_of(slack, task.id)[-1]
    await slack.double.wait_for(lambda: f"Cancelled by <@{BOB}>" in task_message_now(slack, task.id))
