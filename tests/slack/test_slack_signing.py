"""Every request's signature is checked (5-minute window): a bad or stale one gets 401
and changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from tests.slack.conftest import BOT_TOKEN, SECRET, MakeSlack, sign


async def test_bad_and_stale_signatures_get_401_and_change_nothing(make_slack: MakeSlack) -> None:
    slack = await make_slack()
    body = slack.command_body("win10-office")
    form = "application/x-www-form-urlencoded"
    attempts = {
        "wrong secret": sign(body, secret="not-the-secret"),
        "stale (6 minutes old)": sign(body, timestamp=int(time.time()) - 360),
        "from the future": sign(body, timestamp=int(time.time()) + 360),
        "no signature": {},
        "tampered body": sign(body.replace("win10-office", "other")),
    }
    for why, headers in attempts.items():
        resp = await slack.post(body, form, headers=headers)
        assert resp.status == 401, why
    click = slack.payload_body(slack.click_payload("intent_confirm", "ianything"))
    assert (await slack.post(click, form, headers=sign(click, secret="x"))).status == 401
    await slack.idle()
    assert [c.method for c in slack.double.calls if c.method != "auth.test"] == []
    assert slack.store.list_tasks() == []
    assert slack.store.rows("SELECT COUNT(*) AS n FROM slack_intents") == [{"n": 0}]

    ok = await slack.post(body, form, headers=sign(body, SECRET, int(time.time()) - 200))
    assert ok.status == 200  # inside the window
    assert len(slack.double.of("auth.test")) == 1  # once, at start


async def test_healthz_reports_runner_and_loop_lag(make_slack: MakeSlack) -> None:
    slack = await make_slack()
    url = slack.url.replace("/slack/events", "/healthz")
    async with slack.session.get(url, params={"window": "5"}) as resp:
        assert resp.status == 200
        data = await resp.json()
    assert data["ok"] is True and data["mode"] == "http"
    assert data["runner"]["max_parallel"] == 2 and data["runner"]["waiting"] == 0
    assert 0 <= data["loop_lag_own_ms"] <= data["loop_lag_ms"]


def test_the_lag_a_busy_machine_caused_is_told_apart() -> None:
    """A CPU hog in another process delays the loop's thread; the kernel's run delay for it
    (/proc/thread-self/schedstat) is subtracted from the app's own worst lag."""
    from bot.metrics.loop_lag import run_delay

    before = run_delay()
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(2 * (os.cpu_count() or 2))]
    try:
        deadline = time.monotonic() + 5
        while run_delay() == before and time.monotonic() < deadline:
            sum(range(100_000))  # stay runnable: only a runnable thread waits for a CPU
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert run_delay() > before


async def test_secrets_never_reach_messages_or_the_database(make_slack: MakeSlack) -> None:
    slack = await make_slack()
    intent = await slack.card("win10-office")
    await slack.answer(await slack.click("intent_confirm", intent))
    [task] = slack.store.list_tasks()
    await slack.task_done(task.id)
    await slack.idle()
    with slack.store.transaction() as conn:
        dump = "\n".join(conn.iterdump())
    sent = repr([{k: v for k, v in c.params.items() if k != "_token"} for c in slack.double.calls])
    for secret in (SECRET, BOT_TOKEN):
        assert secret not in dump
        assert secret not in sent
        assert secret not in repr(slack.service.settings)
