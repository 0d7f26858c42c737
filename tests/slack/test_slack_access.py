"""Access rules (``access:`` on templates and connectors): who may ask, from where,
who may confirm; denials are ephemeral, say why and are audited."""

from __future__ import annotations

import re
from typing import Any

from tests.conftest import BASIC_CATALOG
from tests.fake_adapter import with_fake
from tests.slack.conftest import ALICE, BOB, CAROL, CHANNEL, MakeSlack, Slack, button_value, texts


def with_access(template: str | None = None, connector: str | None = None) -> str:
    text = BASIC_CATALOG
    if template:
        text = text.replace("    disk: {size_gib: 1}\n",
                            f"    disk: {{size_gib: 1}}\n    access: {template}\n")
    if connector:
        text = text.replace("    scripts: [scripts/setup.sh]\n",
                            f"    scripts: [scripts/setup.sh]\n    access: {connector}\n", 1)
    return text


def audit(slack: Slack) -> list[dict[str, Any]]:
    return list(slack.store.rows("SELECT user, action, target, allowed, reason FROM audit"))


async def test_unknown_template_gets_did_you_mean_and_no_task(make_slack: MakeSlack) -> None:
    slack = await make_slack()
    answer = await slack.answer(await slack.command("win10-ofice"))
    assert answer["response_type"] == "ephemeral"
    assert "no template named 'win10-ofice' (did you mean 'win10-office'?)" in texts(answer)
    await slack.idle()
    assert slack.store.list_tasks() == []
    assert slack.store.rows("SELECT COUNT(*) AS n FROM slack_intents") == [{"n": 0}]


async def test_did_you_mean_suggests_only_a_template_the_user_may_publish(
        make_slack: MakeSlack) -> None:
    slack = await make_slack(with_access(template="{users: [UALICE]}"))
    answer = texts(await slack.answer(await slack.command("win10-ofice", user=BOB)))
    assert "no template named 'win10-ofice'" in answer and "win10-office" not in answer
    answer = texts(await slack.answer(await slack.command("win10-ofice", user=ALICE)))
    assert "(did you mean 'win10-office'?)" in answer


async def test_user_not_listed_is_denied_with_reason_and_audited(make_slack: MakeSlack) -> None:
    slack = await make_slack(with_access(template="{users: [UALICE]}"))
    answer = await slack.answer(await slack.command("win10-office", user=BOB))
    assert answer["response_type"] == "ephemeral"
    assert "You may not publish win10-office" in answer["text"]
    assert "restricted to certain users" in answer["text"]
    assert "intent_confirm" not in str(answer.get("blocks"))
    rows = audit(slack)
    assert rows[-1]["user"] == BOB and rows[-1]["action"] == "publish"
    assert rows[-1]["allowed"] == 0 and "restricted" in rows[-1]["reason"]
    # alice is listed
    assert await slack.card("win10-office", user=ALICE)
    assert audit(slack)[-1]["allowed"] == 1


async def test_channel_restriction_on_the_connector(make_slack: MakeSlack) -> None:
    slack = await make_slack(with_access(connector="{channels: [CBUILD]}"))
    answer = await slack.answer(await slack.command("win10-office", channel=CHANNEL))
    assert "may only be published from <#CBUILD>" in answer["text"]
    assert await slack.card("win10-office", channel="CBUILD")


async def test_user_group_membership_comes_from_usergroups_users_list(make_slack: MakeSlack) -> None:
    slack = await make_slack(with_access(template="{user_groups: [SADMINS]}"))
    slack.double.groups["SADMINS"] = [CAROL]
    assert await slack.card("win10-office", user=CAROL)
    answer = await slack.answer(await slack.command("win10-office", user=BOB))
    assert "You may not publish" in answer["text"]
    assert slack.double.of("usergroups.users.list", usergroup="SADMINS")


async def test_only_the_requester_may_click(make_slack: MakeSlack) -> None:
    slack = await make_slack()
    intent = await slack.card("win10-office", user=ALICE)
    denied = await slack.answer(await slack.click("intent_confirm", intent, user=BOB))
    assert denied["response_type"] == "ephemeral" and denied["replace_original"] is False
    assert f"only <@{ALICE}>, who asked for it, may confirm" in denied["text"]
    await slack.idle()
    assert slack.store.list_tasks() == []
    assert audit(slack)[-1]["user"] == BOB and audit(slack)[-1]["allowed"] == 0
    # the intent is still usable by alice
    await slack.answer(await slack.click("intent_confirm", intent, user=ALICE))
    assert len(slack.store.list_tasks()) == 1


async def test_click_rechecks_access(make_slack: MakeSlack) -> None:
    slack = await make_slack(with_access(template="{user_groups: [SOPS]}"))
    slack.double.groups["SOPS"] = [ALICE]
    intent = await slack.card("win10-office", user=ALICE)
    slack.double.groups["SOPS"] = []  # removed from the group meanwhile
    slack.service.handlers.groups._members.clear()
    denied = await slack.answer(await slack.click("intent_confirm", intent, user=ALICE))
    assert "You may not confirm win10-office" in denied["text"]
    await slack.idle()
    assert slack.store.list_tasks() == []


