"""The task database's schema as an ordered registry of migrations.

``PRAGMA user_version`` records the last migration applied. Opening a database applies the
newer ones in order, each in its own ``BEGIN IMMEDIATE`` transaction with the version bump, so
two processes opening one database never both apply a migration, and a crash leaves the
database at a whole version. A database written by a newer layerbot is refused rather than
guessed at. Version 2 of a table is a new entry here, never an edit of an old one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlite_utils

if TYPE_CHECKING:
    from bot.store.task_store import TaskStore


@dataclass(frozen=True)
class Migration:
    version: int
    summary: str
    apply: Callable[[sqlite_utils.Database], None]


class SchemaTooNew(RuntimeError):
    """The database was written by a newer layerbot."""


def _tasks_events_audit(db: sqlite_utils.Database) -> None:
    db["tasks"].create(
        {
            "id": str, "template": str, "connector": str, "platform": str,
            "status": str, "stage": str, "progress": float, "requested_by": str,
            "channel": str, "message_ts": str, "thread_ts": str,
            "idempotency_key": str, "link": str, "error": str,
            "created_at": float, "updated_at": float, "finished_at": float,
            "image_name": str, "lease_owner": str, "lease_until": float,
            "cancel_requested": int, "attempts": int,
            "resources": str, "published": str,
        },
        pk="id",
        not_null={"template", "connector", "status", "stage", "created_at"},
        defaults={"progress": 0.0, "lease_until": 0.0, "cancel_requested": 0,
                  "attempts": 0, "resources": "{}", "stage": ""},
        if_not_exists=True,
    )
    db["tasks"].create_index(["idempotency_key"], unique=True, if_not_exists=True)
    db["tasks"].create_index(["status"], if_not_exists=True)
    db["task_events"].create(
        {"id": int, "task_id": str, "at": float, "kind": str, "message": str, "data": str},
        pk="id",
        foreign_keys=[("task_id", "tasks", "id")],
        if_not_exists=True,
    )
    db["task_events"].create_index(["task_id", "id"], if_not_exists=True)
    db["audit"].create(
        {"id": int, "at": float, "user": str, "action": str, "target": str,
         "allowed": int, "reason": str},
        pk="id",
        if_not_exists=True,
    )


def _slack_tables(db: sqlite_utils.Database) -> None:
    # IF NOT EXISTS: databases of version 1 may have them, created by the Slack app itself
    db.execute(
        "CREATE TABLE IF NOT EXISTS slack_intents (id TEXT PRIMARY KEY, user TEXT NOT NULL,"
        " channel TEXT, templates TEXT NOT NULL, rule TEXT NOT NULL, created_at FLOAT,"
        " expires_at FLOAT NOT NULL, claimed_by TEXT, claimed_at FLOAT)"
    )
    db.execute("CREATE TABLE IF NOT EXISTS slack_cursor (name TEXT PRIMARY KEY, event_id INTEGER)")


def _image_name_index(db: sqlite_utils.Database) -> None:
    db["tasks"].create_index(["image_name"], if_not_exists=True)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "tasks, task events and the audit log", _tasks_events_audit),
    Migration(2, "Slack confirmation cards (slack_intents) and the notifier's cursor (slack_cursor)",
              _slack_tables),
    Migration(3, "an index on tasks.image_name (each task's name is unique)", _image_name_index),
)

LATEST = MIGRATIONS[-1].version


def schema_version(store: TaskStore) -> int:
    return int(store.db.execute("PRAGMA user_version").fetchone()[0])


def migrate(store: TaskStore, migrations: tuple[Migration, ...] | None = None) -> list[int]:
    """Apply the migrations newer than the database's version; returns the versions applied."""
    migrations = migrations or MIGRATIONS
    latest = migrations[-1].version
    # read first, without a write lock: opening an up-to-date database (every CLI call, every
    # runner) must not queue behind a writer of another process
    version = schema_version(store)
    _refuse_newer(store, version, latest)
    if version == latest:
        return []
    applied: list[int] = []
    for migration in migrations:
        with store.transaction():
            version = schema_version(store)  # again under the lock: another process may have won
            _refuse_newer(store, version, latest)
            if version >= migration.version:
                continue
            migration.apply(store.db)
            store.db.execute(f"PRAGMA user_version = {migration.version}")
            applied.append(migration.version)
    return applied


def _refuse_newer(store: TaskStore, version: int, latest: int) -> None:
    if version > latest:
        raise SchemaTooNew(
            f"{store.path}: the task database has schema version {version}, newer than "
            f"this layerbot knows ({latest}); upgrade layerbot on this machine")
