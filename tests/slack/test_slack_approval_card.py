"""A protected target's approval card: it speaks to the approvers by name, shows its expiry
the Slack way, has Approve and Reject, is edited when rejected or when it expires, and the
task message says who approved."""

from __future__ import annotations

from typing import Any

from bot.store import states
from tests.slack.conftest import ALICE, BOB, CAROL, CHANNEL, MakeSlack, Slack, button_value, texts
from tests.slack.test_slack_access import with_access
from tests.slack.test_slack_tasks import task_message_now

PROTECTED = with_access(template="{users: [UALICE, UBOB], user_groups: [SADMINS]}",
                        connector="{approval: second_person}")


async def approval_card(slack: Slack, user: str = ALICE) -> dict[str, Any]:
    note = await slack.answer(await slack.command("win10-office", user=user))
    assert "Approval needed" in note["text"]
    [card] = await slack.double.wait_for(lambda: slack.double.of("chat.postMessage", channel=CHANNEL))
    return card.params


def buttons(card: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["text"]["text"]: e for b in card["blocks"] for e in b.get("elements") or []
            if e.get("type") == "button"}


async def test_the_card_speaks_to_the_approvers_and_shows_its_expiry(make_slack: MakeSlack) -> None:
    slack = await make_slack(PROTECTED)
    card = await approval_card(slack)
    shown = texts(card)
    assert f"<@{BOB}> or <!subteam^SADMINS>: <@{ALICE}> asks you to approve" in shown
    assert f"<@{ALICE}> or" not in shown  # the requester cannot approve
    intent = slack.store.rows("SELECT expires_at FROM slack_intents")[0]
    assert f"<!date^{int(intent['expires_at'])}^" in shown
    found = buttons(card)
    assert set(found) == {"Approve", "Reject"}
    assert found["Approve"]["action_id"] == "intent_confirm" and found["Approve"]["style"] == "primary"
    assert found["Approve"]["confirm"]["title"]["text"] == "Approve this publish?"
    assert found["Reject"]["action_id"] == "intent_reject" and found["Reject"]["style"] == "danger"


async def test_approved_by_appears_on_the_task_message(make_slack: MakeSlack) -> None:
    slack = await make_slack(PROTECTED)
    intent = button_value((await approval_card(slack))["blocks"], "intent_confirm")
    await slack.answer(await slack.click("intent_confirm", intent, user=BOB))
    [task] = slack.store.list_tasks()
    assert (await slack.task_done(task.id)).status == states.DONE
    await slack.double.wait_for(lambda: "Done" in task_message_now(slack, task.id))
    assert f"Approved by <@{BOB}>" in task_message_now(slack, task.id)
    first = [c for c in slack.double.of("chat.postMessage", thread_ts=None) if task.id in texts(c.params)]
    assert f"Approved by <@{BOB}>" in texts(first[0].params)


async def test_reject_edits_the_card_and_queues_nothing(make_slack: MakeSlack) -> None:
    slack = await make_slack(PROTECTED)
    intent = button_value((await approval_card(slack))["blocks"], "intent_reject")
    outsider = await slack.answer(await slack.click("intent_reject", intent, user=CAROL))
    assert "You may not reject" in outsider["text"] and outsider["replace_original"] is False
    rejected = await slack.answer(await slack.click("intent_reject", intent, user=BOB))
    assert rejected["replace_original"] is True
    assert f"Rejected by <@{BOB}>: <@{ALICE}>'s request to publish win10-office" in rejected["text"]
    late = await slack.answer(await slack.click("intent_confirm", intent, user=BOB))
    assert "no longer known" in late["text"]
    await slack.idle()
    assert slack.store.list_tasks() == []


async def test_an_unanswered_card_is_edited_when_it_expires(make_slack: MakeSlack) -> None:
    slack = await make_slack(PROTECTED)
    slack.service.handlers.intents.ttl = 0.5
    slack.service.approval_sweep = 0.1
    card = await approval_card(slack)
    intent = button_value(card["blocks"], "intent_confirm")
    [posted] = slack.double.of("chat.postMessage", channel=CHANNEL)
    ts = slack.double.calls.index(posted)
    [edit] = await slack.double.wait_for(lambda: slack.double.of("chat.update", channel=CHANNEL))
    assert slack.double.calls.index(edit) > ts
    assert edit.params["ts"] == slack.store.rows("SELECT card_ts FROM slack_intents")[0]["card_ts"]
    assert f"Expired: nobody approved <@{ALICE}>'s request to publish win10-office" in texts(edit.params)
    assert "intent_confirm" not in str(edit.params["blocks"])
    late = await slack.answer(await slack.click("intent_confirm", intent, user=BOB))
    assert "expired" in late["text"]
    await slack.service.handlers.expire_approvals()
    assert len(slack.double.of("chat.update", channel=CHANNEL)) == 1  # edited once
    assert slack.store.list_tasks() == []


async def test_app_home_publish_asks_where_then_posts_the_same_card(make_slack: MakeSlack) -> None:
    slack = await make_slack(PROTECTED.replace("    format: qcow2\n",
                                               "    format: qcow2\n    notify_channel: CNOTIFY\n"))
    await slack.click("home_publish", "win10-office", user=ALICE, channel=None)
    [opened] = await slack.double.wait_for(lambda: slack.double.of("views.open"))
    view = opened.params["view"]
    assert opened.params["trigger_id"] == "trigger-click"
    [select] = [b["element"] for b in view["blocks"] if b["type"] == "input"]
    assert select["type"] == "conversations_select" and select["initial_conversation"] == "CNOTIFY"
    assert not slack.double.of("chat.postMessage", channel=ALICE)  # no "use /publish" DM

    values = {"approval_channel": {"channel": {"type": "conversations_select",
                                               "selected_conversation": "CBUILD"}}}
    payload = {"type": "view_submission", "team": {"id": "T0001"}, "user": {"id": ALICE},
               "api_app_id": "A0001", "trigger_id": "trigger-submit",
               "view": {**view, "id": "V0001", "state": {"values": values}}}
    resp = await slack.post(slack.payload_body(payload), "application/x-www-form-urlencoded")
    assert resp.status == 200
    [card] = await slack.double.wait_for(lambda: slack.double.of("chat.postMessage", channel="CBUILD"))
    assert f"<@{ALICE}> asks you to approve" in texts(card.params)
    intent = button_value(card.params["blocks"], "intent_confirm")
    await slack.answer(await slack.click("intent_confirm", intent, user=BOB, channel="CBUILD"))
    [task] = slack.store.list_tasks()
    assert task.requested_by == ALICE and task.channel == "CNOTIFY"