async def test_second_person_approval(make_slack: MakeSlack) -> None:
    slack = await make_slack(with_access(connector="{users: [UALICE, UBOB], approval: second_person}"))
    note = await slack.answer(await slack.command("win10-office", user=ALICE))
    assert "Approval needed" in note["text"]
    # the card is posted in the channel, where an approver can see it
    [posted] = await slack.double.wait_for(lambda: slack.double.of("chat.postMessage",
                                                                   channel=CHANNEL))
    assert "asks you to approve" in texts(posted.params)
    intent = button_value(posted.params["blocks"], "intent_confirm")

    own = await slack.answer(await slack.click("intent_confirm", intent, user=ALICE))
    assert "someone other than" in own["text"]
    outsider = await slack.answer(await slack.click("intent_confirm", intent, user=CAROL))
    assert "You may not confirm" in outsider["text"]
    await slack.idle()
    assert slack.store.list_tasks() == []

    approved = await slack.answer(await slack.click("intent_confirm", intent, user=BOB))
    assert approved["replace_original"] is True
    assert approved["text"] == (f"Publishing 1 layered image \u2014 requested by <@{ALICE}>, "
                                f"approved by <@{BOB}>")
    [task] = slack.store.list_tasks()
    assert task.requested_by == ALICE
    actions = [(r["user"], r["action"], r["allowed"]) for r in audit(slack)]
    assert (ALICE, "confirm", 0) in actions and (CAROL, "approve", 0) in actions
    assert (BOB, "approve", 1) in actions and (BOB, "confirm", 1) not in actions


async def test_second_person_targets_need_a_channel(make_slack: MakeSlack) -> None:
    """From App Home a dialog asks where to post the approval card (see test_slack_approval_card)."""
    slack = await make_slack(with_access(connector="{approval: second_person}"))
    await slack.click("home_publish", "win10-office", user=ALICE, channel=None)
    [opened] = await slack.double.wait_for(lambda: slack.double.of("views.open"))
    assert opened.params["view"]["callback_id"] == "approval_channel_modal"
    await slack.idle()
    assert not slack.double.of("chat.postMessage", channel=ALICE)
    assert slack.store.rows("SELECT COUNT(*) AS n FROM slack_intents") == [{"n": 0}]


async def test_retry_is_a_new_publish_checked_like_one(make_slack: MakeSlack) -> None:
    """Retry re-checks the clicker's access now, and a second-person target gets a new
    approval card instead of a task."""
    slack = await make_slack(with_fake(
        "fail_upload: true\naccess: {users: [UALICE, UBOB], approval: second_person}"))
    await slack.answer(await slack.command("win10-office", user=ALICE))
    [card] = await slack.double.wait_for(lambda: slack.double.of("chat.postMessage",
                                                                 channel=CHANNEL))
    intent = button_value(card.params["blocks"], "intent_confirm")
    await slack.answer(await slack.click("intent_confirm", intent, user=BOB))
    [task] = slack.store.list_tasks()
    assert (await slack.task_done(task.id)).status == "failed"
    # the notifier's broadcast of the failure, before the channel's posts are counted below
    await slack.double.wait_for(lambda: any(
        c.params.get("reply_broadcast") for c in slack.double.of("chat.postMessage", channel=CHANNEL)))

    outsider = await slack.answer(await slack.click("task_retry", task.id, user=CAROL))
    assert "You may not retry" in outsider["text"]
    again = await slack.answer(await slack.click("task_retry", task.id, user=ALICE))
    assert "Approval needed" in again["text"]
    await slack.idle()
    assert len(slack.store.list_tasks()) == 1  # no task until someone else approves
    cards = slack.double.of("chat.postMessage", channel=CHANNEL)
    second = button_value(cards[-1].params["blocks"], "intent_confirm")
    assert second != intent and "asks you to approve" in texts(cards[-1].params)
    # clicking Retry again while that card waits posts no second card
    pending = await slack.answer(await slack.click("task_retry", task.id, user=BOB))
    assert "already in this channel, waiting for a second person" in pending["text"]
    assert len(slack.double.of("chat.postMessage", channel=CHANNEL)) == len(cards)
    own = await slack.answer(await slack.click("intent_confirm", second, user=ALICE))
    assert "someone other than" in own["text"]
    await slack.answer(await slack.click("intent_confirm", second, user=BOB))
    tasks = slack.store.list_tasks()
    assert len(tasks) == 2 and len({t.image_name for t in tasks}) == 2
    used = await slack.answer(await slack.click("task_retry", task.id, user=ALICE))
    [retry] = [t for t in tasks if t.id != task.id]
    # where it is: a link to its message once the notifier has posted it, else its id
    assert re.search(rf"was already retried as (<[^|>]+\|)?task `{retry.id}`", used["text"]), \
        used["text"]
    assert len(slack.store.list_tasks()) == 2
    actions = [(r["user"], r["action"], r["allowed"]) for r in audit(slack)]
    assert (CAROL, "retry", 0) in actions and (ALICE, "retry", 1) in actions
