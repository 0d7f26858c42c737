"""A runner that stops cleanly (Ctrl-C, a service stop) detaches its tasks without using up
one of their max_attempts; the next runner resumes them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import adapters
from bot.catalog import load_catalog
from bot.runner.job_runner import JobRunner
from bot.store import states
from bot.store.task_store import TaskStore
from tests.fake_adapter import with_fake
from tests.test_runner import queue

adapters.register("fake", "tests.fake_adapter")


async def _until(predicate: Callable[[], bool], timeout: float = 60) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


async def test_clean_stops_do_not_count_as_attempts(
    write_catalog: Callable[[str], Path], store: TaskStore, catalog_dir: Path,
) -> None:
    text = with_fake("upload_seconds: 30").replace("  lease_seconds: 3\n",
                                                    "  lease_seconds: 3\n  max_attempts: 1\n")
    cat = load_catalog(write_catalog(text))
    task_id = queue(store, cat)
    for _ in range(3):  # more clean stops than max_attempts allows crashes
        stop = asyncio.Event()
        runner = JobRunner(store, cat, poll_interval=0.05)
        run = asyncio.create_task(runner.run(only=[task_id], stop=stop))
        await _until(lambda: store.get(task_id).status == states.UPLOADING
                     and store.get(task_id).lease_owner is not None)
        stop.set()
        await asyncio.wait_for(run, 30)
        task = store.get(task_id)
        assert task.lease_owner is None and task.attempts == 0 and not task.finished
    resumed = [e for e in store.events(task_id) if e.message.startswith("Resumed by runner")]
    assert len(resumed) == 2 and all("(attempt 1)" in e.message for e in resumed)

    quick = load_catalog(write_catalog(text.replace("upload_seconds: 30", "upload_seconds: 0.2")))
    runner = JobRunner(store, quick, poll_interval=0.05)
    run = asyncio.create_task(runner.run(only=[task_id], until_done=True))
    await _until(lambda: store.get(task_id).status == states.ACTION_REQUIRED)
    [vm] = (catalog_dir / "vms").glob("*.vm")
    Path(f"{vm}.off").touch()
    await asyncio.wait_for(run, 60)
    assert store.get(task_id).status == states.DONE
