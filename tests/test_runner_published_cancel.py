"""A cancelled task whose VM is already published keeps it, whichever runner sees the cancel;
a resume whose cleanup cannot remove the previous attempt's leftovers fails the task."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import adapters
from bot.catalog import Catalog, load_catalog
from bot.runner.job_runner import JobRunner
from bot.store import states
from bot.store.task_store import TaskStore
from tests.fake_adapter import with_fake
from tests.test_runner import kinds, queue

adapters.register("fake", "tests.fake_adapter")


async def _until(predicate: Callable[[], bool], timeout: float = 60) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


async def _published_and_waiting(store: TaskStore, cat: Catalog, task_id: str
                                 ) -> tuple[asyncio.Event, asyncio.Task[None]]:
    stop = asyncio.Event()
    work = asyncio.create_task(JobRunner(store, cat, poll_interval=0.05).run(only=[task_id], stop=stop))
    await _until(lambda: store.get(task_id).status == states.ACTION_REQUIRED)
    return stop, work


def _assert_cancelled_and_kept(store: TaskStore, task_id: str, catalog_dir: Path) -> None:
    task = store.get(task_id)
    assert task.status == states.CANCELLED
    assert (catalog_dir / "vms" / f"{task.image_name}.vm").exists()  # the published VM is kept
    assert kinds(store, task_id)[-1] == "cancelled"
    message = store.events(task_id)[-1].message
    assert f"kept VM {task.image_name} (powered off)" in message, message
    assert "remove it at the platform" in message


async def test_a_cancel_seen_by_the_holding_runner_keeps_the_published_vm(
        write_catalog: Callable[[str], Path], store: TaskStore, catalog_dir: Path) -> None:
    cat = load_catalog(write_catalog(with_fake()))
    task_id = queue(store, cat)
    stop, work = await _published_and_waiting(store, cat, task_id)
    try:
        store.request_cancel(task_id, "bob", "Cancel requested by bob")
        await _until(lambda: store.get(task_id).finished, timeout=30)
    finally:
        stop.set()
        await asyncio.wait_for(work, 30)
    _assert_cancelled_and_kept(store, task_id, catalog_dir)


async def test_a_cancel_seen_at_claim_time_keeps_the_published_vm_too(
        write_catalog: Callable[[str], Path], store: TaskStore, catalog_dir: Path) -> None:
    cat = load_catalog(write_catalog(with_fake()))
    task_id = queue(store, cat)
    stop, work = await _published_and_waiting(store, cat, task_id)
    stop.set()  # a clean service restart ...
    await asyncio.wait_for(work, 30)
    store.request_cancel(task_id, "bob", "Cancel requested by bob")  # ... while nobody holds it
    runner = JobRunner(store, cat, poll_interval=0.05)
    await asyncio.wait_for(runner.run(only=[task_id], until_done=True), 30)
    _assert_cancelled_and_kept(store, task_id, catalog_dir)


async def test_a_resume_that_cannot_remove_the_partial_vm_fails_and_keeps_it_recorded(
        write_catalog: Callable[[str], Path], store: TaskStore, catalog_dir: Path) -> None:
    cat = load_catalog(write_catalog(with_fake()))
    task_id = queue(store, cat)
    stuck = catalog_dir / "vms" / "left-by-a-dead-runner.vm"
    stuck.mkdir(parents=True)  # removing it fails (a directory): the platform refuses
    assert store.claim("dead-runner", 0.01) is not None
    for status in (states.COMPOSITING, states.UPLOADING):
        store.update(task_id, "dead-runner", status=status)
    store.db.execute("UPDATE tasks SET resources = ? WHERE id = ?",
                     [json.dumps([{"kind": "fake.vm", "path": str(stuck)}]), task_id])
    runner = JobRunner(store, cat, poll_interval=0.05)
    await asyncio.wait_for(runner.run(only=[task_id], until_done=True), 60)
    task = store.get(task_id)
    assert task.status == states.FAILED
    assert task.error is not None
    assert "could not remove VM left-by-a-dead-runner.vm" in task.error
    assert "Is a directory" in task.error  # the platform's own words
    assert [r["path"] for r in task.resources] == [str(stuck)]  # nothing silently orphaned
    assert stuck.exists() and not [p for p in (catalog_dir / "vms").iterdir() if p != stuck]
    assert "disk_created" not in kinds(store, task_id)
