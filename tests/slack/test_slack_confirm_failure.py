"""Starting the confirmed templates fails: the clicker is told what failed, and the claim is
given back so a second click works (instead of "already used")."""

from __future__ import annotations

from typing import Any

import pytest

import bot.slack.handlers
from bot import messages
from bot.slack.intents import Claim
from tests.slack.conftest import ALICE, MakeSlack, texts


async def test_a_failed_start_can_be_retried_with_a_second_click(
    make_slack: MakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    slack = await make_slack()
    intent = await slack.card("win10-office")
    real_enqueue = bot.slack.handlers.enqueue
    calls: list[str] = []

    def enqueue_failing_once(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs["idempotency_key"])
        if len(calls) == 1:
            raise OSError(28, "No space left on device")
        return real_enqueue(*args, **kwargs)

    monkeypatch.setattr(bot.slack.handlers, "enqueue", enqueue_failing_once)

    failed = texts(await slack.answer(await slack.click("intent_confirm", intent)))
    assert "Cannot start win10-office" in failed
    assert "reference `" in failed and "No space left" not in failed  # the why is in the log
    assert f"Click *{messages.BUTTON_PUBLISH}* again" in failed
    assert "already used" not in failed
    assert slack.store.list_tasks() == []
    stored = slack.service.handlers.intents.get(intent)
    assert stored is not None and stored.claimed_by is None

    replaced = await slack.answer(await slack.click("intent_confirm", intent))
    assert replaced["replace_original"] is True
    assert replaced["text"] == f"Publishing 1 layered image \u2014 requested by <@{ALICE}>"
    [task] = slack.store.list_tasks()
    assert task.idempotency_key == f"{intent}:win10-office"
    # and now it is used
    again = texts(await slack.answer(await slack.click("intent_confirm", intent)))
    assert messages.intent_used(ALICE) in again


async def test_unclaim_gives_back_only_the_clickers_claim(make_slack: MakeSlack) -> None:
    slack = await make_slack()
    intents = slack.service.handlers.intents
    intent = await slack.card("win10-office")
    assert intents.claim(intent, ALICE) is Claim.CLAIMED
    assert intents.unclaim(intent, "USOMEONE") is False
    assert intents.unclaim(intent, ALICE) is True
    assert intents.claim(intent, ALICE) is Claim.CLAIMED
    cancelled = await slack.card("win10-office")
    assert intents.cancel(cancelled, ALICE) is Claim.CLAIMED
    assert intents.unclaim(cancelled, ALICE) is False  # a cancelled card stays cancelled
    assert intents.get(cancelled).cancelled  # type: ignore[union-attr]
