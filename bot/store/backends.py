"""Which store a ``--db`` / ``$LAYERBOT_DB`` value opens: a ``postgresql://`` URL is
PostgreSQL, anything else a SQLite file (or ``:memory:``)."""

from __future__ import annotations

import os

from bot.store.interface import Store
from bot.store.model import StoreError

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def default_db_location(explicit: str | None) -> str:
    if explicit:
        return explicit
    return os.environ.get("LAYERBOT_DB") or "layerbot.db"


def is_postgres(location: str) -> bool:
    return location.startswith(POSTGRES_SCHEMES)


def shown(location: str) -> str:
    """The location as errors and logs may show it (no password)."""
    if is_postgres(location):
        from bot.store.postgres_store import redacted

        return redacted(location)
    return location


def open_store(location: str, *, migrate: bool = True, must_exist: bool = False,
               connect_timeout: int | None = None) -> Store:
    """The store at ``location``; StoreError (naming it, without a password) if it cannot open.
    ``migrate=False``: as it is, without applying pending migrations. ``must_exist``: a missing
    SQLite file is NoDatabase instead of a new empty database (a reading command's mistyped --db)."""
    if is_postgres(location):
        try:
            from bot.store.postgres_store import PostgresStore
        except ImportError as exc:
            raise StoreError(f"{shown(location)}: PostgreSQL needs psycopg: "
                             f"pip install 'layerbot[postgres]' ({exc})") from None
        return PostgresStore(location, migrate=migrate, connect_timeout=connect_timeout)
    import sqlite3
    from pathlib import Path

    from bot.store.task_store import TaskStore

    if must_exist and not Path(location).exists():
        raise NoDatabase(f"no task database at {location} (nothing published from here yet, "
                         f"or a mistyped --db)")
    try:
        return TaskStore(location, migrate=migrate)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the task database {location}: {exc}") from None


class NoDatabase(StoreError):
    """A reading command's SQLite task database does not exist."""
