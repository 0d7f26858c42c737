"""A runner keeps one job per task: it never claims a task it still works, lets go of a task
whose lease it could not renew before the lease runs out, and renews leases even while the
default executor is busy with file copies and SDK calls."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
import types
from pathlib import Path
from typing import Any

from adapters.steps import is_detach
from bot.runner.job_runner import JobRunner
from bot.store.task_store import Task, TaskStore

LEASE = 1.5


class Probe:
    """Stands in for a task's steps: runs until stopped, and records how."""

    def __init__(self) -> None:
        self.claims = 0
        self.running = 0
        self.most_at_once = 0
        self.stops: list[bool] = []  # is_detach of each stop

    async def run_job(self, task: Task) -> None:
        self.claims += 1
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError as exc:
            self.stops.append(is_detach(exc))
            raise
        finally:
            self.running -= 1


def _runner(store: TaskStore, tmp_path: Path, probe: Probe) -> JobRunner:
    catalog: Any = types.SimpleNamespace(runner=types.SimpleNamespace(
        max_parallel=2, lease_seconds=LEASE, max_attempts=100, work_dir=tmp_path, cache_dir=tmp_path,
        ram_scratch=False, ram_scratch_dir=None))
    runner = JobRunner(store, catalog, poll_interval=0.05)
    runner._run_job = probe.run_job  # type: ignore[method-assign]
    return runner


def _queue(store: TaskStore) -> str:
    task, _ = store.create_task(template="t", connector="c", platform="p", image_name="t-1",
                                requested_by="alice", message="queued")
    return task.id


async def _run_for(runner: JobRunner, task_id: str, seconds: float) -> None:
    stop = asyncio.Event()
    work = asyncio.create_task(runner.run(only=[task_id], stop=stop))
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.wait_for(work, 30)


async def test_stalled_renewals_never_make_a_runner_claim_its_own_task_again(
        store: TaskStore, tmp_path: Path) -> None:
    task_id = _queue(store)
    probe = Probe()
    runner = _runner(store, tmp_path, probe)
    renew = store.renew_held
    stalled_until = time.monotonic() + 2.5 * LEASE

    def locked_for_a_while(*args: Any, **kwargs: Any) -> dict[str, bool]:
        if time.monotonic() < stalled_until:  # another process holds the database
            raise sqlite3.OperationalError("database is locked")
        return renew(*args, **kwargs)

    store.renew_held = locked_for_a_while  # type: ignore[method-assign]
    await _run_for(runner, task_id, 3.5 * LEASE)
    assert probe.most_at_once == 1  # one job per task, whatever the leases did
    assert probe.claims >= 2  # it let go before its lease ran out, and took the task again
    assert probe.stops and all(probe.stops)  # each job was detached, never cancelled


async def test_the_done_callback_of_an_old_job_leaves_a_newer_one_alone() -> None:
    catalog: Any = types.SimpleNamespace(runner=types.SimpleNamespace(
        max_parallel=1, lease_seconds=LEASE, max_attempts=1))
    runner = JobRunner(TaskStore(":memory:"), catalog)
    old = asyncio.create_task(asyncio.sleep(0))
    new = asyncio.create_task(asyncio.sleep(60))
    runner._jobs["t1"] = new
    runner._working.add("t1")
    await old
    runner._finished("t1", old)
    assert runner._jobs == {"t1": new} and runner._working == {"t1"}
    new.cancel()


async def test_leases_are_renewed_while_the_default_executor_is_busy(
        store: TaskStore, tmp_path: Path) -> None:
    task_id = _queue(store)
    probe = Probe()
    runner = _runner(store, tmp_path, probe)
    run = asyncio.create_task(_run_for(runner, task_id, 3 * LEASE))
    await asyncio.sleep(0.2)
    # every default worker thread copies a file / waits for an SDK call, for two leases
    workers = min(32, (os.cpu_count() or 1) + 4)
    busy = asyncio.gather(*[asyncio.to_thread(time.sleep, 2 * LEASE) for _ in range(workers)])
    await run
    await busy
    assert probe.claims == 1
    assert probe.stops == [True]  # only the stop at the end


async def test_a_job_let_go_holds_its_lease_through_its_cleanup_and_keeps_its_attempt(
        store: TaskStore, tmp_path: Path) -> None:
    """A job told to let go (renewals stalled) may be in a cleanup that must finish (shielded):
    its lease is still renewed meanwhile, so no other runner works the task alongside, and a
    stall is no crash: the attempt is given back."""
    task_id = _queue(store)
    cleaning = asyncio.Event()

    class CleansUpSlowly(Probe):
        async def run_job(self, task: Task) -> None:
            self.claims += 1
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                if self.claims == 1:
                    cleaning.set()
                    await asyncio.shield(asyncio.sleep(2 * LEASE))  # e.g. removing a VM
                raise

    probe = CleansUpSlowly()
    runner = _runner(store, tmp_path, probe)
    renew = store.renew_held
    stalled_until = time.monotonic() + 0.8 * LEASE

    def locked_for_a_while(*args: Any, **kwargs: Any) -> dict[str, bool]:
        if time.monotonic() < stalled_until:
            raise sqlite3.OperationalError("database is locked")
        return renew(*args, **kwargs)

    store.renew_held = locked_for_a_while  # type: ignore[method-assign]
    stop = asyncio.Event()
    work = asyncio.create_task(runner.run(only=[task_id], stop=stop))
    try:
        await asyncio.wait_for(cleaning.wait(), 10)
        await asyncio.sleep(1.5 * LEASE)  # past the lease, were it no longer renewed
        assert store.get(task_id).lease_until > time.time()
        assert store.claim("another-runner", 10) is None
    finally:
        await asyncio.sleep(LEASE)
        stop.set()
        await asyncio.wait_for(work, 30)
    assert store.get(task_id).attempts == 0  # neither the let-go nor the stop was a crash


async def test_a_wake_while_the_runner_looks_for_work_is_not_lost(
        catalog: Any, store: TaskStore) -> None:
    """A job that ends (or a notice that comes) while the loop is looking for work must make
    it look again at once, not after the poll: the wake was cleared after the look, and one
    PostgreSQL worker of bench/queue_bench.py did 6.7 tasks/s instead of ~90."""
    runner = JobRunner(store, catalog, poll_interval=30)
    looks: list[float] = []
    stop = asyncio.Event()

    async def fill(only: Any) -> None:
        looks.append(time.monotonic())
        if len(looks) == 1:
            runner._wake.set()  # a job ended during this look
        else:
            stop.set()
            runner._wake.set()  # (the stop is seen at the top of the loop)

    runner._fill = fill  # type: ignore[method-assign]
    await asyncio.wait_for(runner.run(stop=stop), 10)
    assert len(looks) == 2 and looks[1] - looks[0] < 5
