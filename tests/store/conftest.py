"""Fixtures of the store tests: a session-wide PostgreSQL cluster and a fresh database per test."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from tests.store.pg_cluster import PgCluster, PostgresUnavailable, pg_cluster


@pytest.fixture(scope="session")
def postgres() -> Iterator[PgCluster]:
    try:
        with pg_cluster() as cluster:
            yield cluster
    except PostgresUnavailable as exc:
        pytest.fail(str(exc))  # setup.sh installs it: a missing server is a broken set-up, not a skip


@pytest.fixture
def pg_url(postgres: PgCluster, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new empty database of the cluster, its URL; the password in PGPASSWORD."""
    import psycopg

    monkeypatch.setenv("PGPASSWORD", postgres.password)
    name = "t_" + secrets.token_hex(6)
    with psycopg.connect(postgres.url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return postgres.url(name)
