"""``layerbot db``: the task database's schema (``upgrade``) and moving it to PostgreSQL (``copy``).
Loaded lazily by the CLI's group; it imports only the CLI's output helpers."""

from __future__ import annotations

from typing import Protocol

import click

from bot.cli.output import escape_markup, out


class _HasDb(Protocol):
    @property
    def db_location(self) -> str: ...


@click.group()
def db() -> None:
    """Upgrade the task database's schema or copy a SQLite one to PostgreSQL.

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
