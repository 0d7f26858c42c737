"""The SQLite task store (WAL, via sqlite-utils): the default, shared by the runner processes of
one machine.

Tables:
- ``tasks``: one row per "Publishing Layered Image" task, its status/stage/progress,
  Slack coordinates, the runner lease (and its fencing token) and the JSON handles of what
  was created.
- ``task_events``: the audit trail; every state change is written here (in the same
  transaction as the row change) before the side effect it announces.
- ``audit``: access decisions (who, what, when) from the Slack app.
- ``slack_intents``, ``slack_cursor``: confirmation cards and the notifier's position.

Every table is created by the ordered migrations of :mod:`bot.store.migrations`; the logic
shared with PostgreSQL is :class:`~bot.store.sql_store.SqlStore`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlite_utils

from bot.store.migrations import Migration
from bot.store.model import Event, LeaseLost, StoreError, StoreUnavailable, Task, TaskNotFound, new_task_id
from bot.store.sql_store import SqlStore

__all__ = ["Event", "LeaseLost", "StoreError", "Task", "TaskNotFound", "TaskStore", "default_db_path",
           "new_task_id"]


def default_db_path(explicit: Path | None) -> Path:
    if explicit is not None:
        return explicit
    env = os.environ.get("LAYERBOT_DB")
    return Path(env) if env else Path("layerbot.db")


#: how long a write waits for another process's write transaction (then StoreUnavailable)
BUSY_SECONDS_ENV = "LAYERBOT_SQLITE_BUSY_SECONDS"


def busy_seconds() -> float:
    setting = os.environ.get(BUSY_SECONDS_ENV, "30")
    try:
        seconds = float(setting)
    except ValueError:
        seconds = -1
    if not 0 < seconds < 86400:
        raise StoreError(f"{BUSY_SECONDS_ENV}={setting!r}: a number of seconds, more than 0")
    return seconds


class TaskStore(SqlStore):
    """Library-first access to the SQLite task database.

    One connection, shared by threads under a lock: the runner keeps its commits (which
    wait for fsync) off the event loop by calling the store from worker threads.
    """

    def __init__(self, path: Path | str, *, migrate: bool = True) -> None:
        """``migrate=False``: open as it is (``layerbot db upgrade`` and ``db copy`` look first)."""
        super().__init__()
        self.path = Path(path) if str(path) != ":memory:" else path
        self.location = str(path)
        self.busy_seconds = busy_seconds()
        conn = sqlite3.connect(
            str(path), timeout=self.busy_seconds, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_seconds * 1000)}")
        self.db = sqlite_utils.Database(conn)
        if str(path) != ":memory:":
            self.db.enable_wal()
        if migrate:
            self._migrate()

    @contextmanager
    def _locked_is_unavailable(self) -> Iterator[None]:
        """Another process's write transaction outlasting the busy timeout is a passing outage
        (StoreUnavailable: the runner leaves the task for later), not a crash."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            raise StoreUnavailable(f"the task database {self.location} is locked by another process "
                                   f"(waited {self.busy_seconds:g} s): {exc}") from None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self.db.conn
        with self._lock, self._locked_is_unavailable():
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _exec(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        with self._locked_is_unavailable():
            return self.db.execute(sql, list(params))

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        # sqlite-utils 4.2 wraps each query in a named savepoint: the caller holds the lock
        with self._locked_is_unavailable():
            return list(self.db.query(sql, list(params)))

    def _now(self) -> tuple[str, list[Any]]:
        # one machine's runners share this clock
        return "?", [time.time()]

    def _in(self, column: str, values: Collection[str]) -> tuple[str, list[Any]]:
        return f"{column} IN (SELECT value FROM json_each(?))", [json.dumps(list(values))]

    def _fenced(self, held: Mapping[str, int | None]) -> tuple[str, list[Any]]:
        return ("id IN (SELECT value FROM json_each(?)) AND EXISTS (SELECT 1 FROM json_each(?) AS h"
                " WHERE h.key = tasks.id AND (h.value IS NULL OR h.value = tasks.lease_generation))",
                [json.dumps(list(held)), json.dumps(held)])

    def _tags_within(self, tags: Collection[str]) -> tuple[str, list[Any]]:
        return ("NOT EXISTS (SELECT 1 FROM json_each(tasks.runner_tags) AS t"
                " WHERE t.value NOT IN (SELECT value FROM json_each(?)))", [json.dumps(sorted(set(tags)))])

    def _notify(self, channel: str, payload: str) -> None:
        pass  # no notifications: SQLite's processes share one machine and poll

    async def listen(self, channel: str, on_notice: Callable[[str], None],
                     on_ready: Callable[[], None] | None = None) -> None:
        return  # polling only

    def schema_version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def _lock_schema(self) -> None:
        pass  # BEGIN IMMEDIATE already holds the write lock

    def _lock_creates(self) -> None:
        pass  # BEGIN IMMEDIATE: one writer at a time

    def _lock_events(self) -> None:
        pass  # BEGIN IMMEDIATE: ids are given in commit order

    def _apply_migration(self, migration: Migration) -> None:
        migration.apply(self.db)

    def _set_schema_version(self, version: int) -> None:
        self.db.execute(f"PRAGMA user_version = {int(version)}")

    def set_synchronous(self, mode: str) -> None:
        if mode.lower() not in {"normal", "full"}:
            raise ValueError(f"synchronous mode {mode!r}: one of normal, full")
        with self._lock:
            self.db.execute(f"PRAGMA synchronous = {mode.upper()}")

    def close(self) -> None:
        self.db.conn.close()
