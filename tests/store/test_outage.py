"""The database goes away and comes back (pg_ctl stop, then start on the same port): the
store's connection is opened again, and a worker carries on."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bot.catalog import load_catalog
from bot.runner.planning import enqueue, plan
from bot.store import states
from bot.store.backends import open_store
from bot.store.model import StoreUnavailable
from bot.store.states import EventKind
from tests.store.pg_cluster import PgCluster
from tests.store.workers import (
    done_once,
    leftover_temp_files,
    machine,
    start_worker,
    stop_workers,
    wait_finished,
)

OUTAGE_SECONDS = 20


def test_a_lost_connection_is_retryable_and_opened_again(pg_url: str, postgres: PgCluster) -> None:
    store = open_store(pg_url)
    assert store.list_tasks() == []
    postgres.stop()
    try:
        with pytest.raises(StoreUnavailable, match="task database") as lost:
            store.list_tasks()
        assert postgres.password not in str(lost.value)
        with pytest.raises(StoreUnavailable, match="cannot be reached"):
            store.list_tasks()  # still down: a new connection is refused the same way
    finally:
        postgres.start()
    assert store.list_tasks() == []
    store.close()


def test_a_worker_carries_on_after_a_20_s_outage(
    pg_url: str, postgres: PgCluster, catalog_dir: Path, tmp_path: Path,
) -> None:
    published = tmp_path / "published"
    config = machine(tmp_path / "m", catalog_dir / "layers", published, lease_seconds=3)
    store = open_store(pg_url)
    catalog = load_catalog(config)
    ids = [enqueue(store, plan(catalog, "plain", check_cache=False), requested_by="alice")[0].id
           for _ in range(8)]
    worker = start_worker(config, pg_url, tmp_path / "worker.log")
    try:
        wait_finished(store, ids[:1], 120, [worker])
        postgres.stop()
        try:
            time.sleep(OUTAGE_SECONDS)
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
        finally:
            postgres.start()
        wait_finished(store, ids, 180, [worker])
    finally:
        codes = stop_workers([worker])
    log = (tmp_path / "worker.log").read_text()
    assert codes == [0], log[-3000:]
    print("after the outage:", done_once(store, ids, published))
    store.close()


def test_a_session_ended_by_the_server_mid_transaction_is_retryable_and_opened_again(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A runner frozen inside a transaction past idle_in_transaction_session_timeout wakes to a
    session the server has ended: StoreUnavailable (the runner detaches and retries), not an
    unexpected error that fails its task."""
    from bot.store import postgres_store

    monkeypatch.setattr(postgres_store, "IDLE_IN_TRANSACTION_MS", 200)
    store = open_store(pg_url)
    try:
        with pytest.raises(StoreUnavailable, match="was lost"), store.transaction():  # type: ignore[attr-defined]
            store.list_tasks()
            time.sleep(1.0)  # frozen, as by SIGSTOP
            store.list_tasks()
        assert store.list_tasks() == []  # opened again
    finally:
        store.close()


def test_a_task_under_way_through_a_restart_is_done_once_after_it(
    pg_url: str, postgres: PgCluster, catalog_dir: Path, tmp_path: Path,
) -> None:
    """PostgreSQL restarted while a task is under way (issue 18 part 3): the worker sees the
    connection closed, carries on, and the task is done once after the restart, nothing left
    behind."""
    published = tmp_path / "published"
    config = machine(tmp_path / "m", catalog_dir / "layers", published, lease_seconds=3)
    store = open_store(pg_url)
    queued = enqueue(store, plan(load_catalog(config), "plain", check_cache=False), requested_by="alice")
    task_id = queued[0].id
    worker = start_worker(config, pg_url, tmp_path / "worker.log")
    try:
        deadline = time.monotonic() + 60
        while store.get(task_id).status == states.QUEUED:
            assert time.monotonic() < deadline and worker.poll() is None, worker.log.read_text()[-3000:]
            time.sleep(0.01)
        assert store.get(task_id).status not in states.TERMINAL  # restarted mid-task
        restarted_at = time.time()
        postgres.stop()
        postgres.start()
        wait_finished(store, [task_id], 120, [worker])
        log = worker.log.read_text()
        assert "server closed the connection" in log and "Traceback" not in log, log[-3000:]
        done_at = [e.at for e in store.events(task_id) if e.kind == EventKind.DONE]
        assert done_at and done_at[0] > restarted_at, "the task was done before the restart"
        done_once(store, [task_id], published)
        assert leftover_temp_files(tmp_path / "m") == []
    finally:
        codes = stop_workers([worker])
        store.close()
    assert codes == [0], worker.log.read_text()[-3000:]
