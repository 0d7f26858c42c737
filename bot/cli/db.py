"""``layerbot db``: the task database's schema (``upgrade``), moving it to PostgreSQL (``copy``) and
an online backup of a SQLite one (``backup``).
Loaded lazily by the CLI's group; it imports only the CLI's output helpers."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import click

from bot.cli.output import escape_markup, out


class _HasDb(Protocol):
    @property
    def db_location(self) -> str: ...


@click.group()
def db() -> None:
    """Upgrade the task database's schema, copy a SQLite one to PostgreSQL, or back it up.

    Example: layerbot --db postgresql://layerbot@db.example/layerbot db upgrade
    """


@db.command()
@click.pass_obj
def upgrade(ctx: _HasDb) -> None:
    """Apply the pending schema migrations to --db / $LAYERBOT_DB.

    Refused while a layerbot of another schema version is connected (PostgreSQL) or when the
    database is newer than this layerbot.

    Example: layerbot --db postgresql://layerbot@db.example/layerbot db upgrade
    """
    from bot.store.backends import open_store, shown
    from bot.store.migrations import SchemaTooNew
    from bot.store.model import StoreError
    from bot.store.upgrade import upgrade as apply_upgrade

    try:
        store = open_store(ctx.db_location, migrate=False)
    except StoreError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        done = apply_upgrade(store)  # type: ignore[arg-type]
    except (StoreError, SchemaTooNew) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()
    where = escape_markup(shown(ctx.db_location))
    if done.applied:
        out().print(f"{where}: schema version {done.before} -> {done.after} "
                    f"(applied {', '.join(map(str, done.applied))})", soft_wrap=True)
    else:
        out().print(f"{where}: schema version {done.after}, up to date", soft_wrap=True)


@db.command()
@click.argument("sqlite_path", type=click.Path(path_type=Path))
@click.argument("postgres_url")
@click.option("--force", is_flag=True, help="replace the rows the target database already has")
def copy(sqlite_path: Path, postgres_url: str, force: bool) -> None:
    """Copy a SQLite task database (tasks, events, audit, Slack cards and cursor) into PostgreSQL.

    The target's password comes from PGPASSWORD or ~/.pgpass. One transaction: all or nothing.

    Example: layerbot db copy layerbot.db postgresql://layerbot@db.example/layerbot
    """
    import sqlite3

    from bot.store.backends import is_postgres, shown
    from bot.store.migrations import SchemaTooNew
    from bot.store.model import StoreError

    if not sqlite_path.is_file():
        raise click.UsageError(f"{sqlite_path}: no such SQLite task database")
    if not is_postgres(postgres_url):
        raise click.UsageError(f"{shown(postgres_url)}: the target is not a postgresql:// URL")
    try:
        from bot.store.copy import copy_database
        from bot.store.postgres_store import PostgresStore
    except ImportError as exc:
        raise click.UsageError(
            f"PostgreSQL needs psycopg: pip install 'layerbot[postgres]' ({exc})") from None
    from bot.store.task_store import TaskStore

    try:
        source = TaskStore(sqlite_path, migrate=False)
    except sqlite3.Error as exc:
        raise click.UsageError(f"cannot open the task database {sqlite_path}: {exc}") from None
    try:
        target = PostgresStore(postgres_url)
    except (StoreError, SchemaTooNew) as exc:
        source.close()
        raise click.UsageError(str(exc)) from None
    try:
        result = copy_database(source, target, force=force)
    except (StoreError, SchemaTooNew) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        source.close()
        target.close()
    copied = ", ".join(f"{n} {table}" for table, n in result.counts.items())
    replaced = ", ".join(f"{n} {table}" for table, n in result.replaced.items())
    out().print(f"copied {escape_markup(str(sqlite_path))} to {escape_markup(shown(postgres_url))}: "
                f"{copied} (counts checked)" + (f"; replaced {replaced}" if replaced else ""), soft_wrap=True)


@db.command()
@click.argument("destination", type=click.Path(path_type=Path))
@click.pass_obj
def backup(ctx: _HasDb, destination: Path) -> None:
    """Copy the SQLite task database (--db / $LAYERBOT_DB) to DESTINATION while runners use it.

    One consistent snapshot; the runners keep writing meanwhile. The copy is checked (SQLite's
    integrity check) before it gets its name; an existing file is never overwritten. Run it as
    the service's user. A PostgreSQL database is backed up with pg_dump.

    Example: layerbot --db /var/lib/layerbot/layerbot.db db backup /var/backups/layerbot-2024-05-01.db
    """
    from bot.store.backends import is_postgres
    from bot.store.backup import BackupError, backup_sqlite

    if is_postgres(ctx.db_location):  # named without its URL: showing that one needs psycopg
        raise click.UsageError("--db / $LAYERBOT_DB is a PostgreSQL database: back it up with pg_dump "
                               "(docs/operations.md)")
    try:
        done = backup_sqlite(Path(ctx.db_location), destination)
    except BackupError as exc:
        raise click.ClickException(str(exc)) from None
    out().print(f"backed up {escape_markup(ctx.db_location)} to {escape_markup(str(destination))}: "
                f"schema version {done.schema_version}, {done.tasks} tasks, {done.events} events, "
                f"{done.size} bytes, integrity ok", soft_wrap=True)
