"""``/metrics`` on serve's HTTP port after a real publish through Slack (local target): the
task counts match the store, the stages, bytes, cache and Slack counters moved."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from bot import metrics
from bot.store import states
from tests.metrics_scrape import assert_task_counts_match, scrape, value
from tests.slack.conftest import MakeSlack
from tests.slack.conftest import make_slack as make_slack

PLATFORM = "Local folder"


async def test_serve_metrics_after_a_publish(make_slack: MakeSlack, catalog_dir: Path) -> None:
    metrics.reset()  # counters of this test only
    slack = await make_slack()
    slack.double.rate_limit_updates = 1  # the notifier's first chat.update gets a 429
    intent = await slack.card("win10-office")
    await slack.answer(await slack.click("intent_confirm", intent))
    [task] = slack.store.list_tasks()
    task = await slack.task_done(task.id)
    assert task.status == states.DONE, task.error
    await slack.double.wait_for(lambda: any(c.status == 429 for c in slack.double.of("chat.update")))
    port = slack.service.port
    assert port is not None

    samples = await scrape(port)
    assert_task_counts_match(samples, slack.store)
    assert value(samples, "layerbot_tasks", status="done", platform=PLATFORM) == 1
    assert value(samples, "layerbot_tasks_finished_total", status="done", platform=PLATFORM) == 1
    for stage in ("compose", "upload"):
        assert value(samples, "layerbot_stage_duration_seconds_count",
                     stage=stage, platform=PLATFORM, outcome="ok") == 1
        assert value(samples, "layerbot_stage_duration_seconds_sum",
                     stage=stage, platform=PLATFORM, outcome="ok") > 0
    published = catalog_dir / "published" / "win10-office" / f"{task.id}.qcow2"
    assert value(samples, "layerbot_upload_bytes_total", platform=PLATFORM) == published.stat().st_size
    assert value(samples, "layerbot_cache_lookups_total", result="miss") == 1
    assert value(samples, "layerbot_cache_lookups_total", result="hit") == 0
    assert value(samples, "layerbot_cache_bytes") >= published.stat().st_blocks * 512 > 0
    assert value(samples, "layerbot_cache_filesystem_free_bytes") > 0
    assert value(samples, "layerbot_slack_api_calls_total", method="chat.postMessage", status="200") >= 1
    assert value(samples, "layerbot_slack_api_calls_total", method="chat.update", status="429") == 1
    assert value(samples, "layerbot_slack_api_rate_limited_total", method="chat.update") == 1
    assert value(samples, "layerbot_event_loop_lag_seconds_count") > 0
    assert value(samples, "layerbot_runner_slots") == 2
    assert value(samples, "layerbot_runner_slots_busy") == 0
    assert value(samples, "layerbot_runner_tasks_waiting_for_guest") == 0

    # a second publish of the same template: the store's counts follow, the cache hits
    intent = await slack.card("win10-office")
    await slack.answer(await slack.click("intent_confirm", intent))
    again = next(t for t in slack.store.list_tasks() if t.id != task.id)
    assert (await slack.task_done(again.id)).status == states.DONE
    samples = await scrape(port)
    assert_task_counts_match(samples, slack.store)
    assert value(samples, "layerbot_tasks", status="done", platform=PLATFORM) == 2
    assert value(samples, "layerbot_tasks_finished_total", status="done", platform=PLATFORM) == 2
    assert value(samples, "layerbot_cache_lookups_total", result="hit") == 1

    async with aiohttp.ClientSession() as session, \
            session.get(f"http://127.0.0.1:{port}/readyz") as resp:
        body = await resp.json()
        assert resp.status == 200, body
    assert body == {"ready": True, "checks": {"store": "ok", "catalog": "ok", "tools": "ok"}}
