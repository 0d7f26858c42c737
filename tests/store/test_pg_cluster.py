"""The throw-away cluster runs as an ordinary user, on loopback only, and is removed."""

from __future__ import annotations

import os
import pwd

import psycopg
import pytest

from tests.store.pg_cluster import SERVER_USER, pg_cluster


def test_the_cluster_serves_loopback_as_an_ordinary_user_and_is_removed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with pg_cluster() as cluster:
        monkeypatch.setenv("PGPASSWORD", cluster.password)
        with psycopg.connect(cluster.url()) as conn:
            assert conn.execute("SELECT current_setting('listen_addresses')").fetchone() == ("127.0.0.1",)
            data_owner = cluster.data_dir.stat().st_uid
        expected = pwd.getpwnam(SERVER_USER).pw_uid if os.geteuid() == 0 else os.geteuid()
        assert data_owner == expected != 0
        monkeypatch.setenv("PGPASSWORD", "wrong")
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(cluster.url())
    assert not cluster.data_dir.exists()
