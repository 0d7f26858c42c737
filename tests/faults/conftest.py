"""The store tests' throw-away PostgreSQL cluster, for the chaos runs on PostgreSQL."""

from tests.store.conftest import pg_url, postgres

__all__ = ["pg_url", "postgres"]
