"""Every refusal is audited — not only access decisions: guessed or replayed confirmation
ids, an approval clicked again, buttons naming unknown tasks — and a task of a restricted
template is shown only to those who may see it."""

from __future__ import annotations

from typing import Any

from tests.slack.conftest import ALICE, BOB, CAROL, CHANNEL, MakeSlack, Slack, button_value, texts
from tests.slack.test_slack_access import with_access


def refusals(slack: Slack) -> list[tuple[str, str, str, str]]:
    return [(r["user"], r["action"], r["target"], r["reason"]) for r in slack.store.rows(
        "SELECT user, action, target, reason FROM audit WHERE allowed = 0 ORDER BY id")]


async def test_guessed_and_replayed_confirm_ids_are_audited(make_slack: MakeSlack) -> None:
    slack = await make_slack()
    for guess in ("i0000", "iAAAAAAAAAAAAAAAA", ""):
        answer = await slack.answer(await slack.click("intent_confirm", guess, user=BOB))
        assert "no longer known" in answer["text"]
    intent = await slack.card("win10-office")
    await slack.answer(await slack.click("intent_confirm", intent))
    replay = await slack.answer(await slack.click("intent_confirm", intent))
    assert "already used" in replay["text"]
    dismissed = await slack.answer(await slack.click("intent_cancel", "i0001", user=BOB))
    assert "no longer known" in dismissed["text"]
    await slack.idle()
    assert refusals(slack) == [
        (BOB, "confirm", "i0000", "unknown or withdrawn confirmation"),
        (BOB, "confirm", "iAAAAAAAAAAAAAAAA", "unknown or withdrawn confirmation"),
        (BOB, "confirm", "", "unknown or withdrawn confirmation"),
        (ALICE, "confirm", "win10-office", f"already used by {ALICE}"),
        (BOB, "dismiss", "i0001", "unknown confirmation"),
    ]
    assert len(slack.store.list_tasks()) == 1


async def test_clicking_an_approval_already_used_is_audited(make_slack: MakeSlack) -> None:
    slack = await make_slack(with_access(connector="{users: [UALICE, UBOB, UCAROL], "
                                                   "approval: second_person}"))
    await slack.answer(await slack.command("win10-office", user=ALICE))
    [posted] = await slack.double.wait_for(lambda: slack.double.of("chat.postMessage",
                                                                   channel=CHANNEL))
    intent = button_value(posted.params["blocks"], "intent_confirm")
    await slack.answer(await slack.click("intent_confirm", intent, user=BOB))
    for user in (BOB, CAROL):
        again = await slack.answer(await slack.click("intent_confirm", intent, user=user))
        assert f"already used by <@{BOB}>" in again["text"]
    await slack.idle()
    assert refusals(slack)[-2:] == [(user, "confirm", "win10-office", f"already used by {BOB}")
                                    for user in (BOB, CAROL)]
    assert len(slack.store.list_tasks()) == 1


async def test_retry_and_cancel_of_unknown_tasks_are_answered_and_audited(make_slack: MakeSlack) -> None:
    slack = await make_slack()
    for action in ("task_cancel", "task_retry"):
        answer = await slack.answer(await slack.click(action, "tNOSUCH", user=BOB))
        assert "There is no task `tNOSUCH`" in answer["text"]
    await slack.idle()
    assert refusals(slack) == [(BOB, "cancel", "tNOSUCH", "no such task"),
                               (BOB, "retry", "tNOSUCH", "no such task")]


async def test_status_of_a_restricted_task_is_shown_only_to_those_allowed(make_slack: MakeSlack) -> None:
    slack = await make_slack(with_access(template="{users: [UALICE]}"))
    intent = await slack.card("win10-office", user=ALICE)
    await slack.answer(await slack.click("intent_confirm", intent, user=ALICE))
    [task] = slack.store.list_tasks()

    async def status(user: str, *words: str) -> dict[str, Any]:
        return await slack.answer(await slack.command(" ".join(["status", *words]), user=user))

    assert task.id in texts(await status(ALICE, task.id))
    assert task.id in texts(await status(ALICE))
    hidden = texts(await status(BOB, task.id))
    assert f"There is no task `{task.id}`" in hidden and "win10-office" not in hidden
    assert task.id not in texts(await status(BOB))
    await slack.idle()
    [(user, action, target, reason)] = refusals(slack)
    assert (user, action, target) == (BOB, "status", task.id) and "restricted" in reason
