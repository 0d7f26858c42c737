"""`layerbot db copy SQLITE_PATH POSTGRES_URL`: everything a team's SQLite history holds, read back
equal through the store interface; refused on a non-empty target; errors without the password."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from bot.cli.commands import main
from bot.slack.intents import IntentStore
from bot.store import states
from bot.store.backends import open_store
from bot.store.interface import Store
from bot.store.states import EventKind
from bot.store.task_store import TaskStore


def db_copy(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["db", "copy", *args], terminal_width=200)
    return result.exit_code, result.output


def snapshot(store: Store) -> dict[str, object]:
    return {
        "tasks": store.list_tasks(limit=1000),
        "events": store.events(),
        "audit": store.rows('SELECT id, at, "user", action, target, allowed, reason FROM audit ORDER BY id'),
        "intents": store.rows('SELECT * FROM slack_intents ORDER BY id'),
        "cursor": store.rows("SELECT * FROM slack_cursor ORDER BY name"),
    }


@pytest.fixture
def history(tmp_path: Path) -> Path:
    """A SQLite database with a few tasks in several states, their events, audit and Slack rows."""
    path = tmp_path / "layerbot.db"
    store = TaskStore(path)
    try:
        tasks = [store.create_task(template=f"tpl{i}", connector="lab", platform="Local folder",
                                   image_name=f"img-{i}", requested_by="alice", message="queued",
                                   idempotency_key=f"k{i}", channel="C1")[0] for i in range(3)]
        claimed = store.claim("runner-a", 60, [tasks[0].id])
        assert claimed is not None
        fence = claimed.lease_generation
        store.update(tasks[0].id, "runner-a", fence=fence, status=states.COMPOSITING, stage="compose",
                     progress=40.5, event=(EventKind.STAGE, "Compositing"), data={"layers": 3})
        store.update(tasks[0].id, "runner-a", fence=fence, status=states.FAILED, error="boom",
                     event=(EventKind.FAILED, "Failed: boom"))
        store.release(tasks[0].id, "runner-a", fence=fence)
        store.request_cancel(tasks[1].id, "bob", "Cancel requested by bob")
        store.audit("alice", "publish", "tpl0", True, "allowed: user")
        store.audit("mallory", "publish", "tpl1", False, "not in access list")
        IntentStore(store).create("alice", "C1", ["tpl0", "tpl2"], "none")
        with store.transaction():
            store.execute("INSERT INTO slack_cursor (name, event_id) VALUES (?, ?)",
                          ["notifier", store.last_event_id()])
    finally:
        store.close()
    return path


def test_copy_reads_back_equal_and_continues_the_event_ids(history: Path, pg_url: str) -> None:
    code, out = db_copy(str(history), pg_url)
    assert code == 0, out
    assert "3 tasks" in out and "2 audit" in out and "1 slack_intents" in out and "1 slack_cursor" in out
    source, target = open_store(str(history)), open_store(pg_url)
    try:
        before = snapshot(source)
        assert before["events"] and snapshot(target) == before
        last = target.last_event_id()
        task, _ = target.create_task(template="new", connector="lab", platform="Local folder",
                                     image_name="img-new", requested_by="carol", message="queued")
        assert [e.id for e in target.events(task.id)] == [last + 1]  # the sequence moved past the copy
        target.audit("carol", "publish", "new", True, "allowed")
        assert target.rows("SELECT max(id) AS id FROM audit")[0]["id"] == 3
    finally:
        source.close()
        target.close()


def test_copy_into_a_non_empty_target_is_refused_unless_forced(history: Path, pg_url: str) -> None:
    assert db_copy(str(history), pg_url)[0] == 0
    target = open_store(pg_url)
    try:
        target.audit("carol", "publish", "x", True, "allowed")
    finally:
        target.close()
    code, out = db_copy(str(history), pg_url)
    assert code == 1 and "is not empty (3 tasks" in out and "--force" in out
    code, out = db_copy(str(history), pg_url, "--force")
    assert code == 0 and "replaced 3 tasks" in out and "3 audit" in out
    source, target = open_store(str(history)), open_store(pg_url)
    try:
        assert snapshot(target) == snapshot(source)  # carol's audit row was replaced, not merged
    finally:
        source.close()
        target.close()


def test_a_wrong_url_fails_naming_it_without_the_password(
        history: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    password = "s3cr3t-" + "pw"
    monkeypatch.setenv("PGPASSWORD", password)
    wrong_db = pg_url.rsplit("/", 1)[0] + "/no_such_db"
    code, out = db_copy(str(history), wrong_db)
    assert code == 2 and f"cannot connect to the task database {wrong_db}" in out
    assert password not in out
    with_password = pg_url.replace("postgresql://layerbot@", f"postgresql://layerbot:{password}@")
    code, out = db_copy(str(history), with_password)
    assert code == 2 and "layerbot:***@" in out and password not in out


def test_a_task_a_runner_still_holds_in_sqlite_is_not_copied(history: Path, pg_url: str) -> None:
    store = TaskStore(history)
    try:
        held = store.claim("runner-b", 600)
        assert held is not None
    finally:
        store.close()
    code, out = db_copy(str(history), pg_url)
    assert code == 1 and f"held by a running runner, e.g. {held.id} by runner-b" in out
    target = open_store(pg_url)
    try:
        assert target.list_tasks() == []
    finally:
        target.close()
