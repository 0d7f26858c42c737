"""/publish alone opens a modal; App Home lists templates and the latest tasks; help,
list and status answer ephemerally."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import BASIC_CATALOG
from tests.slack.conftest import ALICE, BOB, CHANNEL, MakeSlack, Slack, button_value, texts
from tests.slack.slack_double import SlackDouble

RESTRICTED = BASIC_CATALOG.replace("runner:\n", """\
  secret-os:
    description: Only for alice
    os_layer: base-os
    connector: folder
    disk: {size_gib: 1}
    access: {users: [UALICE]}
runner:
""")


def submission(slack: Slack, view: dict[str, Any], user: str, names: list[str]) -> str:
    values = {"templates": {"selected": {
        "type": "multi_static_select",
        "selected_options": [{"value": n, "text": {"type": "plain_text", "text": n}}
                             for n in names]}}}
    payload = {"type": "view_submission", "team": {"id": "T0001"}, "user": {"id": user},
               "api_app_id": "A0001", "trigger_id": "trigger-submit",
               "view": {**view, "id": "V0001", "state": {"values": values}}}
    return slack.payload_body(payload)


async def test_modal_lists_allowed_templates_and_leads_to_the_card(make_slack: MakeSlack) -> None:
    slack = await make_slack(RESTRICTED)
    await slack.command("", user=BOB)
    [opened] = await slack.double.wait_for(lambda: slack.double.of("views.open"))
    view = opened.params["view"]
    assert opened.params["trigger_id"].startswith("trigger-")
    options = [o["value"] for o in view["blocks"][0]["element"]["options"]]
    assert options == ["win10-office"]  # not secret-os
    assert view["private_metadata"] == CHANNEL

    resp = await slack.post(submission(slack, view, BOB, ["win10-office"]),
                            "application/x-www-form-urlencoded")
    assert resp.status == 200
    assert (await resp.json())["response_action"] == "update"  # the modal stays open
    # the confirm step is the modal's next view, not a message
    [step] = await slack.double.wait_for(lambda: slack.double.of("views.update"))
    assert step.params["view_id"] == "V0001" and not slack.double.of("chat.postEphemeral")
    confirm = step.params["view"]
    assert "Review and publish" in texts(confirm) and confirm["submit"]["text"] == "Publish"
    assert SlackDouble.modal_problem("views.update", step.params) is None
    assert json.loads(confirm["private_metadata"])["channel"] == CHANNEL

    resp = await slack.post(submission(slack, confirm, BOB, []), "application/x-www-form-urlencoded")
    assert (await resp.json())["response_action"] == "update"
    done = await slack.double.wait_for(lambda: slack.double.of("views.update")[1:])
    assert "Publishing 1 layered image" in texts(done[0].params["view"])
    assert "submit" not in done[0].params["view"]
    [task] = slack.store.list_tasks()
    assert (task.template, task.requested_by, task.channel) == ("win10-office", BOB, CHANNEL)

    # a second submit of the same step starts nothing more
    await slack.post(submission(slack, confirm, BOB, []), "application/x-www-form-urlencoded")
    again = await slack.double.wait_for(lambda: slack.double.of("views.update")[2:])
    assert "already used" in texts(again[0].params["view"])
    assert len(slack.store.list_tasks()) == 1


async def test_modal_marks_templates_that_need_approval(make_slack: MakeSlack) -> None:
    slack = await make_slack(RESTRICTED.replace("    access: {users: [UALICE]}",
                                                "    access: {approval: second_person}"))
    await slack.command("", user=BOB)
    [opened] = await slack.double.wait_for(lambda: slack.double.of("views.open"))
    options = {o["value"]: (o.get("description") or {}).get("text", "")
               for o in opened.params["view"]["blocks"][0]["element"]["options"]}
    assert "second person" in options["secret-os"] and "second person" not in options["win10-office"]


async def test_modal_submission_is_rechecked(make_slack: MakeSlack) -> None:
    slack = await make_slack(RESTRICTED)
    view = {"type": "modal", "callback_id": "publish_modal", "private_metadata": CHANNEL}
    await slack.post(submission(slack, view, BOB, ["secret-os"]),
                     "application/x-www-form-urlencoded")
    [denied] = await slack.double.wait_for(lambda: slack.double.of("views.update"))
    assert "You may not publish secret-os" in texts(denied.params["view"])
    assert "submit" not in denied.params["view"]


async def test_app_home_lists_templates_and_latest_tasks(make_slack: MakeSlack) -> None:
    slack = await make_slack(RESTRICTED)
    intent = await slack.card("win10-office", user=ALICE)
    await slack.answer(await slack.click("intent_confirm", intent, user=ALICE))
    [task] = slack.store.list_tasks()
    await slack.task_done(task.id)

    resp = await slack.event({"type": "app_home_opened", "user": BOB, "channel": "DBOB",
                              "tab": "home"})
    assert resp.status == 200
    [published] = await slack.double.wait_for(lambda: slack.double.of("views.publish"))
    assert published.params["user_id"] == BOB
    view = published.params["view"]
    assert view["type"] == "home"
    shown = texts(view)
    assert "win10-office" in shown and "secret-os" not in shown
    assert task.id in shown and "Done" in shown
    assert button_value(view["blocks"], "home_publish") == "win10-office"

    # Publish from App Home: the card arrives as a direct message
    await slack.click("home_publish", "win10-office", user=BOB, channel=None)
    [dm] = await slack.double.wait_for(lambda: slack.double.of("chat.postMessage", channel=BOB))
    assert "Review and publish" in texts(dm.params)
    intent = button_value(dm.params["blocks"], "intent_confirm")
    await slack.answer(await slack.click("intent_confirm", intent, user=BOB, channel="DBOB"))
    new = [t for t in slack.store.list_tasks() if t.requested_by == BOB]
    assert len(new) == 1 and new[0].channel == "DBOB"


async def test_help_list_and_status(make_slack: MakeSlack) -> None:
    slack = await make_slack(RESTRICTED)
    help_text = (await slack.answer(await slack.command("help")))["text"]
    assert "/publish NAME" in help_text and "status" in help_text
    listing = (await slack.answer(await slack.command("list", user=BOB)))["text"]
    assert "*win10-office* \u2014 Windows 10 with Office" in listing
    assert "*secret-os* :lock:" in listing
    assert "No tasks yet" in (await slack.answer(await slack.command("status")))["text"]

    intent = await slack.card("win10-office")
    await slack.answer(await slack.click("intent_confirm", intent))
    [task] = slack.store.list_tasks()
    await slack.task_done(task.id)
    status = (await slack.answer(await slack.command("status")))["text"]
    assert task.id in status and "Done" in status
    detail = await slack.answer(await slack.command(f"status {task.id}"))
    assert "`done` Done in" in texts(detail)
    missing = (await slack.answer(await slack.command("status tnope")))["text"]
    assert "There is no task or template `tnope`" in missing
