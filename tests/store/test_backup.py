"""``layerbot db backup``: an online copy of the SQLite task database while a runner writes."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from bot.cli.commands import main
from bot.store.task_store import TaskStore


def _create_tasks(path: Path, stop: threading.Event, created: list[int]) -> None:
    store = TaskStore(path)
    try:
        while not stop.is_set():
            store.create_task(template="win10", connector="lab", platform="local", image_name="img",
                              requested_by="U1", message="queued")
            created[0] += 1
    finally:
        store.close()


def _counts(path: Path) -> tuple[str, int, int]:
    with sqlite3.connect(path) as conn:
        return (conn.execute("PRAGMA integrity_check").fetchone()[0],
                conn.execute("SELECT count(*) FROM tasks").fetchone()[0],
                conn.execute("SELECT count(*) FROM task_events").fetchone()[0])


def test_a_backup_taken_while_a_runner_writes_is_consistent(tmp_path: Path) -> None:
    db = tmp_path / "layerbot.db"
    TaskStore(db).close()
    stop, created = threading.Event(), [0]
    writer = threading.Thread(target=_create_tasks, args=(db, stop, created))
    writer.start()
    try:
        while created[0] < 20:  # the writer is under way
            stop.wait(0.01)
        copies = []
        for n in range(3):
            before = created[0]
            copy = tmp_path / f"backup-{n}.db"
            result = CliRunner().invoke(main, ["--db", str(db), "db", "backup", str(copy)])
            assert result.exit_code == 0, result.output
            copies.append((copy, before, created[0], result.output))
    finally:
        stop.set()
        writer.join(timeout=30)
    assert copies[-1][2] > copies[0][1]  # the writer committed while the backups ran
    for copy, before, after, output in copies:
        check, tasks, events = _counts(copy)
        assert check == "ok"
        assert before <= tasks <= after + 1  # every committed task, none half-written
        assert events == tasks  # a task and its first event commit together
        assert f"{tasks} tasks, {events} events" in output and "integrity ok" in output
        assert not copy.with_name(copy.name + "-wal").exists()  # one self-contained file
    assert not list(tmp_path.glob(".*partial*"))


def test_a_backup_never_overwrites_and_names_what_is_wrong(tmp_path: Path) -> None:
    db = tmp_path / "layerbot.db"
    TaskStore(db).close()
    existing = tmp_path / "old-backup.db"
    existing.write_bytes(b"an older backup")

    def backup(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(main, [*args, "db", "backup", str(existing)])
        return result.exit_code, result.output

    code, output = backup("--db", str(db))
    assert code == 1 and f"{existing}: already exists" in output
    assert existing.read_bytes() == b"an older backup"
    code, output = backup("--db", str(tmp_path / "missing.db"))
    assert code == 1 and f"{tmp_path / 'missing.db'}: no such SQLite task database" in output
    code, output = backup("--db", "postgresql://layerbot@db.example/layerbot")
    assert code == 2 and "pg_dump" in output


def test_a_restored_backup_opens_as_the_task_database(tmp_path: Path) -> None:
    db = tmp_path / "layerbot.db"
    store = TaskStore(db)
    task, _ = store.create_task(template="win10", connector="lab", platform="local", image_name="img",
                                requested_by="U1", message="queued")
    store.close()
    copy = tmp_path / "restore" / "layerbot.db"
    copy.parent.mkdir()
    assert CliRunner().invoke(main, ["--db", str(db), "db", "backup", str(copy)]).exit_code == 0
    restored = TaskStore(copy)
    try:
        assert restored.get(task.id).template == "win10"
    finally:
        restored.close()


def test_a_file_made_during_the_copy_is_not_overwritten(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.store import backup

    TaskStore(tmp_path / "live.db").close()
    destination = tmp_path / "backup.db"
    copy = backup._copy

    def copy_then_someone_writes_the_name(source: Path, target: Path) -> backup.BackupResult:
        result = copy(source, target)
        destination.write_text("someone else's file")  # after the exists() check
        return result

    monkeypatch.setattr(backup, "_copy", copy_then_someone_writes_the_name)
    with pytest.raises(backup.BackupError, match=r"backup\.db: already exists"):
        backup.backup_sqlite(tmp_path / "live.db", destination)
    assert destination.read_text() == "someone else's file"
    assert sorted(p.name for p in tmp_path.iterdir() if "partial" in p.name) == []
