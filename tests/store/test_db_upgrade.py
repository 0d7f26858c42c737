"""`layerbot db upgrade`: pending migrations applied and reported, refused on a newer database and
while a layerbot of another schema version is connected (PostgreSQL's application_name)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from bot.cli.commands import main
from bot.store.backends import open_store
from bot.store.migrations import LATEST, MIGRATIONS, migrate
from bot.store.postgres_store import PostgresStore

Connect = Callable[[int], None]


@pytest.fixture(params=["sqlite", "postgres"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "tasks.db")
    return str(request.getfixturevalue("pg_url"))


def at_version(location: str, version: int) -> None:
    store = open_store(location, migrate=False)
    try:
        migrate(store, MIGRATIONS[:version])  # type: ignore[arg-type]
        assert store.schema_version() == version
    finally:
        store.close()


def version_of(location: str) -> int:
    store = open_store(location, migrate=False)
    try:
        return store.schema_version()
    finally:
        store.close()


def db_upgrade(location: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--db", location, "db", "upgrade"], terminal_width=200)
    return result.exit_code, result.output


@pytest.fixture
def other_layerbot(pg_url: str) -> Iterator[Connect]:
    """Connects to the test's database as a layerbot of a given schema version would."""
    conns: list[psycopg.Connection[tuple[object, ...]]] = []

    def connect(schema: int) -> None:
        conns.append(psycopg.connect(pg_url, application_name=f"layerbot schema={schema}"))

    yield connect
    for conn in conns:
        conn.close()


def test_upgrade_applies_the_pending_migrations_and_prints_from_and_to(location: str) -> None:
    at_version(location, LATEST - 1)
    code, out = db_upgrade(location)
    assert code == 0, out
    assert f"schema version {LATEST - 1} -> {LATEST} (applied {LATEST})" in out
    assert version_of(location) == LATEST
    code, out = db_upgrade(location)
    assert code == 0 and f"schema version {LATEST}, up to date" in out


def test_upgrade_of_a_database_newer_than_this_layerbot_is_refused(location: str) -> None:
    at_version(location, LATEST)
    store = open_store(location)
    if isinstance(store, PostgresStore):
        store.execute("UPDATE layerbot_schema SET version = ?", [LATEST + 1])
    else:
        store.execute(f"PRAGMA user_version = {LATEST + 1}")
    store.close()
    code, out = db_upgrade(location)
    assert code != 0
    assert f"schema version {LATEST + 1}, newer than this layerbot knows ({LATEST})" in out


def test_postgres_connections_announce_their_schema_version(pg_url: str) -> None:
    first, second = open_store(pg_url), open_store(pg_url)
    try:
        assert isinstance(second, PostgresStore)
        assert [p.schema for p in second.connected_layerbots()] == [LATEST]
    finally:
        first.close()
        second.close()


def test_upgrade_is_refused_while_a_newer_layerbot_is_connected(pg_url: str, other_layerbot: Connect) -> None:
    at_version(pg_url, LATEST - 1)
    other_layerbot(LATEST + 1)
    code, out = db_upgrade(pg_url)
    assert code == 1
    assert "a newer layerbot is connected (backend pid" in out and f"(schema version {LATEST + 1})" in out
    assert version_of(pg_url) == LATEST - 1


def test_upgrade_is_refused_while_an_older_layerbot_is_connected(
        pg_url: str, other_layerbot: Connect) -> None:
    at_version(pg_url, LATEST - 1)
    other_layerbot(LATEST - 1)
    code, out = db_upgrade(pg_url)
    assert code == 1 and "layerbots of an older schema are connected" in out and "stop them" in out
    assert version_of(pg_url) == LATEST - 1


def test_an_older_layerbot_connected_to_an_up_to_date_database_is_no_problem(
        pg_url: str, other_layerbot: Connect) -> None:
    at_version(pg_url, LATEST)
    other_layerbot(LATEST - 1)
    code, out = db_upgrade(pg_url)
    assert code == 0 and "up to date" in out
