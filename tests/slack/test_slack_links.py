"""After Publish the card links to each task message (chat.getPermalink); `status TASK`
names people (users.info, cached) instead of showing their bare ids."""

from __future__ import annotations

import re

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.store import states
from tests.conftest import BASIC_CATALOG
from tests.fake_adapter import with_fake
from tests.slack.conftest import ALICE, BOB, CHANNEL, MakeSlack, texts
from tests.slack.slack_double import SlackDouble
from tests.slack.test_slack_flow import PLAIN_OS


async def test_the_card_links_to_each_task_message(make_slack: MakeSlack) -> None:
    slack = await make_slack(BASIC_CATALOG.replace("runner:\n", PLAIN_OS + "runner:\n"))
    intent = await slack.card("win10-office plain-os")
    click = await slack.click("intent_confirm", intent)
    answers = await slack.double.wait_for(lambda: len(c := slack.double.of("response_url", id=click)) == 2
                                          and c)
    assert answers[0].params["text"] == answers[1].params["text"]
    card = answers[1].params
    assert card["replace_original"] is True
    tasks = {t.template: slack.store.get(t.id) for t in slack.store.list_tasks()}
    shown = texts(card)
    for template, task in tasks.items():
        assert task.message_ts and slack.double.of("chat.getPermalink", channel=task.channel,
                                                   message_ts=task.message_ts)
        url = f"https://example.slack.com/archives/{task.channel}/p{task.message_ts.replace('.', '')}"
        assert f"<{url}|{template}>" in shown
    for task in tasks.values():
        assert (await slack.task_done(task.id)).status == states.DONE


async def test_status_of_a_task_names_people(make_slack: MakeSlack) -> None:
    slack = await make_slack(with_fake("block_upload: true"))
    slack.double.users[ALICE] = {"id": ALICE, "name": "alice.l", "real_name": "Alice Liddell",
                                 "profile": {"display_name": "alice"}}
    slack.double.users[BOB] = {"id": BOB, "name": "bob", "real_name": "Bob <b>", "profile": {}}
    intent = await slack.card("win10-office")
    await slack.answer(await slack.click("intent_confirm", intent))
    [task] = slack.store.list_tasks()
    await slack.answer(await slack.click("task_cancel", task.id, user=BOB))
    assert (await slack.task_done(task.id)).status == states.CANCELLED
    for _ in range(2):
        shown = texts(await slack.answer(await slack.command(f"status {task.id}", user=BOB)))
        assert "queued by @alice" in shown and "Cancel requested by @Bob &lt;b&gt;" in shown
        assert not re.search(rf"(?<!<@)\b(?:{ALICE}|{BOB})\b", shown), shown
    assert len(slack.double.of("users.info", user=ALICE)) == 1  # cached


async def test_the_double_checks_get_permalink_arguments() -> None:
    double = await SlackDouble().start()
    client = AsyncWebClient(token="xoxb-t", base_url=double.api_url)
    try:
        posted = await client.chat_postMessage(channel=CHANNEL, text="hi")
        link = await client.chat_getPermalink(channel=CHANNEL, message_ts=posted["ts"])
        assert link["permalink"].startswith(f"https://example.slack.com/archives/{CHANNEL}/p")
        for args, error in (({"channel": CHANNEL, "message_ts": "1.2"}, "message_not_found"),
                            ({"channel": "", "message_ts": posted["ts"]}, "invalid_arguments")):
            with pytest.raises(SlackApiError) as raised:
                await client.chat_getPermalink(**args)
            assert raised.value.response["error"] == error
    finally:
        await double.close()
