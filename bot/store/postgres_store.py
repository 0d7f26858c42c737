"""The PostgreSQL task store (psycopg 3): one database shared by runners on many machines.

The same schema (the migrations' PostgreSQL forms) and logic (:class:`SqlStore`) as SQLite;
what differs: claims lock the chosen row with ``FOR UPDATE SKIP LOCKED`` (busy runners do not
queue behind each other), leases are timed by the server's clock (``now()``), never a runner's,
and event inserts are serialised until commit so event ids become visible in their order.
The password comes from ``PGPASSWORD`` or ``~/.pgpass`` (libpq reads them), never the URL.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql as pgsql
from psycopg.rows import dict_row

from bot.store.migrations import LATEST, Migration
from bot.store.model import StoreError, StoreUnavailable
from bot.store.sql_store import SqlStore

#: pg_advisory_xact_lock keys (one namespace of layerbot's own)
_SCHEMA_LOCK, _CREATE_LOCK, _EVENTS_LOCK = 0x6C62_0001, 0x6C62_0002, 0x6C62_0003
_NOW = "extract(epoch FROM now())::double precision"
#: pause before listening again after the connection was lost (polling covers the gap)
_RELISTEN_SECONDS = 2.0

log = logging.getLogger(__name__)
#: how every connection announces itself in pg_stat_activity: `layerbot db upgrade` reads the
#: schema versions of the layerbots connected (no table to keep current, gone with the connection)
APPLICATION_NAME = f"layerbot schema={LATEST}"
_PEER_NAME = re.compile(r"layerbot schema=(\d+)")


#: how long a session may sit inside a transaction doing nothing before the server ends it
#: (ours last milliseconds; see PostgresStore._connect)
IDLE_IN_TRANSACTION_MS = 10_000


#: SQLSTATEs of a session the server ended: idle_in_transaction_session_timeout, admin_shutdown,
#: crash_shutdown, cannot_connect_now, idle_session_timeout
_SESSION_ENDED = frozenset({"25P03", "57P01", "57P02", "57P03", "57P05"})


#: seconds to give up connecting when neither the URL nor $PGCONNECT_TIMEOUT says: libpq's
#: default is to wait for ever on a server that accepts and never answers
DEFAULT_CONNECT_TIMEOUT = 10


def _configured_connect_timeout(url: str) -> int | None:
    from psycopg.conninfo import conninfo_to_dict

    given = conninfo_to_dict(url).get("connect_timeout") or os.environ.get("PGCONNECT_TIMEOUT")
    try:
        return int(str(given)) if given else None
    except ValueError:
        return None  # libpq reports the URL's bad value itself


@dataclass(frozen=True)
class Peer:
    """Another connection of a layerbot to the same database."""

    pid: int
    client: str
    schema: int

    def __str__(self) -> str:
        return f"backend pid {self.pid} from {self.client} (schema version {self.schema})"


def redacted(url: str) -> str:
    """``url`` with any password replaced by ***: what errors and logs may show."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def _placeholders(sql: str) -> str:
    # the store's statements use ? and contain no literal ? or %
    return sql.replace("%", "%%").replace("?", "%s")


