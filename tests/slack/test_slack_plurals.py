"""Singular and plural agree with the number, and whole sizes read without ".0" (issue 16 item 8)."""

from __future__ import annotations

from bot import messages
from tests.slack.conftest import MakeSlack, button_value, texts


async def test_a_one_minute_card_and_its_expiry_say_minute_and_whole_gib(make_slack: MakeSlack) -> None:
    slack = await make_slack()
    slack.service.handlers.intents.ttl = 60
    answer = await slack.answer(await slack.command("win10-office"))
    shown = texts(answer)
    assert "This confirmation expires in 1 minute." in shown, shown
    assert "*Disk:* 1 GiB ext4, qcow2" in shown and "1.0 GiB" not in shown, shown
    intent = button_value(answer["blocks"], "intent_confirm")
    slack.store.execute("UPDATE slack_intents SET expires_at = 0 WHERE id = ?", [intent])
    late = await slack.answer(await slack.click("intent_confirm", intent))
    assert "they are valid for 1 minute)" in late["text"], late["text"]
    assert slack.store.list_tasks() == []


def test_counts_and_sizes() -> None:
    assert messages.stage_compositing(1) == "Compositing 1 layer"
    assert messages.stage_compositing(3) == "Compositing 3 layers"
    assert messages.confirm_expires(15) == "This confirmation expires in 15 minutes."
    assert [messages.human_bytes(n) for n in (2**30, 40 * 2**30, 1613103104, 512, 1536)] == [
        "1 GiB", "40 GiB", "1.5 GiB", "512 B", "1.5 KiB"]
