"""Claiming an intent is atomic: double clicks, two clickers and retried requests
start each template once; an intent expires after 15 minutes."""

from __future__ import annotations

import asyncio
import time

from bot.slack.intents import Claim, IntentStore
from bot.store.task_store import TaskStore
from tests.slack.conftest import ALICE, BOB, CAROL, CHANNEL, MakeSlack, button_value, sign
from tests.slack.test_slack_access import with_access


async def test_double_click_and_retried_request_start_one_task(make_slack: MakeSlack) -> None:
    slack = await make_slack()
    intent = await slack.card("win10-office")
    payload = slack.click_payload("intent_confirm", intent)
    body = slack.payload_body(payload)
    form = "application/x-www-form-urlencoded"
    # a double click and Slack re-sending the same request (with retry headers)
    retry = {"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
    results = await asyncio.gather(
        slack.post(body, form),
        slack.post(body, form),
        slack.post(body, form, headers={**sign(body), **retry}),
        slack.click("intent_confirm", intent),
    )
    assert all(getattr(r, "status", 200) == 200 for r in results)
    await slack.idle()
    tasks = slack.store.list_tasks()
    assert len(tasks) == 1
    await slack.task_done(tasks[0].id)
    await slack.idle()
    answers = [c.params for c in slack.double.of("response_url")]
    # one click's answers (the card replaced, then again with the links to the task messages)
    assert len({a["id"] for a in answers if a["text"].startswith("Publishing 1 layered image")}) == 1
    assert sum("already used" in a["text"] for a in answers) == 3
    assert len(slack.double.of("chat.postMessage", thread_ts=None)) == 1  # one task message


async def test_two_approvers_clicking_at_once_start_one_task(make_slack: MakeSlack) -> None:
    slack = await make_slack(with_access(connector="{approval: second_person}"))
    await slack.answer(await slack.command("win10-office", user=ALICE))
    await slack.double.wait_for(lambda: slack.double.of("chat.postMessage", channel=CHANNEL))
    posted = slack.double.of("chat.postMessage", channel=CHANNEL)[0].params
    intent = button_value(posted["blocks"], "intent_confirm")
    await asyncio.gather(*(slack.click("intent_confirm", intent, user=u)
                           for u in ("UBOB", "UCAROL", "UDAVE")))
    await slack.idle()
    assert len(slack.store.list_tasks()) == 1


async def test_expired_intent_starts_nothing(make_slack: MakeSlack) -> None:
    slack = await make_slack()
    intent = await slack.card("win10-office")
    slack.store.execute("UPDATE slack_intents SET expires_at = ? WHERE id = ?",
                        [time.time() - 1, intent])
    answer = await slack.answer(await slack.click("intent_confirm", intent))
    assert answer["replace_original"] is True
    assert "expired" in answer["text"] and "15 minutes" in answer["text"]
    await slack.idle()
    assert slack.store.list_tasks() == []
    rows = slack.store.rows("SELECT allowed, reason FROM audit ORDER BY id DESC LIMIT 1")
    assert rows == [{"allowed": 0, "reason": "expired"}]


async def test_cancel_on_the_card_withdraws_the_intent(make_slack: MakeSlack) -> None:
    slack = await make_slack()
    intent = await slack.card("win10-office")
    answer = await slack.answer(await slack.click("intent_cancel", intent))
    assert answer["replace_original"] is True and "Nothing was queued" in answer["text"]
    late = await slack.answer(await slack.click("intent_confirm", intent))
    assert "no longer known" in late["text"]
    await slack.idle()
    assert slack.store.list_tasks() == []


def test_claim_is_exclusive_and_respects_expiry(store: TaskStore) -> None:
    intents = IntentStore(store, ttl=60)
    i, _ = intents.create(ALICE, CHANNEL, ["win10-office"], "requester")
    assert intents.claim(i.id, ALICE, now=time.time() + 61) is Claim.EXPIRED
    assert intents.claim(i.id, ALICE) is Claim.CLAIMED
    assert intents.claim(i.id, ALICE) is Claim.USED
    assert intents.claim("inope", ALICE) is Claim.UNKNOWN
    assert intents.get(i.id).claimed_by == ALICE  # type: ignore[union-attr]


def test_a_fixed_id_is_reused_while_live_and_replaced_once_expired(store: TaskStore) -> None:
    intents = IntentStore(store, ttl=0.2)
    first, new = intents.create(ALICE, CHANNEL, ["win10-office"], "second_person",
                                intent_id="retry-t1")
    assert new and first.id == "retry-t1"
    again, new = intents.create(BOB, CHANNEL, ["win10-office"], "second_person",
                                intent_id="retry-t1")
    assert not new and again.user == ALICE
    time.sleep(0.3)  # expired, never used: a fresh one takes its place
    fresh, new = intents.create(BOB, CHANNEL, ["win10-office"], "second_person",
                                intent_id="retry-t1")
    assert new and fresh.user == BOB and fresh.expires_at > time.time()
    assert intents.claim("retry-t1", CAROL) is Claim.CLAIMED
    used, new = intents.create(ALICE, CHANNEL, ["win10-office"], "second_person",
                               intent_id="retry-t1")
    assert not new and used.claimed_by == CAROL  # used: never a second start
