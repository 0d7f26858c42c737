"""An online backup of the SQLite task database (``layerbot db backup``), taken while runners
write to it: SQLite's backup API, in one step, reads one consistent snapshot (WAL: the writers
go on meanwhile), then the copy is checked and only then given its name."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path


class BackupError(Exception):
    """A backup that was not made; names the file and what is wrong with it."""


@dataclass(frozen=True)
class BackupResult:
    schema_version: int
    tasks: int
    events: int
    size: int


def backup_sqlite(source: Path, destination: Path) -> BackupResult:
    """Copy ``source`` to ``destination`` (which must not exist: nothing is overwritten)."""
    if not source.is_file():
        raise BackupError(f"{source}: no such SQLite task database")
    if destination.exists():
        raise BackupError(f"{destination}: already exists (a backup never overwrites a file)")
    if not destination.parent.is_dir():
        raise BackupError(f"{destination}: its folder {destination.parent} does not exist")
    partial = destination.with_name(f".{destination.name}.partial-{os.getpid()}")
    try:
        result = _copy(source, partial)
        _publish(partial, destination)
    except sqlite3.Error as exc:
        raise BackupError(f"backing up {source} to {destination}: {exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    return result


def _publish(partial: Path, destination: Path) -> None:
    """Give the checked copy its name only if nothing has it: a link fails when the name
    exists, even if it appeared after the check above (a rename would replace it)."""
    try:
        os.link(partial, destination)
    except FileExistsError:
        raise BackupError(f"{destination}: already exists (a backup never overwrites a file)") from None
    partial.unlink()
    folder = os.open(destination.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(folder)  # the new name survives a power loss
    finally:
        os.close(folder)


def _copy(source: Path, target: Path) -> BackupResult:
    with contextlib.closing(sqlite3.connect(source, timeout=30)) as src, \
            contextlib.closing(sqlite3.connect(target)) as dst:
        # pages=-1: one step, one read transaction; copied in slices, a commit between two
        # slices would restart the copy, and a busy runner could keep it from ever finishing
        src.backup(dst, pages=-1)
        dst.execute("PRAGMA journal_mode = DELETE")  # one self-contained file (no -wal beside it)
        (check,) = dst.execute("PRAGMA integrity_check").fetchone()
        if check != "ok":
            raise BackupError(f"{target}: the copy fails SQLite's integrity check: {check}")
        version = dst.execute("PRAGMA user_version").fetchone()[0]
        tasks = dst.execute("SELECT count(*) FROM tasks").fetchone()[0]
        events = dst.execute("SELECT count(*) FROM task_events").fetchone()[0]
    with open(target, "rb+") as written:
        os.fsync(written.fileno())
    return BackupResult(version, tasks, events, target.stat().st_size)
