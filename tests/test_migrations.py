"""The schema registry: ordered, applied once, resumable, and refusing newer databases."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from bot.store import migrations
from bot.store.migrations import LATEST, MIGRATIONS, Migration, SchemaTooNew, migrate, schema_version
from bot.store.task_store import TaskStore

TABLES = {"tasks", "task_events", "audit", "slack_intents", "slack_cursor"}


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_the_registry_is_numbered_one_by_one() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert len(MIGRATIONS) == LATEST


def test_a_new_database_gets_every_table_of_every_migration(tmp_path: Path) -> None:
    store = TaskStore(tmp_path / "t.db")
    assert schema_version(store) == LATEST
    assert _tables(tmp_path / "t.db") >= TABLES
    assert migrate(store) == []  # nothing left to apply


def test_a_version_1_database_is_upgraded_and_keeps_its_tasks(tmp_path: Path) -> None:
    """A database written by the release whose schema was version 1 (no Slack tables)."""
    db = tmp_path / "old.db"
    store = TaskStore(db)
    task, _ = store.create_task(template="t", connector="c", platform="local", image_name="t-1",
                                requested_by="U1", message="queued")
    with store.transaction():
        store.db.execute("DROP TABLE slack_intents")
        store.db.execute("DROP TABLE slack_cursor")
        store.db.execute("PRAGMA user_version = 1")
    store.close()
    reopened = TaskStore(db)
    assert schema_version(reopened) == LATEST
    assert _tables(db) >= TABLES
    assert reopened.get(task.id).template == "t"


def test_a_database_of_a_newer_layerbot_is_refused(tmp_path: Path) -> None:
    TaskStore(tmp_path / "t.db").close()
    with sqlite3.connect(tmp_path / "t.db") as conn:
        conn.execute(f"PRAGMA user_version = {LATEST + 1}")
    with pytest.raises(SchemaTooNew, match=rf"schema version {LATEST + 1}, newer than this layerbot"):
        TaskStore(tmp_path / "t.db")


def test_a_failing_migration_leaves_the_database_at_the_version_before(tmp_path: Path) -> None:
    store = TaskStore(tmp_path / "t.db")

    def broken(db: object) -> None:
        store.db.execute("CREATE TABLE half_done (x INTEGER)")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        migrate(store, (*MIGRATIONS, Migration(LATEST + 1, "broken", broken)))
    assert schema_version(store) == LATEST
    assert "half_done" not in _tables(tmp_path / "t.db")


def test_two_stores_opening_one_new_database_apply_each_migration_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    lock = threading.Lock()

    def counted(m: Migration) -> Migration:
        def apply(db: object) -> None:
            with lock:
                calls.append(m.version)
            m.apply(db)  # type: ignore[arg-type]
        return Migration(m.version, m.summary, apply)

    monkeypatch.setattr(migrations, "MIGRATIONS", tuple(counted(m) for m in MIGRATIONS))
    stores: list[TaskStore] = []
    threads = [threading.Thread(target=lambda: stores.append(TaskStore(tmp_path / "t.db")))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(stores) == 4
    assert sorted(calls) == [m.version for m in MIGRATIONS]


def test_opening_an_up_to_date_database_takes_no_write_lock(tmp_path: Path) -> None:
    """Another process writing (here: holding the write lock) does not delay an open."""
    db = tmp_path / "t.db"
    store = TaskStore(db)
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    try:
        store.db.execute("PRAGMA busy_timeout = 50")  # a lock attempt fails at once
        assert migrate(store) == []
    finally:
        writer.execute("ROLLBACK")
        writer.close()
        store.close()
