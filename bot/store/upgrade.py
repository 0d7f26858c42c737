"""``layerbot db upgrade``: apply the pending migrations, refused while the upgrade would leave a
connected layerbot on a schema it does not know.

PostgreSQL connections announce the schema version their layerbot knows in ``application_name``
(``layerbot schema=N``, seen in ``pg_stat_activity``). Refused while one of them knows a newer
schema than this layerbot (upgrade with that layerbot instead) and, when there is something to
apply, while one knows an older one than the upgrade reaches (its code could not read the new
tables: stop it, or upgrade it, first). SQLite has no such list: its runners share one machine.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.store.migrations import LATEST, migrate, refuse_newer
from bot.store.model import StoreError
from bot.store.sql_store import SqlStore


class UpgradeRefused(StoreError):
    """Another layerbot connected to the database would be left on a schema it does not know."""


@dataclass(frozen=True)
class Upgrade:
    before: int
    after: int
    applied: list[int]


def upgrade(store: SqlStore) -> Upgrade:
    """Bring ``store`` (opened without migrating) to this layerbot's schema version."""
    before = store.schema_version()
    refuse_newer(store, before)
    _refuse_version_skew(store, pending=before < LATEST)
    applied = migrate(store)
    return Upgrade(before, store.schema_version(), applied)


def _refuse_version_skew(store: SqlStore, *, pending: bool) -> None:
    from bot.store.backends import is_postgres

    if not is_postgres(store.location):
        return
    from bot.store.postgres_store import PostgresStore

    if not isinstance(store, PostgresStore):
        return
    peers = store.connected_layerbots()
    if newer := [p for p in peers if p.schema > LATEST]:
        raise UpgradeRefused(
            f"{store.location}: a newer layerbot is connected ({'; '.join(map(str, newer))}); this one "
            f"knows schema version {LATEST}: run `layerbot db upgrade` with the newer layerbot")
    if pending and (older := [p for p in peers if p.schema < LATEST]):
        raise UpgradeRefused(
            f"{store.location}: layerbots of an older schema are connected ({'; '.join(map(str, older))}); "
            f"after the upgrade to version {LATEST} they could not read the tasks: stop them "
            "(or upgrade their layerbot) first")
