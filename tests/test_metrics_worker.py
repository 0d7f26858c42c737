"""``layerbot worker --metrics-port``: the same /metrics (and /healthz, /readyz) from a worker
process that published a task queued by another process."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from bot.catalog import Catalog
from bot.runner.planning import enqueue, plan
from bot.store import states
from bot.store.task_store import TaskStore
from tests.metrics_scrape import assert_task_counts_match, scrape, value

LAYERBOT = str(Path(sys.executable).parent / "layerbot")
PLATFORM = "Local folder"


def metrics_port(log: Path, worker: subprocess.Popen[bytes], seconds: float = 60) -> int:
    """The port the worker printed, once it also announced it works tasks."""
    deadline = time.monotonic() + seconds
    while True:
        text = log.read_text(errors="replace")
        found = re.search(r"^metrics: http://127\.0\.0\.1:(\d+)/metrics", text, re.M)
        if found and "working tasks from" in text:
            return int(found.group(1))
        assert worker.poll() is None, f"the worker exited: {text[-2000:]}"
        assert time.monotonic() < deadline, f"no metrics port after {seconds} s: {text[-2000:]}"
        time.sleep(0.05)


async def test_worker_serves_metrics_after_a_publish(catalog: Catalog, catalog_dir: Path,
                                                     tmp_path: Path) -> None:
    db = tmp_path / "layerbot.db"
    store = TaskStore(db)
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [LAYERBOT, "--config", str(catalog_dir / "layerbot.yml"), "--db", str(db), "worker",
             "--metrics-port", "0"], stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy())
    try:
        port = await asyncio.to_thread(metrics_port, log, worker)
        task, _ = enqueue(store, plan(catalog, "win10-office"), requested_by="alice")
        deadline = time.monotonic() + 120
        while not store.get(task.id).finished:
            assert time.monotonic() < deadline, store.get(task.id).status
            assert worker.poll() is None, log.read_text()[-2000:]
            await asyncio.sleep(0.1)
        assert store.get(task.id).status == states.DONE, store.get(task.id).error

        samples = await scrape(port)
        assert_task_counts_match(samples, store)
        assert value(samples, "layerbot_tasks", status="done", platform=PLATFORM) == 1
        for stage in ("compose", "upload"):
            assert value(samples, "layerbot_stage_duration_seconds_count",
                         stage=stage, platform=PLATFORM, outcome="ok") == 1
        published = catalog_dir / "published" / "win10-office" / f"{task.id}.qcow2"
        assert value(samples, "layerbot_upload_bytes_total", platform=PLATFORM) \
            == published.stat().st_size
        assert value(samples, "layerbot_cache_lookups_total", result="miss") == 1
        assert value(samples, "layerbot_cache_bytes") > 0
        assert value(samples, "layerbot_event_loop_lag_seconds_count") > 0
        assert value(samples, "layerbot_runner_slots") == 2
        assert value(samples, "process_start_time_seconds") > 0

        # a task another process queued for another runner (tagged: this worker leaves it
        # queued) counts at the next scrape
        store.create_task(template="win10-office", connector="east", platform="Elsewhere",
                          image_name="east-1", requested_by="bob", message="queued by bob",
                          runner_tags=["dc-east"])
        samples = await scrape(port)
        assert_task_counts_match(samples, store)
        assert value(samples, "layerbot_tasks", status="queued", platform="Elsewhere") == 1

        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                assert resp.status == 200
                assert await resp.json() == {"ok": True}
            async with session.get(f"http://127.0.0.1:{port}/readyz") as resp:
                body = await resp.json()
                assert resp.status == 200, body
                assert body["ready"] is True
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0, log.read_text()[-2000:]
        store.close()


def test_a_metrics_port_in_use_is_a_usage_error_naming_it(catalog_dir: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [LAYERBOT, "--config", str(catalog_dir / "layerbot.yml"), "--db", str(tmp_path / "t.db"),
             "worker", "--metrics-port", str(port)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"Invalid value for --metrics-port: cannot listen on 127.0.0.1:{port}: Address already in use" \
        in proc.stderr
    assert "Traceback" not in proc.stderr
