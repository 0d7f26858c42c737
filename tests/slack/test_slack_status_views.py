"""`/publish status` and App Home: mine and all, each task with requester, time and a link to
its message, one primary button per set, template names in any case with did-you-mean."""

from __future__ import annotations

from typing import Any

from tests.conftest import BASIC_CATALOG
from tests.slack.conftest import ALICE, BOB, CHANNEL, MakeSlack, Slack, texts


async def publish(slack: Slack, name: str, user: str) -> str:
    intent = await slack.card(name, user=user)
    await slack.answer(await slack.click("intent_confirm", intent, user=user))
    task = next(t for t in slack.store.list_tasks() if t.requested_by == user)
    await slack.task_done(task.id)
    await slack.double.wait_for(lambda: slack.store.get(task.id).message_ts)
    return task.id


async def status(slack: Slack, words: str, user: str = ALICE) -> dict[str, Any]:
    return await slack.answer(await slack.command(f"status {words}".strip(), user=user))


def primaries(blocks: list[dict[str, Any]]) -> list[str]:
    found = []
    for block in blocks:
        for element in [*(block.get("elements") or []), block.get("accessory") or {}]:
            if element.get("style") == "primary":
                found.append(element["text"]["text"])
    return found


async def test_status_mine_and_all_lines_carry_requester_time_and_link(make_slack: MakeSlack) -> None:
    slack = await make_slack()
    mine = await publish(slack, "win10-office", ALICE)
    theirs = await publish(slack, "win10-office", BOB)

    everyone = texts(await status(slack, "all"))
    assert mine in everyone and theirs in everyone
    assert f"<@{ALICE}>" in everyone and f"<@{BOB}>" in everyone
    assert "<!date^" in everyone and "{date_short_pretty}" in everyone
    ts = slack.store.get(mine).message_ts or ""
    assert f"<https://example.slack.com/archives/{CHANNEL}/p{ts.replace('.', '')}|`{mine}`>" \
        in everyone
    assert "Done \u00b7 100%" not in everyone  # a finished task shows no stage or percentage

    own = texts(await status(slack, "mine"))
    assert mine in own and theirs not in own
    assert (await status(slack, "MINE", user="UNOBODY"))["text"].startswith("You have no tasks")


async def test_template_names_match_in_any_case_with_did_you_mean(make_slack: MakeSlack) -> None:
    slack = await make_slack()
    card = await slack.answer(await slack.command("WIN10-Office"))
    assert "Review and publish" in texts(card) and "win10-office" in card["text"]

    wrong = (await slack.answer(await slack.command("Win11-Ofice")))["text"]
    assert "no template named 'Win11-Ofice' (did you mean 'win10-office'?)" in wrong

    task = await publish(slack, "win10-office", ALICE)
    by_template = texts(await status(slack, "Win10-OFFICE"))
    assert "Latest tasks of *win10-office*" in by_template and task in by_template
    missing = texts(await status(slack, "win10-offic"))
    assert "There is no task or template `win10-offic` (did you mean *win10-office*?)" in missing


async def test_app_home_switches_between_mine_and_all(make_slack: MakeSlack) -> None:
    slack = await make_slack(BASIC_CATALOG)
    theirs = await publish(slack, "win10-office", BOB)
    await slack.event({"type": "app_home_opened", "user": ALICE, "channel": "DALICE", "tab": "home"})
    [first] = await slack.double.wait_for(lambda: slack.double.of("views.publish"))
    view = first.params["view"]
    assert theirs in texts(view) and f"<@{BOB}>" in texts(view) and "<!date^" in texts(view)
    assert primaries(view["blocks"]) == ["All"]  # Publish buttons plain: one primary per set

    await slack.click("home_tasks_mine", "mine", user=ALICE, channel=None)
    calls = await slack.double.wait_for(lambda: slack.double.of("views.publish")[1:])
    mine_view = calls[0].params["view"]
    assert theirs not in texts(mine_view) and "Your latest tasks" in texts(mine_view)
    assert primaries(mine_view["blocks"]) == ["Mine"]
