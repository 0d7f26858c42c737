"""Waiting for a guest costs no compose/upload slot: many tasks wait at once, without a thread
each, and a waiting task is resumed by another runner even while its slots are busy."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import adapters
from bot import messages
from bot.catalog import load_catalog
from bot.runner.job_runner import JobRunner
from bot.runner.task_steps import ComposeStep, Job
from bot.store import states
from bot.store.task_store import TaskStore
from compositor.spec import BuiltImage
from tests.fake_adapter import Adapter as FakeAdapter
from tests.fake_adapter import with_fake
from tests.test_runner import _worker, kinds, queue

adapters.register("fake", "tests.fake_adapter")

MANY = 150


async def _until(predicate: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def _statuses(store: TaskStore, ids: list[str]) -> list[str]:
    with store._lock:
        rows = store.db.execute(
            f"SELECT status FROM tasks WHERE id IN ({','.join('?' * len(ids))})", ids).fetchall()
    return [r[0] for r in rows]


async def test_many_tasks_wait_for_their_guests_at_once_without_a_thread_each(
        write_catalog: Callable[[str], Path], store: TaskStore, catalog_dir: Path,
        tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    cat = load_catalog(write_catalog(with_fake("upload_seconds: 0.01\npoll_max_seconds: 1")))
    assert cat.runner.max_parallel == 2
    disk = tmp_path / "disk.raw"
    disk.write_bytes(b"\0" * 4096)

    # Compositing is not what this test is about: a cheap stand-in for it, so that MANY tasks
    # go through compose and upload quickly (the slots and the watch are real).
    async def cheap_compose(self: ComposeStep, job: Job) -> None:
        await job.update(status=states.COMPOSITING, stage="compositing", progress=0.0,
                         event=("stage", messages.stage_compositing(3)))
        job.built = BuiltImage(path=disk, format="raw", virtual_size=4096, file_size=4096,
                               cache_key="k", cache_hit=True)

    working = peak = 0
    real_create = FakeAdapter._create_vm

    async def counting_create(self: FakeAdapter, ctx):  # type: ignore[no-untyped-def]
        nonlocal working, peak
        working += 1
        peak = max(peak, working)
        try:
            return await real_create(self, ctx)
        finally:
            working -= 1

    monkeypatch.setattr(ComposeStep, "run", cheap_compose)
    monkeypatch.setattr(FakeAdapter, "_create_vm", counting_create)
    ids = [queue(store, cat) for _ in range(MANY)]
    threads_before = threading.active_count()
    most_threads = 0
    runner = JobRunner(store, cat, poll_interval=0.05)
    work = asyncio.create_task(runner.run(only=ids, until_done=True))

    def all_waiting() -> bool:
        nonlocal most_threads
        most_threads = max(most_threads, threading.active_count())
        return _statuses(store, ids) == [states.ACTION_REQUIRED] * MANY

    try:
        # no guest has been powered on, yet every task got through compose and upload
        await _until(all_waiting, f"all {MANY} tasks to wait for their guests")
        assert runner.waiting == MANY and runner.busy == 0
        assert peak == cat.runner.max_parallel  # compose/upload stayed bounded
        vms = sorted((catalog_dir / "vms").glob("*.vm"))
        assert len(vms) == MANY
        await asyncio.sleep(1.5)  # the watches settle into their polling
        most_threads = max(most_threads, threading.active_count())
        # the event loop's default executor (store commits) and nothing per task
        assert most_threads - threads_before <= 12, (threads_before, most_threads)

        random.Random(9).shuffle(vms)
        for vm in vms:  # the guests shut down one by one, in another order
            Path(f"{vm}.off").touch()
        await asyncio.wait_for(asyncio.shield(work), 120)
    finally:
        work.cancel()
        await asyncio.gather(work, return_exceptions=True)
    for task_id in ids:
        events = kinds(store, task_id)
        assert store.get(task_id).status == states.DONE, store.get(task_id).error
        assert events.count("done") == 1 and events.count("disk_created") == 1, events
        assert events.count("waiting") == 1 and "resumed" not in events


def test_a_killed_runners_waiting_task_is_resumed_while_the_other_runners_slots_are_busy(
        write_catalog: Callable[[str], Path], tmp_path: Path, catalog_dir: Path) -> None:
    config = write_catalog(with_fake("upload_seconds: 0.2"))
    cat = load_catalog(config)
    db = tmp_path / "shared.db"
    store = TaskStore(db)
    waiting = queue(store, cat)
    log = tmp_path / "workers.log"
    first = _worker(config, db, log)
    try:
        deadline = time.monotonic() + 120
        while store.get(waiting).status != states.ACTION_REQUIRED:
            assert time.monotonic() < deadline, (store.get(waiting), log.read_text())
            assert first.poll() is None, log.read_text()
            time.sleep(0.05)
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    # the second runner has one slot, which a long upload takes before the lease expires
    busy_cat = load_catalog(write_catalog(with_fake("upload_seconds: 60").replace(
        "max_parallel: 2", "max_parallel: 1")))
    uploading = queue(store, busy_cat)

    async def second_runner() -> None:
        stop = asyncio.Event()
        runner = JobRunner(store, busy_cat, poll_interval=0.05)
        work = asyncio.create_task(runner.run(only=[waiting, uploading], stop=stop))
        try:
            await _until(lambda: store.get(uploading).status == states.UPLOADING,
                         "the second runner to upload", 60)
            await _until(lambda: store.get(waiting).lease_owner == runner.owner,
                         "the second runner to take the waiting task over", 30)
            assert store.get(uploading).status == states.UPLOADING
            vm = catalog_dir / "vms" / f"{store.get(waiting).image_name}.vm"
            assert vm.exists()
            Path(f"{vm}.off").touch()
            await _until(lambda: store.get(waiting).finished, "the waiting task to finish", 30)
            assert store.get(uploading).status == states.UPLOADING  # still in its slot
        finally:
            stop.set()
            await asyncio.wait_for(work, 30)

    asyncio.run(second_runner())
    task = store.get(waiting)
    assert task.status == states.DONE, task.error
    events = kinds(store, waiting)
    assert events.count("done") == 1 and events.count("disk_created") == 1
    assert events.count("waiting") == 2 and "resumed" in events and "cleanup" not in events
    assert task.attempts == 2
    store.close()


async def test_a_polling_watch_backs_off_while_nothing_changes(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from adapters.base import Backoff

    slept: list[float] = []

    async def record(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", record)
    backoff = Backoff(0.5, 5.0, factor=2)
    for _ in range(6):
        await backoff.sleep()
    backoff.reset()
    await backoff.sleep()
    assert slept == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 0.5]
