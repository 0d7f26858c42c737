"""/publish answers promptly whatever the layers hold: planning never reads a layer that was
never composited (no cached image can exist), so a tar whose header claims 1 TiB costs
nothing until the task runs, and the task then fails at once, naming the layer and member."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bot.store import states
from tests.compositor.layer_builder import claims_a_tebibyte
from tests.slack.conftest import MakeSlack, button_value, texts


@pytest.mark.timeout(120)
async def test_publish_with_a_layer_claiming_a_tebibyte(make_slack: MakeSlack,
                                                       catalog_dir: Path) -> None:
    claims_a_tebibyte(catalog_dir / "layers" / "vda.tar.gz")
    slack = await make_slack()
    started = time.monotonic()
    card = await slack.answer(await slack.command("win10-office"))
    assert time.monotonic() - started < 10
    assert "Review and publish" in texts(card)

    await slack.answer(await slack.click("intent_confirm",
                                         button_value(card["blocks"], "intent_confirm")))
    [task] = slack.store.list_tasks()
    task = await slack.task_done(task.id, timeout=60)
    assert task.status == states.FAILED
    assert "layer 'vda'" in (task.error or "") and "member 'var/huge.img'" in (task.error or "")
    assert time.monotonic() - started < 60
