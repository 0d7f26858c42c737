"""The confirm card in plain words: number agreement, nothing shown as "none", sizes from
one helper, no appliance jargon; the local target's summary names its size the same way."""

from __future__ import annotations

import dataclasses
import re

from bot import messages
from bot.runner.planning import PublishPlan
from bot.slack import blocks as sb
from tests.slack.conftest import MakeSlack, texts

PLAN = PublishPlan(template="win10-office", icon=":computer:", description="",
                   os_layer="base-os", app_layers=["office"], platform_layer=None,
                   connector="folder", platform="Local folder", size_gib=1, filesystem="ext4",
                   disk_format="qcow2", scripts=[], cache_hit=False)


def card_text(plan: PublishPlan) -> str:
    payload = sb.confirm_card([plan], "iabc", "UALICE", second_person=False,
                              ttl_minutes=15).payload()
    return texts(payload)


def test_one_app_layer_is_singular_and_nothing_reads_none() -> None:
    shown = card_text(PLAN)
    assert "*App layer:* office" in shown and "App layers" not in shown
    assert "none" not in shown.lower()
    assert "Platform layer" not in shown and "Script" not in shown
    assert ":computer: *win10-office*\n" in shown  # no dash before a missing description
    assert "Confirm and Complete" not in shown


def test_several_layers_and_scripts_are_plural() -> None:
    plan = dataclasses.replace(PLAN, app_layers=["office", "teams"], platform_layer="vda",
                               scripts=["a.cmd", "b.cmd"])
    shown = card_text(plan)
    assert "*App layers:* office, teams" in shown and "*Platform layer:* vda" in shown
    assert "*Scripts:* a.cmd, b.cmd" in shown


def test_sizes_come_from_the_one_helper() -> None:
    assert "*Disk:* 1 GiB ext4, qcow2" in card_text(PLAN)
    assert messages.human_bytes(1613103104) == "1.5 GiB"


def test_list_line_without_description_has_no_dangling_dash() -> None:
    assert messages.list_line(":x:", "t", "", True) == ":x: *t*"


async def test_folder_summary_names_a_human_size_not_the_path(make_slack: MakeSlack) -> None:
    slack = await make_slack()
    intent = await slack.card("win10-office")
    await slack.answer(await slack.click("intent_confirm", intent))
    [task] = slack.store.list_tasks()
    await slack.task_done(task.id)
    [created] = [e for e in slack.store.events(task.id) if e.kind == "disk_created"]
    assert not re.search(r"\d+ bytes", created.message), created.message
    assert re.search(r"\(qcow2, \d+(\.\d)? [KMG]iB\)", created.message), created.message
    folder = str(slack.store.get(task.id).link or "").removeprefix("file://").rsplit("/", 1)[0]
    summary = created.message.split(" \u2014 ")[0]  # the link follows; next steps name the path
    assert folder not in summary, summary
