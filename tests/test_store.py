from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from bot.store import states
from bot.store.task_store import LeaseLost, TaskStore


def new_task(store: TaskStore, key: str | None = None):
    return store.create_task(template="t", connector="c", platform="Local folder", image_name="t-1",
                             requested_by="alice", message="queued", idempotency_key=key)


def test_claim_is_atomic_across_processes_sharing_the_file(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    TaskStore(path).close()
    ids = {new_task(TaskStore(path))[0].id for _ in range(5)}
    claimed: list[str] = []
    lock = threading.Lock()

    def claimer(owner: str) -> None:
        s = TaskStore(path)
        while (task := s.claim(owner, 60)) is not None:
            with lock:
                claimed.append(task.id)

    threads = [threading.Thread(target=claimer, args=(f"r{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(ids)  # each task exactly once


def test_cancel_of_a_queued_task_is_immediate(store: TaskStore) -> None:
    task, _ = new_task(store)
    cancelled = store.request_cancel(task.id, "bob", "Cancel requested by bob")
    assert cancelled.status == states.CANCELLED and cancelled.finished_at
    assert store.claim("r", 10) is None


def test_cancel_of_a_running_task_is_left_to_its_runner(store: TaskStore) -> None:
    task, _ = new_task(store)
    store.claim("r", 10)
    after = store.request_cancel(task.id, "bob", "Cancel requested by bob")
    assert after.status == states.QUEUED and after.cancel_requested == 1


def _fail_event_inserts(store: TaskStore, kind: str) -> None:
    """Make SQLite refuse every task_events row of ``kind`` (a disk error, a constraint)."""
    store.db.execute(
        "CREATE TRIGGER refuse_event BEFORE INSERT ON task_events"
        f" WHEN NEW.kind = '{kind}' BEGIN SELECT RAISE(ABORT, 'event refused'); END"
    )


def test_a_failed_event_insert_leaves_the_task_unchanged(tmp_path: Path) -> None:
    store = TaskStore(tmp_path / "tasks.db")
    task, _ = new_task(store)
    store.claim("r", 10)
    _fail_event_inserts(store, "stage")
    with pytest.raises(sqlite3.IntegrityError, match="event refused"):
        store.update(task.id, "r", status=states.COMPOSITING, stage="compositing",
                     event=("stage", "Compositing 3 layers"))
    store.close()
    reopened = TaskStore(tmp_path / "tasks.db")  # what another process sees
    assert reopened.get(task.id).status == states.QUEUED
    assert [e.kind for e in reopened.events(task.id)] == ["created"]
    # the connection is usable afterwards: the failed transaction was rolled back
    assert reopened.update(task.id, "r", stage="x").stage == "x"


def test_a_failed_created_event_creates_no_task(tmp_path: Path) -> None:
    store = TaskStore(tmp_path / "tasks.db")
    _fail_event_inserts(store, "created")
    with pytest.raises(sqlite3.IntegrityError, match="event refused"):
        new_task(store, key="k1")
    assert store.list_tasks() == []
    store.db.execute("DROP TRIGGER refuse_event")
    assert new_task(store, key="k1")[1] is True  # the key was not taken by a half-made task


def test_a_failed_cancel_event_leaves_the_task_queued(store: TaskStore) -> None:
    task, _ = new_task(store)
    _fail_event_inserts(store, "cancelled")
    with pytest.raises(sqlite3.IntegrityError, match="event refused"):
        store.request_cancel(task.id, "bob", "Cancel requested by bob")
    assert store.get(task.id).status == states.QUEUED


def test_one_statement_renews_every_held_lease_and_reports_lost_and_cancelled(
        store: TaskStore) -> None:
    ids = [new_task(store)[0].id for _ in range(300)]
    for _ in ids:
        store.claim("a", 30)
    assert {t.lease_owner for t in store.list_tasks(limit=1000)} == {"a"}
    store.db.execute("UPDATE tasks SET lease_until = 0")  # every lease of a has expired
    stolen = store.claim("b", 10)  # a's leases expired; b takes the oldest task
    assert stolen is not None and stolen.id == ids[0]
    store.request_cancel(ids[1], "bob", "Cancel requested by bob")
    statements: list[str] = []
    store.db.conn.set_trace_callback(statements.append)
    renewed = store.renew_held("a", ids, 30)
    store.db.conn.set_trace_callback(None)
    assert [s for s in statements if s.startswith("UPDATE")] == [statements[1]]
    assert set(renewed) == set(ids[1:])  # lost: the one b holds
    assert renewed[ids[1]] is True and not any(renewed[i] for i in ids[2:])
    assert all(store.get(i).lease_until > time.time() + 20 for i in ids[1:])
    assert store.claim("b", 10) is None  # the renewed leases hold


def test_a_runner_without_free_slots_claims_only_published_tasks(store: TaskStore) -> None:
    queued, _ = new_task(store)
    waiting, _ = new_task(store)
    store.claim("a", 0.2)
    store.claim("a", 0.2)
    store.update(waiting.id, "a", published={"link": "x", "summary": "VM", "resource": {}})
    time.sleep(0.3)  # runner a died
    assert store.claim("b", 10, published_only=True).id == waiting.id
    assert store.claim("b", 10, published_only=True) is None
    assert store.claim("b", 10).id == queued.id


def test_an_event_of_an_unknown_kind_is_refused_and_kinds_read_back_as_the_enum(
        store: TaskStore) -> None:
    task, _ = new_task(store)
    with pytest.raises(ValueError, match="'finished' is not a valid EventKind"):
        store.update(task.id, None, stage="x", event=("finished", "typo"))
    assert store.get(task.id).stage != "x"  # the change went with its event
    assert [e.kind for e in store.events(task.id)] == [states.EventKind.CREATED]


def test_an_update_by_a_runner_whose_lease_was_taken_is_lease_lost_whatever_the_status(
        store: TaskStore) -> None:
    task, _ = new_task(store)
    store.claim("b", 30)
    for status in (states.COMPOSITING, states.UPLOADING, states.ACTION_REQUIRED, states.DONE):
        store.update(task.id, "b", status=status)
    # runner a (its lease taken over by b) fails its task: no transition from done is valid
    for status in (states.FAILED, states.DONE):
        with pytest.raises(LeaseLost):
            store.update(task.id, "a", status=status, error="late")
    assert store.get(task.id).status == states.DONE


def test_an_event_kind_of_a_newer_layerbot_is_read_as_a_plain_string(store: TaskStore) -> None:
    task, _ = new_task(store)
    store.db.execute("INSERT INTO task_events (task_id, at, kind, message, data)"
                     " VALUES (?, ?, 'snapshot_taken', 'Snapshot taken', '{}')", [task.id, time.time()])
    events = store.events(task.id)
    assert [e.kind for e in events] == [states.EventKind.CREATED, "snapshot_taken"]
    assert isinstance(events[0].kind, states.EventKind)
    with pytest.raises(ValueError, match="'snapshot_taken' is not a valid EventKind"):
        store.add_event(task.id, "snapshot_taken", "writes stay strict")  # type: ignore[arg-type]


def test_two_tasks_never_share_an_image_name(store: TaskStore) -> None:
    """Random parts may collide (many publishes of one template in one second): the store
    keeps every task's VM/image name unique."""
    names = []
    for n in range(3):
        task, _ = store.create_task(template="t", connector="c", platform="local",
                                    image_name="t-20261202-000000-abcdef", requested_by="U1",
                                    message="queued", idempotency_key=f"k{n}")
        names.append(task.image_name)
    assert names == ["t-20261202-000000-abcdef", "t-20261202-000000-abcdef-2",
                     "t-20261202-000000-abcdef-3"]


def test_plain_reads_and_writes_from_threads_sharing_the_connection_do_not_interleave(
        tmp_path: Path) -> None:
    """sqlite-utils wraps a query in a savepoint; a commit of another thread landing inside
    it failed CI once ("no such savepoint"). Store.rows/execute take the store's lock."""
    store = TaskStore(tmp_path / "shared.db")
    errors: list[BaseException] = []

    def repeat(action) -> None:
        try:
            for _ in range(1500):
                action()
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=repeat, args=(lambda: store.rows("SELECT * FROM audit LIMIT 1"),)),
        threading.Thread(target=repeat, args=(lambda: store.execute(
            "UPDATE audit SET reason = reason WHERE id = 0"),)),
        threading.Thread(target=repeat, args=(lambda: store.audit("u", "a", "t", True, "r"),)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.rows("SELECT COUNT(*) AS n FROM audit") == [{"n": 1500}]
    store.close()
