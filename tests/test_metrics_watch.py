"""Runner metrics while tasks work, on the fake hypervisor (WATCH_POWER): a busy slot and the
bytes of an upload in progress, then a task waiting for its guest (no slot) and its watch."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import adapters
from bot import metrics
from bot.catalog import Catalog, load_catalog
from bot.runner.job_runner import JobRunner
from bot.runner.planning import enqueue, plan
from bot.store import states
from bot.store.task_store import TaskStore
from tests.fake_adapter import with_fake
from tests.metrics_scrape import Samples, assert_task_counts_match, scrape, value

adapters.register("fake", "tests.fake_adapter")
PLATFORM = "Fake hypervisor"


async def until(check: Callable[[], Awaitable[bool]], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def run_with_metrics(store: TaskStore, catalog: Catalog,
                           body: Callable[[JobRunner, int], Awaitable[None]]) -> None:
    from bot.metrics.http import ops_endpoints

    runner = JobRunner(store, catalog, poll_interval=0.05)
    stop = asyncio.Event()
    work = asyncio.create_task(runner.run(stop=stop))
    try:
        async with ops_endpoints(store, catalog, runner, "127.0.0.1", 0) as port:
            await body(runner, port)
    finally:
        stop.set()
        await asyncio.wait_for(work, 60)


async def test_a_busy_slot_and_the_bytes_of_an_upload_in_progress(
        write_catalog: Callable[[str], Path], store: TaskStore) -> None:
    metrics.reset()
    catalog = load_catalog(write_catalog(with_fake("block_upload: true")))
    task, _ = enqueue(store, plan(catalog, "win10-office"), requested_by="alice")

    async def body(runner: JobRunner, port: int) -> None:
        samples: Samples = {}

        async def three_quarters_sent() -> bool:
            # the fake reports 0, 1/4, 2/4, 3/4 of the upload sent, then blocks
            nonlocal samples
            if store.get(task.id).status != states.UPLOADING:
                return False
            samples = await scrape(port)
            sent = samples.get(("layerbot_upload_bytes_total", (("platform", PLATFORM),)), 0)
            return sent == int(0.75 * _artifact_size(store, task.id))

        await until(three_quarters_sent)
        assert value(samples, "layerbot_runner_slots_busy") == 1
        assert value(samples, "layerbot_tasks", status="uploading", platform=PLATFORM) == 1
        store.request_cancel(task.id, "alice", "cancelled by alice")

        async def cancelled() -> bool:
            return store.get(task.id).status == states.CANCELLED and runner.busy == 0

        await until(cancelled)
        samples = await scrape(port)
        assert value(samples, "layerbot_stage_duration_seconds_count",
                     stage="upload", platform=PLATFORM, outcome="stopped") == 1
        assert value(samples, "layerbot_stage_duration_seconds_count",
                     stage="compose", platform=PLATFORM, outcome="ok") == 1
        assert value(samples, "layerbot_runner_slots_busy") == 0
        assert value(samples, "layerbot_tasks_finished_total", status="cancelled", platform=PLATFORM) == 1
        assert_task_counts_match(samples, store)

    await run_with_metrics(store, catalog, body)


def _artifact_size(store: TaskStore, task_id: str) -> int:
    """The composited disk's size, as the compose event recorded it."""
    [composited] = [e for e in store.events(task_id) if e.kind == "composited"]
    return int(composited.data["bytes"])


async def test_a_task_waiting_for_its_guest_then_its_watch(
        write_catalog: Callable[[str], Path], store: TaskStore, catalog_dir: Path) -> None:
    metrics.reset()
    catalog = load_catalog(write_catalog(with_fake("poll_max_seconds: 0.05")))
    task, _ = enqueue(store, plan(catalog, "win10-office"), requested_by="alice")

    async def body(runner: JobRunner, port: int) -> None:
        async def waiting() -> bool:
            return store.get(task.id).status == states.ACTION_REQUIRED and runner.waiting == 1 \
                and runner.busy == 0

        await until(waiting)
        samples = await scrape(port)
        assert value(samples, "layerbot_runner_tasks_waiting_for_guest") == 1
        assert value(samples, "layerbot_runner_slots_busy") == 0
        assert value(samples, "layerbot_tasks", status="action_required", platform=PLATFORM) == 1
        assert value(samples, "layerbot_upload_bytes_total", platform=PLATFORM) \
            == _artifact_size(store, task.id)
        assert ("layerbot_stage_duration_seconds_count",
                (("outcome", "ok"), ("platform", PLATFORM), ("stage", "watch"))) not in samples

        vm = catalog_dir / "vms" / f"{store.get(task.id).image_name}.vm"
        vm.with_name(vm.name + ".off").touch()  # the guest ran its scripts and powered off

        async def done() -> bool:
            return store.get(task.id).status == states.DONE and runner.waiting == 0

        await until(done)
        samples = await scrape(port)
        assert value(samples, "layerbot_stage_duration_seconds_count",
                     stage="watch", platform=PLATFORM, outcome="ok") == 1
        assert value(samples, "layerbot_runner_tasks_waiting_for_guest") == 0
        assert_task_counts_match(samples, store)

    await run_with_metrics(store, catalog, body)
