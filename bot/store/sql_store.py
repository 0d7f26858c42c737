"""The task store's logic, written once for every SQL backend.

A backend (:mod:`~bot.store.task_store` for SQLite, :mod:`~bot.store.postgres_store`) gives the
connection, transactions and the few statements that differ: the clock, a list parameter, row
locks. Statements use ``?`` placeholders; a backend with another style translates them.
"""

from __future__ import annotations

import json
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from bot.store import states
from bot.store.migrations import Migration, migrate
from bot.store.model import Event, LeaseLost, Task, TaskNotFound, new_task_id
from bot.store.states import EventKind
from bot.store.wakeups import CANCEL_NOTICE, EVENTS_CHANNEL, QUEUED_NOTICE, RELEASED_NOTICE, TASKS_CHANNEL

#: the longest lease a runner takes (runner.lease_seconds is at most this)
MAX_LEASE_SECONDS = 600
_LEASE_SLACK_SECONDS = 60


class SqlStore(ABC):
    location: str
    #: appended to the claim's choice of a task (PostgreSQL: FOR UPDATE SKIP LOCKED)
    claim_lock = ""
    #: appended to the read of a row a write checks first (PostgreSQL: FOR UPDATE)
    row_lock = ""

    def __init__(self) -> None:
        self._lock = threading.RLock()

    # ------------------------------------------------------------ what a backend gives
    @abstractmethod
    def transaction(self) -> Any:
        """A context manager: one write transaction, serialised with the other writers."""

    @abstractmethod
    def _exec(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run a statement; a cursor with fetchone/fetchall (tuples) and rowcount."""

    @abstractmethod
    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]: ...

    @abstractmethod
    def _now(self) -> tuple[str, list[Any]]:
        """The clock leases are timed with, as SQL and its parameters."""

    @abstractmethod
    def _in(self, column: str, values: Collection[str]) -> tuple[str, list[Any]]:
        """``column`` is one of ``values``, as SQL and its parameters."""

    @abstractmethod
    def _fenced(self, held: Mapping[str, int | None]) -> tuple[str, list[Any]]:
        """A tasks row is in ``held`` (id -> fence) with that fence, or any with None."""

    @abstractmethod
    def schema_version(self) -> int: ...

    @abstractmethod
    def _lock_schema(self) -> None:
        """In a transaction: keep other processes from migrating until it ends."""

    @abstractmethod
    def _apply_migration(self, migration: Migration) -> None: ...

    @abstractmethod
    def _set_schema_version(self, version: int) -> None: ...

    @abstractmethod
    def set_synchronous(self, mode: str) -> None:
        """``full``: every commit durable before it returns; ``normal``: consistent after a
        crash, the last commits may be lost (the Slack app's own records)."""

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def _lock_creates(self) -> None:
        """In create_task's transaction: serialise creators (image names stay unique)."""

    @abstractmethod
    def _lock_events(self) -> None:
        """Before an event insert: event ids must become visible in their order (followers
        read ``id > last seen``)."""

    @abstractmethod
    def _tags_within(self, tags: Collection[str]) -> tuple[str, list[Any]]:
        """Every one of a tasks row's ``runner_tags`` is in ``tags``, as SQL and its parameters."""

    @abstractmethod
    def _notify(self, channel: str, payload: str) -> None:
        """In a transaction: wake the processes listening on ``channel`` once it commits (none
        on a backend without notifications: they poll)."""

    @abstractmethod
    async def listen(self, channel: str, on_notice: Callable[[str], None],
                     on_ready: Callable[[], None] | None = None) -> None:
        """Call ``on_notice(payload)`` for each notice on ``channel`` until cancelled. A backend
        without notifications returns at once (its readers poll)."""

    def _migrate(self) -> None:
        migrate(self)

    # ------------------------------------------------------------ helpers
    def _event(self, task_id: str, kind: EventKind, message: str, data: dict[str, Any] | None) -> None:
        kind = EventKind(kind)  # a misspelt kind fails here, not silently in a reader
        self._lock_events()
        self._exec(
            "INSERT INTO task_events (task_id, at, kind, message, data) VALUES (?, ?, ?, ?, ?)",
            [task_id, time.time(), str(kind), message, json.dumps(data or {}, sort_keys=True)],
        )
        self._notify(EVENTS_CHANNEL, "")

    def _check_lease(self, task_id: str, owner: str | None, fence: int | None) -> tuple[Any, ...]:
        """The task's (status, lease_owner, lease_generation), locked for this transaction;
        LeaseLost when ``owner``/``fence`` no longer hold it."""
        row = self._exec("SELECT status, lease_owner, lease_generation FROM tasks WHERE id = ?"
                         f"{self.row_lock}", [task_id]).fetchone()
        if row is None:
            raise TaskNotFound(task_id)
        if owner is not None and (row[1] != owner or (fence is not None and row[2] != fence)):
            raise LeaseLost(task_id)
        return tuple(row)

    # ------------------------------------------------------------ create / read
    def create_task(
        self, *, template: str, connector: str, platform: str, image_name: str, requested_by: str,
        message: str, channel: str | None = None, idempotency_key: str | None = None,
        runner_tags: Collection[str] = (),
    ) -> tuple[Task, bool]:
        """Queue a task; returns (task, created). A repeated idempotency key returns
        the existing task with created=False, so retries never start work twice.
        ``runner_tags``: only a runner having all of them claims the task."""
        now = time.time()
        task_id = new_task_id()
        with self.transaction():
            self._lock_creates()
            image_name = self._unused_image_name(image_name)
            cur = self._exec(
                "INSERT INTO tasks (id, template, connector, platform, status, stage,"
                " progress, requested_by, channel, idempotency_key, created_at, updated_at,"
                " image_name, runner_tags) VALUES (?, ?, ?, ?, ?, 'queued', 0, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                [task_id, template, connector, platform, states.QUEUED, requested_by, channel,
                 idempotency_key, now, now, image_name, json.dumps(sorted(set(runner_tags)))],
            )
            if cur.rowcount == 0:
                row = self._exec("SELECT id FROM tasks WHERE idempotency_key = ?",
                                 [idempotency_key]).fetchone()
                return self.get(row[0]), False
            self._event(task_id, EventKind.CREATED, message, {"requested_by": requested_by})
            self._notify(TASKS_CHANNEL, QUEUED_NOTICE)
        return self.get(task_id), True

    def _unused_image_name(self, wanted: str) -> str:
        """``wanted``, or ``wanted-2``, ``-3``...: two tasks never share a VM/image name, even
        when their random parts collide (in the caller's transaction)."""
        name, n = wanted, 1
        while self._exec("SELECT 1 FROM tasks WHERE image_name = ?", [name]).fetchone():
            n += 1
            name = f"{wanted}-{n}"
        return name

    def get(self, task_id: str) -> Task:
        with self._lock:
            rows = self._query("SELECT * FROM tasks WHERE id = ?", [task_id])
        if not rows:
            raise TaskNotFound(task_id)
        return Task.from_row(rows[0])

    def list_tasks(self, status: str | None = None, limit: int = 50) -> list[Task]:
        where, args = ("WHERE status = ?", [status]) if status else ("", [])
        with self._lock:
            rows = self._query(
                f"SELECT * FROM tasks {where} ORDER BY created_at DESC, id LIMIT ?", [*args, limit])
        return [Task.from_row(r) for r in rows]

    def tasks_visible_to(self, user: str, templates: list[str], limit: int = 50) -> list[Task]:
        """The latest tasks ``user`` requested or of one of ``templates``."""
        of_templates, args = self._in("template", templates)
        with self._lock:
            rows = self._query(
                f"SELECT * FROM tasks WHERE requested_by = ? OR {of_templates}"
                " ORDER BY created_at DESC, id LIMIT ?", [user, *args, limit])
        return [Task.from_row(r) for r in rows]

    def events(self, task_id: str | None = None, after: int = 0) -> list[Event]:
        where, args = ("AND task_id = ?", [task_id]) if task_id else ("", [])
        with self._lock:
            rows = self._query(
                f"SELECT * FROM task_events WHERE id > ? {where} ORDER BY id", [after, *args])
        return [Event.from_row(r) for r in rows]

    def count_by_status(self) -> list[tuple[str, str, int]]:
        """(status, platform, tasks) for every pair that has tasks: one GROUP BY, for /metrics."""
        # grouped by the bare columns, so the (status, platform) index answers it without a sort
        with self._lock:
            rows = self._query("SELECT status, platform, COUNT(*) AS n FROM tasks GROUP BY status, platform")
        counts: dict[tuple[str, str], int] = {}
        for r in rows:  # a task without a platform (NULL or '') counts under ''
            key = (str(r["status"]), str(r["platform"] or ""))
            counts[key] = counts.get(key, 0) + int(r["n"])
        return [(status, platform, n) for (status, platform), n in counts.items()]

    def last_event_id(self) -> int:
        with self._lock:
            row = self._exec("SELECT COALESCE(MAX(id), 0) FROM task_events").fetchone()
        return int(row[0])

    # ------------------------------------------------------------ leases
    def claim(
        self, owner: str, lease_seconds: float, ids: Collection[str] | None = None, *,
        published_only: bool = False, exclude: Collection[str] = (), tags: Collection[str] | None = None,
    ) -> Task | None:
        """Atomically take the oldest task that is unfinished and not leased (or whose
        lease expired because its runner died); ``ids`` limits the choice. The claim bumps the
        task's ``lease_generation``, the fencing token of this runner's writes.
        ``published_only``: only a task whose image is published (it only waits for its
        guest), for a runner whose compose/upload slots are all taken.
        ``exclude``: tasks the runner still works (their lease may have run out meanwhile).
        ``tags``: the runner's tags; only a task whose ``runner_tags`` are all among them (a
        runner without tags: only untagged tasks). None: any task (tools, tests)."""
        now, now_args = self._now()
        only = ""
        only_args: list[Any] = []
        if ids is not None:
            if not ids:
                return None
            sql, only_args = self._in("id", ids)
            only = f" AND {sql}"
        if published_only:
            only += " AND published IS NOT NULL"
        if exclude:
            sql, args = self._in("id", exclude)
            only += f" AND NOT {sql}"
            only_args = [*only_args, *args]
        if tags is not None:
            sql, args = self._tags_within(tags)
            only += f" AND {sql}"
            only_args = [*only_args, *args]
        active = ", ".join("?" * len(states.ACTIVE))
        with self.transaction():
            expired, expired_args = _lease_expired(now, now_args)
            row = self._exec(
                f"UPDATE tasks SET lease_owner = ?, lease_until = {now} + ?, attempts = attempts + 1,"
                " lease_generation = lease_generation + 1"
                f" WHERE id = (SELECT id FROM tasks WHERE status IN ({active}) AND {expired}"
                f"{only} ORDER BY created_at, id LIMIT 1{self.claim_lock}) AND {expired}"
                " RETURNING id, attempts, status",
                [owner, *now_args, lease_seconds, *states.ACTIVE, *expired_args, *only_args, *expired_args],
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

    def renew(self, task_id: str, owner: str, lease_seconds: float, *, fence: int | None = None) -> Task:
        now, now_args = self._now()
        fenced, fence_args = self._fenced({task_id: fence})
        with self.transaction():
            cur = self._exec(
                f"UPDATE tasks SET lease_until = {now} + ? WHERE lease_owner = ? AND {fenced}",
                [*now_args, lease_seconds, owner, *fence_args])
            if cur.rowcount == 0:
                raise LeaseLost(task_id)
        return self.get(task_id)

    def renew_held(self, owner: str, held: Mapping[str, int | None] | Collection[str],
                   lease_seconds: float) -> dict[str, bool]:
        """Renew the leases of all of ``held`` (task id -> fence, or ids) that ``owner`` still
        holds, in one statement (a runner may hold hundreds of waiting tasks). Returns
        {task id: cancel requested} for those; an id missing from it was lost to another runner
        (or claimed again since: its fence is stale)."""
        if not held:
            return {}
        fences = dict(held) if isinstance(held, Mapping) else dict.fromkeys(held)
        now, now_args = self._now()
        fenced, fence_args = self._fenced(fences)
        with self.transaction():
            rows = self._exec(
                f"UPDATE tasks SET lease_until = {now} + ? WHERE lease_owner = ? AND {fenced}"
                " RETURNING id, cancel_requested",
                [*now_args, lease_seconds, owner, *fence_args]).fetchall()
        return {task_id: bool(cancel) for task_id, cancel in rows}

    def release(self, task_id: str, owner: str, *, count_attempt: bool = True,
                fence: int | None = None) -> None:
        """Give the task up. ``count_attempt=False``: the runner stopped cleanly (Ctrl-C, a
        service stop), which is no crash, so the claim does not count toward max_attempts."""
        undo = "" if count_attempt else ", attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END"
        fenced, fence_args = self._fenced({task_id: fence})
        with self.transaction():
            cur = self._exec(f"UPDATE tasks SET lease_owner = NULL, lease_until = 0{undo}"
                             f" WHERE lease_owner = ? AND {fenced}", [owner, *fence_args])
            if cur.rowcount:
                self._notify(TASKS_CHANNEL, RELEASED_NOTICE)

    # ------------------------------------------------------------ changes
    def update(
        self, task_id: str, owner: str | None, *, event: tuple[EventKind, str] | None = None,
        data: dict[str, Any] | None = None, fence: int | None = None, **fields: Any,
    ) -> Task:
        """Change task columns and append an event in one transaction.

        With an ``owner`` (and its ``fence``), the change only happens while that runner holds
        the lease it claimed.
        """
        if fields.get("status") in states.TERMINAL:
            fields.setdefault("finished_at", time.time())
            # with the verdict, not in a later release: a runner dying in between must not
            # leave a finished task leased
            fields.update(lease_owner=None, lease_until=0)
        for key in ("resources", "published"):
            if key in fields and fields[key] is not None:
                fields[key] = json.dumps(fields[key], sort_keys=True)
        fields["updated_at"] = time.time()
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self.transaction():
            # the lease first: a runner whose task was taken over learns that, not that the
            # new owner already moved the task on
            status = self._check_lease(task_id, owner, fence)[0]
            if "status" in fields:
                states.check_transition(status, fields["status"])
            self._exec(f"UPDATE tasks SET {cols} WHERE id = ?", [*fields.values(), task_id])
            if event is not None:
                self._event(task_id, event[0], event[1], data)
        return self.get(task_id)

    def add_event(self, task_id: str, kind: EventKind, message: str, data: dict[str, Any] | None = None,
                  *, owner: str | None = None, fence: int | None = None) -> None:
        with self.transaction():
            if owner is not None:
                self._check_lease(task_id, owner, fence)
            self._event(task_id, kind, message, data)

    def request_cancel(self, task_id: str, by: str, message: str) -> Task:
        """Ask for a cancel. A queued task nobody holds is cancelled at once; a running
        one is cancelled by its runner, which cleans up."""
        task = self.get(task_id)
        if task.finished:
            return task
        with self.transaction():
            self._exec("UPDATE tasks SET cancel_requested = 1, updated_at = ? WHERE id = ?",
                       [time.time(), task_id])
            self._event(task_id, EventKind.CANCEL_REQUESTED, message, {"by": by})
            self._notify(TASKS_CHANNEL, CANCEL_NOTICE)
        now, now_args = self._now()
        with self.transaction():
            at = time.time()
            cur = self._exec(
                "UPDATE tasks SET status = ?, finished_at = ?, updated_at = ?"
                f" WHERE id = ? AND status = ? AND {_lease_expired(now, now_args)[0]}",
                [states.CANCELLED, at, at, task_id, states.QUEUED, *_lease_expired(now, now_args)[1]])
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
            channel=old.channel, idempotency_key=idempotency_key, runner_tags=old.runner_tags,
        )
        return task

    # ------------------------------------------------------------ audit
    def audit(self, user: str, action: str, target: str, allowed: bool, reason: str) -> None:
        with self.transaction():
            self._exec('INSERT INTO audit (at, "user", action, target, allowed, reason)'
                       " VALUES (?, ?, ?, ?, ?, ?)",
                       [time.time(), user, action, target, int(allowed), reason])

    # ------------------------------------------------------------ plain SQL
    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """The rows of a read (``?`` placeholders), under the store's lock: threads share the
        connection, and one thread's statements must not land inside another's transaction."""
        with self._lock:
            return self._query(sql, params)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement under the store's lock; the number of rows it changed."""
        with self._lock:
            return int(self._exec(sql, params).rowcount)


def _lease_expired(now: str, now_args: list[Any]) -> tuple[str, list[Any]]:
    """SQL for a lease that ran out, or that ends further ahead than any runner renews one
    (MAX_LEASE_SECONDS): written before the clock of its runner's machine (SQLite) or of the
    server stepped back, by NTP say. Without this, a runner that died just before the clock
    went back an hour would keep its task for that hour."""
    return (f"(lease_until < {now} OR lease_until > {now} + {MAX_LEASE_SECONDS + _LEASE_SLACK_SECONDS})",
            [*now_args, *now_args])
