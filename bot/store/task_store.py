"""The task store: SQLite (WAL) via sqlite-utils, shared by every runner process.

Tables:
- ``tasks``: one row per "Publishing Layered Image" task, its status/stage/progress,
  Slack coordinates, the runner lease and the JSON handles of what was created.
- ``task_events``: the audit trail; every state change is written here (in the same
  transaction as the row change) before the side effect it announces.
- ``audit``: access decisions (who, what, when) from the Slack app.
- ``slack_intents``, ``slack_cursor``: confirmation cards and the notifier's position.

Every table is created by the ordered migrations of :mod:`bot.store.migrations`.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

from adapters.steps import Detach
from bot.store import states
from bot.store.migrations import migrate
from bot.store.states import EventKind


class TaskNotFound(KeyError):
    def __str__(self) -> str:
        return f"no task with id {self.args[0]!r}"


class LeaseLost(Detach):
    """Another runner owns the task now; this runner must stop touching it."""


@dataclass(frozen=True)
class Task:
    id: str
    template: str
    connector: str
    platform: str
    status: str
    stage: str
    progress: float
    requested_by: str
    channel: str | None
    message_ts: str | None
    thread_ts: str | None
    idempotency_key: str | None
    link: str | None
    error: str | None
    created_at: float
    updated_at: float
    finished_at: float | None
    image_name: str
    lease_owner: str | None
    lease_until: float
    cancel_requested: int
    attempts: int
    #: JSON of adapters.resources (a list); a dict in rows written before resources were typed
    resources: list[Any] | dict[str, Any]
    published: dict[str, Any] | None

    @property
    def finished(self) -> bool:
        return self.status in states.TERMINAL

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Task:
        data = dict(row)
        data["resources"] = json.loads(data["resources"] or "[]")
        data["published"] = json.loads(data["published"]) if data["published"] else None
        return cls(**data)


@dataclass(frozen=True)
class Event:
    id: int
    task_id: str
    at: float
    #: a plain string for a kind this layerbot does not know (written by a newer one)
    kind: states.EventKind | str
    message: str
    data: dict[str, Any]


def _read_kind(kind: str) -> states.EventKind | str:
    """Writes are strict, reads are not: a newer layerbot sharing the database may write a
    kind this one does not know, and its readers (CLI, notifier) must keep going."""
    try:
        return states.EventKind(kind)
    except ValueError:
        return kind


def default_db_path(explicit: Path | None) -> Path:
    if explicit is not None:
        return explicit
    env = os.environ.get("LAYERBOT_DB")
    return Path(env) if env else Path("layerbot.db")


def new_task_id() -> str:
    return "t" + secrets.token_hex(4)


class TaskStore:
    """Library-first access to the task database.

    One connection, shared by threads under a lock: the runner keeps its commits (which
    wait for fsync) off the event loop by calling the store from worker threads.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path) if str(path) != ":memory:" else path
        conn = sqlite3.connect(
            str(path), timeout=30, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA busy_timeout = 30000")
        self.db = sqlite_utils.Database(conn)
        if str(path) != ":memory:":
            self.db.enable_wal()
        self._lock = threading.RLock()
        self._migrate()

    # ------------------------------------------------------------ schema
    def _migrate(self) -> None:
        migrate(self)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self.db.conn
        with self._lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _event(self, task_id: str, kind: EventKind, message: str, data: dict[str, Any] | None) -> None:
        kind = EventKind(kind)  # a misspelt kind fails here, not silently in a reader
        self.db.execute(
            "INSERT INTO task_events (task_id, at, kind, message, data) VALUES (?, ?, ?, ?, ?)",
            [task_id, time.time(), kind, message, json.dumps(data or {}, sort_keys=True)],
        )

    # ------------------------------------------------------------ create / read
    def create_task(
        self,
        *,
        template: str,
        connector: str,
        platform: str,
        image_name: str,
        requested_by: str,
        message: str,
        channel: str | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[Task, bool]:
        """Queue a task; returns (task, created). A repeated idempotency key returns
        the existing task with created=False, so retries never start work twice."""
        now = time.time()
        task_id = new_task_id()
        with self.transaction():
            image_name = self._unused_image_name(image_name)
            cur = self.db.execute(
                "INSERT OR IGNORE INTO tasks (id, template, connector, platform, status, stage,"
                " progress, requested_by, channel, idempotency_key, created_at, updated_at,"
                " image_name) VALUES (?, ?, ?, ?, ?, 'queued', 0, ?, ?, ?, ?, ?, ?)",
                [task_id, template, connector, platform, states.QUEUED, requested_by, channel,
                 idempotency_key, now, now, image_name],
            )
            if cur.rowcount == 0:
                row = self.db.execute(
                    "SELECT id FROM tasks WHERE idempotency_key = ?", [idempotency_key]
                ).fetchone()
                return self.get(row[0]), False
            self._event(task_id, EventKind.CREATED, message, {"requested_by": requested_by})
        return self.get(task_id), True

    def _unused_image_name(self, wanted: str) -> str:
        """``wanted``, or ``wanted-2``, ``-3``...: two tasks never share a VM/image name, even
        when their random parts collide (in the caller's transaction)."""
        name, n = wanted, 1
        while self.db.execute("SELECT 1 FROM tasks WHERE image_name = ?", [name]).fetchone():
            n += 1
            name = f"{wanted}-{n}"
        return name

    def get(self, task_id: str) -> Task:
        with self._lock:
            rows = list(self.db.query("SELECT * FROM tasks WHERE id = ?", [task_id]))
        if not rows:
            raise TaskNotFound(task_id)
        return Task.from_row(rows[0])

    def list_tasks(self, status: str | None = None, limit: int = 50) -> list[Task]:
        where, args = ("WHERE status = ?", [status]) if status else ("", [])
        with self._lock:
            rows = list(self.db.query(
                f"SELECT * FROM tasks {where} ORDER BY created_at DESC, id LIMIT ?", [*args, limit]
            ))
        return [Task.from_row(r) for r in rows]

    def tasks_visible_to(self, user: str, templates: list[str], limit: int = 50) -> list[Task]:
        """The latest tasks ``user`` requested or of one of ``templates``."""
        marks = ", ".join("?" * len(templates))
        with self._lock:
            rows = list(self.db.query(
                f"SELECT * FROM tasks WHERE requested_by = ? OR template IN ({marks})"
                " ORDER BY created_at DESC, id LIMIT ?", [user, *templates, limit]
            ))
        return [Task.from_row(r) for r in rows]

    def events(self, task_id: str | None = None, after: int = 0) -> list[Event]:
        where, args = ("AND task_id = ?", [task_id]) if task_id else ("", [])
        with self._lock:
            rows = list(self.db.query(
                f"SELECT * FROM task_events WHERE id > ? {where} ORDER BY id", [after, *args]
            ))
        return [Event(**{**r, "kind": _read_kind(r["kind"]), "data": json.loads(r["data"] or "{}")})
                for r in rows]

    def last_event_id(self) -> int:
        with self._lock:
            row = self.db.execute("SELECT COALESCE(MAX(id), 0) FROM task_events").fetchone()
        return int(row[0])

    # ------------------------------------------------------------ leases
    def claim(
        self, owner: str, lease_seconds: float, ids: Collection[str] | None = None, *,
        published_only: bool = False, exclude: Collection[str] = (),
    ) -> Task | None:
        """Atomically take the oldest task that is unfinished and not leased (or whose
        lease expired because its runner died); ``ids`` limits the choice.
        ``published_only``: only a task whose image is published (it only waits for its
        guest), for a runner whose compose/upload slots are all taken.
        ``exclude``: tasks the runner still works (their lease may have run out meanwhile)."""
        now = time.time()
        active = ",".join("?" * len(states.ACTIVE))
        only = ""
        only_args: list[str] = []
        if ids is not None:
            if not ids:
                return None
            only, only_args = " AND id IN (SELECT value FROM json_each(?))", [json.dumps(list(ids))]
        if published_only:
            only += " AND published IS NOT NULL"
        if exclude:
            only += " AND id NOT IN (SELECT value FROM json_each(?))"
            only_args.append(json.dumps(list(exclude)))
        with self.transaction():
            row = self.db.execute(
                "UPDATE tasks SET lease_owner = ?, lease_until = ?, attempts = attempts + 1"
                f" WHERE id = (SELECT id FROM tasks WHERE status IN ({active}) AND lease_until < ?"
                f"{only} ORDER BY created_at, id LIMIT 1) AND lease_until < ?"
                " RETURNING id, attempts, status",
                [owner, now + lease_seconds, *states.ACTIVE, now, *only_args, now],
            ).fetchone()
            if row is None:
                return None
            task_id, attempts, status = row
            # (a runner that stopped cleanly gave its attempt back: the status tells)
            if attempts > 1 or status != states.QUEUED:
                self._event(task_id, EventKind.RESUMED,
                            f"Resumed by runner {owner} (attempt {attempts})",
                            {"owner": owner, "attempt": attempts})
        return self.get(task_id)

    def renew(self, task_id: str, owner: str, lease_seconds: float) -> Task:
        with self.transaction():
            cur = self.db.execute(
                "UPDATE tasks SET lease_until = ? WHERE id = ? AND lease_owner = ?",
                [time.time() + lease_seconds, task_id, owner],
            )
            if cur.rowcount == 0:
                raise LeaseLost(task_id)
        return self.get(task_id)

    def renew_held(self, owner: str, ids: Collection[str], lease_seconds: float) -> dict[str, bool]:
        """Renew the leases of all of ``ids`` that ``owner`` still holds, in one statement
        (a runner may hold hundreds of waiting tasks). Returns {task id: cancel requested}
        for those; an id missing from it was lost to another runner."""
        if not ids:
            return {}
        with self.transaction():
            rows = self.db.execute(
                "UPDATE tasks SET lease_until = ? WHERE lease_owner = ?"
                " AND id IN (SELECT value FROM json_each(?)) RETURNING id, cancel_requested",
                [time.time() + lease_seconds, owner, json.dumps(list(ids))],
            ).fetchall()
        return {task_id: bool(cancel) for task_id, cancel in rows}

    def release(self, task_id: str, owner: str, *, count_attempt: bool = True) -> None:
        """Give the task up. ``count_attempt=False``: the runner stopped cleanly (Ctrl-C, a
        service stop), which is no crash, so the claim does not count toward max_attempts."""
        undo = "" if count_attempt else ", attempts = MAX(attempts - 1, 0)"
        with self.transaction():
            self.db.execute(
                f"UPDATE tasks SET lease_owner = NULL, lease_until = 0{undo}"
                " WHERE id = ? AND lease_owner = ?",
                [task_id, owner],
            )

    # ------------------------------------------------------------ changes
    def update(
        self,
        task_id: str,
        owner: str | None,
        *,
        event: tuple[EventKind, str] | None = None,
        data: dict[str, Any] | None = None,
        **fields: Any,
    ) -> Task:
        """Change task columns and append an event in one transaction.

        With an ``owner``, the change only happens while that runner holds the lease.
        """
        if fields.get("status") in states.TERMINAL:
            fields.setdefault("finished_at", time.time())
        for key in ("resources", "published"):
            if key in fields and fields[key] is not None:
                fields[key] = json.dumps(fields[key], sort_keys=True)
        fields["updated_at"] = time.time()
        cols = ", ".join(f"{k} = ?" for k in fields)
        args: list[Any] = [*fields.values(), task_id]
        with self.transaction():
            row = self.db.execute("SELECT status, lease_owner FROM tasks WHERE id = ?",
                                  [task_id]).fetchone()
            if row is None:
                raise TaskNotFound(task_id)
            # the lease first: a runner whose task was taken over learns that, not that the
            # new owner already moved the task on
            if owner is not None and row[1] != owner:
                raise LeaseLost(task_id)
            if "status" in fields:
                states.check_transition(row[0], fields["status"])
            self.db.execute(f"UPDATE tasks SET {cols} WHERE id = ?", args)  # owner checked above
            if event is not None:
                self._event(task_id, event[0], event[1], data)
        return self.get(task_id)

    def add_event(
        self, task_id: str, kind: EventKind, message: str, data: dict[str, Any] | None = None
    ) -> None:
        with self.transaction():
            self._event(task_id, kind, message, data)

    def request_cancel(self, task_id: str, by: str, message: str) -> Task:
        """Ask for a cancel. A queued task nobody holds is cancelled at once; a running
        one is cancelled by its runner, which cleans up."""
        task = self.get(task_id)
        if task.finished:
            return task
        with self.transaction():
            self.db.execute(
                "UPDATE tasks SET cancel_requested = 1, updated_at = ? WHERE id = ?",
                [time.time(), task_id],
            )
            self._event(task_id, EventKind.CANCEL_REQUESTED, message, {"by": by})
        now = time.time()
        with self.transaction():
            cur = self.db.execute(
                "UPDATE tasks SET status = ?, finished_at = ?, updated_at = ?"
                " WHERE id = ? AND status = ? AND lease_until < ?",
                [states.CANCELLED, now, now, task_id, states.QUEUED, now],
            )
            if cur.rowcount:
                self._event(task_id, EventKind.CANCELLED, "Cancelled before it started", {"by": by})
        return self.get(task_id)

    def retry(self, task_id: str, idempotency_key: str, requested_by: str, message: str,
              image_name: str) -> Task:
        """Queue a new task for the same template/connector as a failed one. It gets a name of
        its own: the failed task's VM may still exist (a watch that timed out keeps it)."""
        old = self.get(task_id)
        task, _ = self.create_task(
            template=old.template, connector=old.connector, platform=old.platform,
            image_name=image_name, requested_by=requested_by, message=message,
            channel=old.channel, idempotency_key=idempotency_key,
        )
        return task

    # ------------------------------------------------------------ audit
    def audit(self, user: str, action: str, target: str, allowed: bool, reason: str) -> None:
        with self.transaction():
            self.db.execute(
                "INSERT INTO audit (at, user, action, target, allowed, reason)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [time.time(), user, action, target, int(allowed), reason],
            )

    # ------------------------------------------------------------ plain SQL
    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """The rows of a read, under the store's lock. Every read of the shared connection
        must take it: sqlite-utils 4.2 wraps each query in a named savepoint, and two threads'
        savepoints interleaving on one connection fail with "no such savepoint"."""
        with self._lock:
            return list(self.db.query(sql, list(params)))

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement under the store's lock; the number of rows it changed."""
        with self._lock:
            return self.db.execute(sql, list(params)).rowcount

    def close(self) -> None:
        self.db.conn.close()
