"""The task database's schema as an ordered registry of migrations, each in its SQLite form
(sqlite-utils) and its PostgreSQL form (statements).

The database records the last migration applied (SQLite: ``PRAGMA user_version``; PostgreSQL:
the ``layerbot_schema`` table). Opening a database applies the newer ones in order, each in
its own transaction with the version bump and under the backend's migration lock (SQLite:
``BEGIN IMMEDIATE``; PostgreSQL: an advisory lock), so two processes opening one database never
both apply a migration, and a crash leaves the database at a whole version. A database written
by a newer layerbot is refused rather than guessed at. Version 2 of a table is a new entry here,
never an edit of an old one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlite_utils

from bot.store.model import StoreError

if TYPE_CHECKING:
    from bot.store.sql_store import SqlStore


@dataclass(frozen=True)
class Migration:
    version: int
    summary: str
    #: the SQLite form
    apply: Callable[[sqlite_utils.Database], None]
    #: the PostgreSQL form: statements run in order in the migration's transaction
    postgres: tuple[str, ...] = ()


class SchemaTooNew(StoreError):
    """The database was written by a newer layerbot (a StoreError: every command that opens the
    database refuses it with this message)."""


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


_TASKS_EVENTS_AUDIT_PG = (
    "CREATE TABLE tasks (id TEXT PRIMARY KEY, template TEXT NOT NULL, connector TEXT NOT NULL,"
    " platform TEXT, status TEXT NOT NULL, stage TEXT NOT NULL DEFAULT '',"
    " progress DOUBLE PRECISION DEFAULT 0, requested_by TEXT, channel TEXT, message_ts TEXT,"
    " thread_ts TEXT, idempotency_key TEXT, link TEXT, error TEXT,"
    " created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION, finished_at DOUBLE PRECISION,"
    " image_name TEXT, lease_owner TEXT, lease_until DOUBLE PRECISION DEFAULT 0,"
    " cancel_requested INTEGER DEFAULT 0, attempts INTEGER DEFAULT 0, resources TEXT DEFAULT '{}',"
    " published TEXT)",
    "CREATE UNIQUE INDEX idx_tasks_idempotency_key ON tasks (idempotency_key)",
    "CREATE INDEX idx_tasks_status ON tasks (status)",
    "CREATE TABLE task_events (id BIGSERIAL PRIMARY KEY, task_id TEXT REFERENCES tasks (id),"
    " at DOUBLE PRECISION, kind TEXT, message TEXT, data TEXT)",
    "CREATE INDEX idx_task_events_task_id_id ON task_events (task_id, id)",
    'CREATE TABLE audit (id BIGSERIAL PRIMARY KEY, at DOUBLE PRECISION, "user" TEXT, action TEXT,'
    " target TEXT, allowed INTEGER, reason TEXT)",
)


def _slack_tables(db: sqlite_utils.Database) -> None:
    # IF NOT EXISTS: databases of version 1 may have them, created by the Slack app itself
    db.execute(
        "CREATE TABLE IF NOT EXISTS slack_intents (id TEXT PRIMARY KEY, user TEXT NOT NULL,"
        " channel TEXT, templates TEXT NOT NULL, rule TEXT NOT NULL, created_at FLOAT,"
        " expires_at FLOAT NOT NULL, claimed_by TEXT, claimed_at FLOAT)"
    )
    db.execute("CREATE TABLE IF NOT EXISTS slack_cursor (name TEXT PRIMARY KEY, event_id INTEGER)")


_SLACK_TABLES_PG = (
    'CREATE TABLE slack_intents (id TEXT PRIMARY KEY, "user" TEXT NOT NULL, channel TEXT,'
    " templates TEXT NOT NULL, rule TEXT NOT NULL, created_at DOUBLE PRECISION,"
    " expires_at DOUBLE PRECISION NOT NULL, claimed_by TEXT, claimed_at DOUBLE PRECISION)",
    "CREATE TABLE slack_cursor (name TEXT PRIMARY KEY, event_id BIGINT)",
)


def _image_name_index(db: sqlite_utils.Database) -> None:
    db["tasks"].create_index(["image_name"], if_not_exists=True)


def _lease_generation(db: sqlite_utils.Database) -> None:
    if "lease_generation" in db["tasks"].columns_dict:
        return  # (a database rolled back to an older version by hand keeps its columns)
    db.execute("ALTER TABLE tasks ADD COLUMN lease_generation INTEGER NOT NULL DEFAULT 0")


def _runner_tags(db: sqlite_utils.Database) -> None:
    if "runner_tags" in db["tasks"].columns_dict:
        return
    db.execute("ALTER TABLE tasks ADD COLUMN runner_tags TEXT NOT NULL DEFAULT '[]'")


def _approval_cards(db: sqlite_utils.Database) -> None:
    for column in ("card_channel", "card_ts"):
        if column not in db["slack_intents"].columns_dict:
            db.execute(f"ALTER TABLE slack_intents ADD COLUMN {column} TEXT")


def _status_platform_index(db: sqlite_utils.Database) -> None:
    db["tasks"].create_index(["status", "platform"], if_not_exists=True)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "tasks, task events and the audit log", _tasks_events_audit, _TASKS_EVENTS_AUDIT_PG),
    Migration(2, "Slack confirmation cards (slack_intents) and the notifier's cursor (slack_cursor)",
              _slack_tables, _SLACK_TABLES_PG),
    Migration(3, "an index on tasks.image_name (each task's name is unique)", _image_name_index,
              ("CREATE INDEX idx_tasks_image_name ON tasks (image_name)",)),
    Migration(4, "tasks.lease_generation: the fencing token every claim bumps", _lease_generation,
              ("ALTER TABLE tasks ADD COLUMN lease_generation INTEGER NOT NULL DEFAULT 0",)),
    Migration(5, "tasks.runner_tags: the connector's runner tags at enqueue (a JSON list; [] = any runner)",
              _runner_tags, ("ALTER TABLE tasks ADD COLUMN runner_tags TEXT NOT NULL DEFAULT '[]'",)),
    Migration(6, "slack_intents.card_channel, card_ts: where an approval card is, to edit it when it expires",
              _approval_cards, ("ALTER TABLE slack_intents ADD COLUMN card_channel TEXT",
                                "ALTER TABLE slack_intents ADD COLUMN card_ts TEXT")),
    Migration(7, "an index on tasks (status, platform): each /metrics scrape counts tasks by both",
              _status_platform_index,
              ("CREATE INDEX idx_tasks_status_platform ON tasks (status, platform)",)),
)

LATEST = MIGRATIONS[-1].version


def schema_version(store: SqlStore) -> int:
    return store.schema_version()


def migrate(store: SqlStore, migrations: tuple[Migration, ...] | None = None) -> list[int]:
    """Apply the migrations newer than the database's version; returns the versions applied."""
    migrations = migrations or MIGRATIONS
    latest = migrations[-1].version
    # read first, without a write lock: opening an up-to-date database (every CLI call, every
    # runner) must not queue behind a writer of another process
    version = store.schema_version()
    refuse_newer(store, version, latest)
    if version == latest:
        return []
    applied: list[int] = []
    for migration in migrations:
        with store.transaction():
            store._lock_schema()
            version = store.schema_version()  # again under the lock: another process may have won
            refuse_newer(store, version, latest)
            if version >= migration.version:
                continue
            store._apply_migration(migration)
            store._set_schema_version(migration.version)
            applied.append(migration.version)
    return applied


def refuse_newer(store: SqlStore, version: int, latest: int = LATEST) -> None:
    if version > latest:
        raise SchemaTooNew(
            f"{store.location}: the task database has schema version {version}, newer than "
            f"this layerbot knows ({latest}); upgrade layerbot on this machine")
