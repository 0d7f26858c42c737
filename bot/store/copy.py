"""``layerbot db copy``: a SQLite task database into an empty PostgreSQL one, so a team that
started on SQLite keeps its history.

Tasks, events (their ids, hence their order; the id sequences advanced past them), the audit log,
Slack confirmation cards and the notifier's cursor, in one transaction on the target whose tables
are locked against writers meanwhile, with the counts checked before it commits.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from bot.store import states
from bot.store.migrations import LATEST, refuse_newer
from bot.store.model import StoreError
from bot.store.postgres_store import PostgresStore
from bot.store.task_store import TaskStore

#: copied in this order (events refer to tasks); each with the column that orders its rows
TABLES: tuple[tuple[str, str], ...] = (
    ("tasks", "created_at, id"), ("task_events", "id"), ("audit", "id"),
    ("slack_intents", "id"), ("slack_cursor", "name"),
)
#: BIGSERIAL columns whose sequences must continue after the copied ids
SERIALS = ("task_events", "audit")


class CopyRefused(StoreError):
    """The copy would lose or overwrite something: nothing was written."""


@dataclass(frozen=True)
class CopyResult:
    counts: dict[str, int]
    replaced: dict[str, int]


def check_source(source: TaskStore) -> None:
    """The SQLite database is at this layerbot's schema and no runner is working a task in it."""
    version = source.schema_version()
    refuse_newer(source, version)
    if version < LATEST:
        raise CopyRefused(f"{source.location}: schema version {version}, this layerbot copies version "
                          f"{LATEST}: run `layerbot --db {source.location} db upgrade` first")
    active = ", ".join("?" * len(states.ACTIVE))
    held = source.rows(f"SELECT id, lease_owner, lease_until FROM tasks WHERE status IN ({active})"
                       " AND lease_owner IS NOT NULL AND lease_until > ? ORDER BY id",
                       [*states.ACTIVE, time.time()])
    if held:
        first = held[0]
        until = datetime.fromtimestamp(first["lease_until"], UTC).strftime("%H:%M:%S UTC")
        raise CopyRefused(
            f"{source.location}: {len(held)} task(s) held by a running runner, e.g. {first['id']} by "
            f"{first['lease_owner']} until {until}: stop the runners using it (serve, worker, publish) "
            "first, or their work would go on in the SQLite file after the copy")


def copy_database(source: TaskStore, target: PostgresStore, *, force: bool = False) -> CopyResult:
    """Copy every row of :data:`TABLES` from ``source`` into ``target`` (both at schema LATEST).
    Refused if the target has rows, unless ``force``, which replaces them in the same transaction."""
    check_source(source)
    data = {table: source.rows(f"SELECT * FROM {table} ORDER BY {order}") for table, order in TABLES}
    with target.transaction() as conn:
        names = ", ".join(table for table, _ in TABLES)
        conn.execute(f"LOCK TABLE {names} IN EXCLUSIVE MODE".encode())
        present = {table: _count(conn, table) for table, _ in TABLES}
        if any(present.values()) and not force:
            raise CopyRefused(
                f"{target.location} is not empty ({_listing(present)}): copy into a new database, "
                "or give --force to replace its rows")
        for table, _ in reversed(TABLES):
            conn.execute(f"DELETE FROM {table}".encode())
        for table, _ in TABLES:
            _insert(conn, target.location, table, data[table])
        for table in SERIALS:
            conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE(MAX(id), 1),"
                         f" MAX(id) IS NOT NULL) FROM {table}".encode())
        counts = {table: _count(conn, table) for table, _ in TABLES}
        expected = {table: len(rows) for table, rows in data.items()}
        if counts != expected:  # raising rolls the copy back
            raise StoreError(f"{target.location}: after the copy the target has {_listing(counts)}, "
                             f"the source {_listing(expected)}; nothing was copied")
    return CopyResult(counts, {t: n for t, n in present.items() if n})


def _count(conn: psycopg.Connection[Any], table: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM {table}".encode()).fetchone()
    return int(row[0]) if row else 0


def _listing(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {table}" for table, n in counts.items())


def _columns(conn: psycopg.Connection[Any], table: str) -> set[str]:
    rows = conn.execute("SELECT column_name FROM information_schema.columns"
                        " WHERE table_schema = current_schema() AND table_name = %s", [table]).fetchall()
    return {r[0] for r in rows}


def _insert(conn: psycopg.Connection[Any], location: str, table: str, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    columns = list(rows[0])
    if missing := [c for c in columns if c not in _columns(conn, table)]:
        raise StoreError(f"{location}: table {table} has no column {', '.join(missing)} that the SQLite "
                         "database has; nothing was copied")
    quoted = ", ".join(f'"{c}"' for c in columns)
    sql = f"INSERT INTO {table} ({quoted}) VALUES ({', '.join(['%s'] * len(columns))})"
    try:
        with conn.cursor() as cur:
            cur.executemany(sql.encode(), _values(rows, columns))
    except psycopg.Error as exc:
        raise StoreError(f"{location}: copying table {table}: {exc}; nothing was copied") from None


def _values(rows: list[dict[str, Any]], columns: list[str]) -> Iterator[list[Any]]:
    for row in rows:
        yield [row[c] for c in columns]