class PostgresStore(SqlStore):
    claim_lock = " FOR UPDATE SKIP LOCKED"
    row_lock = " FOR UPDATE"

    def __init__(self, url: str, *, migrate: bool = True, connect_timeout: int | None = None) -> None:
        """``migrate=False``: open as it is (``layerbot db upgrade`` and ``db copy`` look first).
        ``connect_timeout``: seconds to give up connecting (shell completion: a short one);
        else the URL's or $PGCONNECT_TIMEOUT, else DEFAULT_CONNECT_TIMEOUT."""
        super().__init__()
        if urlsplit(url).password is not None:
            raise StoreError(
                f"the task database URL {redacted(url)} carries a password: set PGPASSWORD or use "
                "~/.pgpass instead (a URL shows in process lists, shell history and logs)")
        self.location = url
        self._closed = False
        self._connect_timeout = connect_timeout or _configured_connect_timeout(url) or DEFAULT_CONNECT_TIMEOUT
        try:
            self._conn = self._connect()
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to the task database {url}: {exc}") from None
        #: SET statements (set_synchronous) to repeat on a new connection
        self._session: list[str] = []
        try:
            if migrate:
                self._migrate()
        except BaseException:
            self._conn.close()
            raise

    def _connect(self) -> psycopg.Connection[Any]:
        # A runner stopped in the middle of a transaction (SIGSTOP, a frozen VM) would keep its
        # task's row locked, and every other runner's claim (SKIP LOCKED) would pass it by for
        # ever; the server ends such a session, and the runner reconnects when it wakes.
        return psycopg.connect(
            self.location, autocommit=True, application_name=APPLICATION_NAME,
            connect_timeout=self._connect_timeout,
            options=f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}")

    def _live(self) -> psycopg.Connection[Any]:
        """The store's connection, opened again if it was lost (StoreUnavailable while the
        server cannot be reached)."""
        if self._conn.closed or self._conn.broken:
            if self._closed:
                raise StoreError(f"the task database {redacted(self.location)} was closed by this process")
            try:
                conn = self._connect()
                for statement in self._session:
                    conn.execute(statement.encode())
            except psycopg.OperationalError as exc:
                raise StoreUnavailable(f"the task database {redacted(self.location)} cannot be "
                                       f"reached: {exc}".strip()) from None
            self._conn = conn
            log.info("reconnected to the task database %s", redacted(self.location))
        return self._conn

    def _lost(self, exc: psycopg.Error) -> Exception:
        """``exc`` as StoreUnavailable when it broke the connection; other errors as they are.
        A session the server ended (its idle-in-transaction timeout, a shutdown) reports the
        error before psycopg marks the connection broken: it is closed here, to be opened again."""
        if exc.sqlstate in _SESSION_ENDED:
            self._conn.close()
        if not (self._conn.closed or self._conn.broken):
            return exc
        return StoreUnavailable(f"the connection to the task database {redacted(self.location)} "
                                f"was lost: {str(exc).strip()}")

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        with self._lock:
            conn = self._live()
            try:
                with conn.transaction():
                    yield conn
            except psycopg.Error as exc:  # also from the commit or the rollback
                raise self._lost(exc) from None

    def _exec(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        try:
            return self._live().execute(_placeholders(sql), list(params))  # type: ignore[arg-type]
        except psycopg.Error as exc:  # a session the server ended is an InternalError (25P03)
            raise self._lost(exc) from None

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        try:
            with self._live().cursor(row_factory=dict_row) as cur:
                cur.execute(_placeholders(sql), list(params))  # type: ignore[arg-type]
                return cur.fetchall()
        except psycopg.Error as exc:  # a session the server ended is an InternalError (25P03)
            raise self._lost(exc) from None

    def _now(self) -> tuple[str, list[Any]]:
        return _NOW, []

    def _in(self, column: str, values: Collection[str]) -> tuple[str, list[Any]]:
        return f"{column} = ANY(?::text[])", [list(values)]

    def _fenced(self, held: Mapping[str, int | None]) -> tuple[str, list[Any]]:
        return ("id = ANY(?::text[]) AND EXISTS (SELECT 1 FROM unnest(?::text[], ?::bigint[]) AS h(id, fence)"
                " WHERE h.id = tasks.id AND (h.fence IS NULL OR h.fence = tasks.lease_generation))",
                [list(held), list(held), list(held.values())])

    def schema_version(self) -> int:
        with self._lock:
            exists = self._exec("SELECT to_regclass('layerbot_schema') IS NOT NULL").fetchone()
            if not exists[0]:
                return 0
            row = self._exec("SELECT version FROM layerbot_schema").fetchone()
        return int(row[0]) if row else 0

    def _lock_schema(self) -> None:
        self._exec("SELECT pg_advisory_xact_lock(?)", [_SCHEMA_LOCK])
        self._exec("CREATE TABLE IF NOT EXISTS layerbot_schema (version INTEGER NOT NULL)")

    def _apply_migration(self, migration: Migration) -> None:
        if not migration.postgres:
            raise StoreError(f"migration {migration.version} ({migration.summary}) has no PostgreSQL form")
        for statement in migration.postgres:
            self._conn.execute(statement.encode())  # DDL: no parameters, no placeholder translation

    def _set_schema_version(self, version: int) -> None:
        self._exec("DELETE FROM layerbot_schema")
        self._exec("INSERT INTO layerbot_schema (version) VALUES (?)", [version])

    def _lock_creates(self) -> None:
        self._exec("SELECT pg_advisory_xact_lock(?)", [_CREATE_LOCK])

    def _lock_events(self) -> None:
        self._exec("SELECT pg_advisory_xact_lock(?)", [_EVENTS_LOCK])

    def _tags_within(self, tags: Collection[str]) -> tuple[str, list[Any]]:
        return "runner_tags::jsonb <@ ?::jsonb", [json.dumps(sorted(set(tags)))]

    def _notify(self, channel: str, payload: str) -> None:
        self._exec("SELECT pg_notify(?, ?)", [channel, payload])

    async def listen(self, channel: str, on_notice: Callable[[str], None],
                     on_ready: Callable[[], None] | None = None) -> None:
        """LISTEN on a connection of its own (async: no thread, and the store's lock is not
        held). A lost connection is opened again after a pause; since notices may have been
        missed meanwhile, each (re)connection counts as one."""
        ready = on_ready
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                        self.location, autocommit=True, connect_timeout=self._connect_timeout) as conn:
                    await conn.execute(pgsql.SQL("LISTEN {}").format(pgsql.Identifier(channel)))
                    if ready is not None:
                        ready()
                        ready = None
                    else:
                        on_notice("")
                    async for notice in conn.notifies():
                        on_notice(notice.payload)
            except psycopg.Error as exc:
                log.warning("listening on %s at %s: %s; polling until it is back", channel,
                            redacted(self.location), exc)
            await asyncio.sleep(_RELISTEN_SECONDS)

    def set_synchronous(self, mode: str) -> None:
        # normal: like SQLite's in WAL mode, a crash may lose the last commits, never consistency
        settings = {"normal": "off", "full": "on"}
        if mode.lower() not in settings:
            raise ValueError(f"synchronous mode {mode!r}: one of normal, full")
        statement = f"SET synchronous_commit = {settings[mode.lower()]}"
        with self._lock:
            self._exec(statement)
            self._session = [statement]

    def connected_layerbots(self) -> list[Peer]:
        """The other connections of layerbots to this database, with the schema version each knows."""
        with self._lock:
            rows = self._exec(
                "SELECT pid, COALESCE(host(client_addr), 'a Unix socket or a hidden address'),"
                " application_name"
                " FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND application_name LIKE 'layerbot schema=%'").fetchall()
        return [Peer(int(pid), client, int(match.group(1))) for pid, client, name in rows
                if (match := _PEER_NAME.fullmatch(name))]

    def close(self) -> None:
        self._closed = True
        self._conn.close()
