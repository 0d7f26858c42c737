"""The task message: status, Cancel while running, Retry after a failure, Action
required while the guest runs its scripts; and the thread."""

from __future__ import annotations

from pathlib import Path

from bot.store import states
from bot.store.task_store import Task
from tests.fake_adapter import with_fake
from tests.slack.conftest import ALICE, BOB, CAROL, MakeSlack, Slack, button_value, texts


async def start(slack: Slack, user: str = ALICE) -> Task:
    intent = await slack.card("win10-office", user=user)
    await slack.answer(await slack.click("intent_confirm", intent, user=user))
    [task] = [t for t in slack.store.list_tasks() if t.idempotency_key == f"{intent}:win10-office"]
    return task


def updates_of(slack: Slack, task_id: str) -> list[str]:
    ts = slack.store.get(task_id).message_ts
    if ts is None:
        return []
    return [texts(c.params) for c in slack.double.of("chat.update", ts=ts) if c.status == 200]


def task_message_now(slack: Slack, task_id: str) -> str:
    """The task message as Slack shows it: the last successful update, else the post."""
    ts = slack.store.get(task_id).message_ts
    posts = [texts(c.params) for c in slack.double.of("chat.postMessage", thread_ts=None)
             if task_id in texts(c.params)]
    return (updates_of(slack, task_id) or posts or [""])[-1] if ts else ""


def thread_of(slack: Slack, task_id: str) -> list[str]:
    ts = slack.store.get(task_id).message_ts
    if ts is None:
        return []
    return [texts(c.params) for c in slack.double.of("chat.postMessage", thread_ts=ts)]


async def test_cancel_button_cancels_and_cleans_up(make_slack: MakeSlack, catalog_dir: Path) -> None:
    slack = await make_slack(with_fake("block_upload: true"))
    task = await start(slack)
    await slack.double.wait_for(lambda: list((catalog_dir / "vms").glob("*.vm"))
                                and slack.store.get(task.id).message_ts)
    await slack.double.wait_for(lambda: "Running" in (m := task_message_now(slack, task.id))
                                and "Cancel" in m)
    posted = slack.double.of("chat.postMessage", thread_ts=None)[-1].params
    assert button_value(posted["blocks"], "task_cancel") == task.id

    answer = await slack.answer(await slack.click("task_cancel", task.id, user=ALICE))
    assert answer["response_type"] == "ephemeral" and "Cancel requested" in answer["text"]
    done = await slack.task_done(task.id)
    assert done.status == states.CANCELLED
    assert not list((catalog_dir / "vms").glob("*.vm"))
    await slack.double.wait_for(lambda: any("*Cancelled*" in t for t in thread_of(slack, task.id)))
    assert "the partial upload was removed" in thread_of(slack, task.id)[-1]
    await slack.double.wait_for(lambda: "Cancelled" in task_message_now(slack, task.id))
    assert "Retry" in task_message_now(slack, task.id)
    events = [e.kind for e in slack.store.events(task.id)]
    assert "cancel_requested" in events


async def test_someone_without_access_cannot_cancel(make_slack: MakeSlack) -> None:
    text = with_fake("block_upload: true").replace(
        "    disk: {size_gib: 1}\n", "    disk: {size_gib: 1}\n    access: {users: [UALICE, UBOB]}\n")
    slack = await make_slack(text)
    task = await start(slack)
    denied = await slack.answer(await slack.click("task_cancel", task.id, user=CAROL))
    assert "You may not cancel" in denied["text"]
    assert not slack.store.get(task.id).cancel_requested
    ok = await slack.answer(await slack.click("task_cancel", task.id, user=BOB))
    assert "Cancel requested" in ok["text"]
    assert (await slack.task_done(task.id)).status == states.CANCELLED


async def test_failure_is_explained_and_retry_starts_one_new_task(make_slack: MakeSlack) -> None:
    slack = await make_slack(with_fake("fail_upload: true"))
    task = await start(slack)
    assert (await slack.task_done(task.id)).status == states.FAILED
    await slack.double.wait_for(lambda: any("*Failed*" in t for t in thread_of(slack, task.id)))
    failed = thread_of(slack, task.id)[-1]
    assert f"<@{ALICE}> the datastore went away (simulated); the partial upload was removed" in failed, failed
    assert failed.endswith(". Fix that, then click Retry."), failed
    last = slack.double.of("chat.postMessage", thread_ts=slack.store.get(task.id).message_ts)[-1]
    assert last.params["reply_broadcast"] is True
    await slack.double.wait_for(lambda: "Failed" in task_message_now(slack, task.id))
    final = task_message_now(slack, task.id)
    assert "Retry" in final and "Cancel" not in final

    first = await slack.answer(await slack.click("task_retry", task.id, user=ALICE))
    second = await slack.answer(await slack.click("task_retry", task.id, user=ALICE))
    assert "Retrying task" in first["text"]
    assert "already retried as" in second["text"]  # the same new task
    retries = [t for t in slack.store.list_tasks() if t.idempotency_key == f"retry:{task.id}"]
    assert len(retries) == 1 and retries[0].template == "win10-office"
    # a name of its own: the failed task's VM may still exist at the target
    assert retries[0].image_name != task.image_name
    assert retries[0].image_name.startswith("win10-office-")
    await slack.double.wait_for(lambda: slack.store.get(retries[0].id).message_ts)


async def test_action_required_until_the_guest_powers_off(make_slack: MakeSlack,
                                                          catalog_dir: Path) -> None:
    slack = await make_slack(with_fake())
    task = await start(slack)
    await slack.double.wait_for(lambda: slack.store.get(task.id).status == states.ACTION_REQUIRED)
    await slack.double.wait_for(lambda: "Action required" in task_message_now(slack, task.id))
    thread = await slack.double.wait_for(lambda: len(thread_of(slack, task.id)) >= 2
                                         and thread_of(slack, task.id))
    assert "Disk created" in thread[0]
    assert "Power it on and let the scripts run" in thread[0]
    assert "local user" in thread[0]  # a VM: the guest is logged into
    assert "*Action required*" in thread[1] and "Waiting for the guest" in thread[1]
    assert f"<@{ALICE}>" in thread[1]
    replies = slack.double.of("chat.postMessage", thread_ts=slack.store.get(task.id).message_ts)
    assert [bool(c.params.get("reply_broadcast")) for c in replies] == [False, True]
    vm = next((catalog_dir / "vms").glob("*.vm"))
    Path(f"{vm}.off").touch()
    assert (await slack.task_done(task.id)).status == states.DONE
    await slack.double.wait_for(lambda: any("*Done*" in t for t in thread_of(slack, task.id)))
