"""Each /metrics scrape counts the tasks by status and platform (count_by_status): an index on
tasks (status, platform) answers that without reading the table or sorting it, on both backends."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.store.backends import open_store
from bot.store.interface import Store
from bot.store.postgres_store import PostgresStore
from bot.store.task_store import TaskStore


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    sqlite = request.param == "sqlite"
    location = str(tmp_path / "tasks.db") if sqlite else str(request.getfixturevalue("pg_url"))
    opened = open_store(location)
    request.addfinalizer(opened.close)
    return opened


def test_the_status_platform_index_exists_and_answers_the_count(store: Store) -> None:
    if isinstance(store, PostgresStore):
        indexes = store.rows("SELECT indexdef FROM pg_indexes WHERE tablename = 'tasks'")
        defs = [str(r["indexdef"]) for r in indexes]
        assert any(d.endswith("(status, platform)") for d in defs), defs
        return
    assert isinstance(store, TaskStore)
    plan = " | ".join(str(r["detail"]) for r in store.rows(
        "EXPLAIN QUERY PLAN SELECT status, platform, COUNT(*) AS n FROM tasks GROUP BY status, platform"))
    assert "COVERING INDEX idx_tasks_status_platform" in plan, plan
    assert "TEMP B-TREE" not in plan, plan


def test_a_task_without_a_platform_counts_under_an_empty_name(store: Store) -> None:
    for n, platform in enumerate(["Local folder", "", None, "Local folder"]):
        store.create_task(template="t", connector="c", platform=platform, image_name=f"i-{n}",  # type: ignore[arg-type]
                          requested_by="alice", message="queued")
    assert sorted(store.count_by_status()) == [("queued", "", 2), ("queued", "Local folder", 2)]
