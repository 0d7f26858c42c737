"""Fencing across processes: a `layerbot worker` frozen with SIGSTOP past its lease while it
works a task, the task taken over by another worker, then SIGCONT. The frozen worker's writes
are refused (its renewal finds the lease gone, its fenced writes raise LeaseLost), it detaches
and carries on; the task is done once, by the worker that took it over."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

from bot.catalog import load_catalog
from bot.runner.planning import enqueue, plan
from bot.store import states
from bot.store.backends import open_store
from bot.store.interface import Store
from bot.store.states import EventKind
from tests.store.workers import WorkerProcess, done_once, machine, start_worker, stop_workers, wait_finished

LEASE_SECONDS = 2
#: a task is done in about a second here: freezing the worker while it holds one may miss
FREEZE_TRIES = 5


def wait_until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.005)


def freeze_while_working(store: Store, worker: WorkerProcess, owner: str, ids: list[str],
                         enqueue_one: Callable[[], str]) -> str:
    """Queue tasks one at a time until the worker is frozen while it holds one unfinished;
    returns that task's id."""
    for _ in range(FREEZE_TRIES):
        task_id = enqueue_one()
        ids.append(task_id)

        def claimed_or_finished(task_id: str = task_id) -> bool:
            task = store.get(task_id)
            return task.lease_owner == owner or task.finished

        wait_until(claimed_or_finished, 30, f"{owner} claims {task_id}")
        worker.send_signal(signal.SIGSTOP)
        task = store.get(task_id)
        if task.lease_owner == owner and not task.finished:
            return task_id
        worker.send_signal(signal.SIGCONT)  # it finished before the freeze: another one
        wait_finished(store, [task_id], 30, [worker])
    raise AssertionError(f"the worker finished each of {FREEZE_TRIES} tasks before it could be frozen")


def test_a_worker_frozen_past_its_lease_is_fenced_off_and_the_task_ends_once(
    pg_url: str, catalog_dir: Path, tmp_path: Path,
) -> None:
    published = tmp_path / "published"
    configs = [machine(tmp_path / name, catalog_dir / "layers", published, lease_seconds=LEASE_SECONDS)
               for name in ("frozen", "other")]
    store = open_store(pg_url)
    try:  # a failure must not leave the connection open: its ResourceWarning fails later tests
        _fence_and_take_over(store, configs, pg_url, tmp_path)
    finally:
        store.close()


def _fence_and_take_over(store: Store, configs: list[Path], pg_url: str, tmp_path: Path) -> None:
    published = tmp_path / "published"
    catalog = load_catalog(configs[0])
    ids: list[str] = []
    frozen = start_worker(configs[0], pg_url, tmp_path / "frozen.log")
    workers = [frozen]
    try:
        frozen_owner = frozen.wait_ready()
        task_id = freeze_while_working(
            store, frozen, frozen_owner, ids,
            lambda: enqueue(store, plan(catalog, "plain", check_cache=False), requested_by="alice")[0].id)
        held = store.get(task_id)
        other = start_worker(configs[1], pg_url, tmp_path / "other.log")
        workers.append(other)
        other_owner = other.wait_ready()
        # the lease runs out on the database's clock; the other worker takes the task over
        wait_until(lambda: store.get(task_id).lease_owner == other_owner or store.get(task_id).finished,
                   LEASE_SECONDS + 30, f"{other_owner} takes {task_id} over")
        taken = store.get(task_id)
        assert taken.lease_generation > held.lease_generation
        frozen.send_signal(signal.SIGCONT)
        wait_finished(store, ids, 60, workers)
        # the woken worker learns it lost the task, then goes on running
        # (or, frozen inside a transaction past the server's idle timeout, finds its session ended)
        detached = (f"task {task_id}: lease lost", f"task {task_id}: lease not renewed",
                    f"task {task_id}: left for later")
        wait_until(lambda: any(line in frozen.log.read_text() for line in detached),
                   10, "the woken worker detaches")
        assert frozen.poll() is None, frozen.log.read_text()[-3000:]
    finally:
        for w in workers:
            w.send_signal(signal.SIGCONT)
        codes = stop_workers(workers)
    log = frozen.log.read_text()
    assert codes == [0, 0], [w.log.read_text()[-2000:] for w in workers]
    counts = done_once(store, ids, published)
    done = [e for e in store.events(task_id) if e.kind == EventKind.DONE]
    assert [e.data["runner"] for e in done] == [other_owner]
    assert store.get(task_id).status == states.DONE
    assert "Traceback" not in log, log[-3000:]
    print(f"fencing: {task_id} held by {frozen_owner} (fence {held.lease_generation}), taken over by "
          f"{other_owner} (fence {taken.lease_generation}); {counts}")
