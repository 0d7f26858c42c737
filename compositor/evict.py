"""Keep the artifact cache under a size limit: the least recently used entries go first.

An entry is a finished artifact (``images/<key>.<ext>`` with its ``<key>.json``), a raw disk
(``raw/<key>.img``) or an extracted layer (``layers/<digest>/``, see layer_cache.py, whose
``layer.json`` stands for it: its lock, its mtime, its recorded size); its last use is its
mtime, which a cache hit renews. Sizes are the blocks
a file really occupies (raw disks are sparse), and a hard-linked file (the ``raw`` format's
artifact is the raw disk itself) is counted once, and freed only with its last name.

An entry is never evicted while a task uses it: the task holds a shared ``flock`` on the file
(:func:`hold_artifact`), and eviction skips any file it cannot lock exclusively, or that this
process holds (on NFS, flock is emulated with POSIX locks, which one process never conflicts
with). Entries used in the last ``min_age`` seconds are kept too, which covers a cache hit
that has not taken its lock yet, and the files a running build is about to publish.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import stat
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .cache import Cache
from .errors import free_bytes

#: entries used more recently than this are never evicted (seconds)
MIN_AGE = 300.0


@dataclass(frozen=True)
class CacheEntry:
    key: str
    #: the artifact or raw disk first, then its facts file if any
    paths: tuple[Path, ...]
    used: float
    #: bytes this entry's files occupy (a file shared with another entry counts in both)
    size: int
    #: an extracted layer's directory, removed whole
    folder: Path | None = None

    @property
    def kind(self) -> str:
        data = self.paths[0]
        if self.folder is not None:
            return "layer"
        return "raw disk" if data.parent.name == "raw" else data.name.split(".", 1)[-1]


@dataclass(frozen=True)
class CacheUsage:
    entries: list[CacheEntry]
    #: bytes on disk, each file counted once
    total: int


@dataclass
class Eviction:
    removed: list[CacheEntry] = field(default_factory=list)
    freed: int = 0
    #: bytes on disk after eviction
    left: int = 0
    #: entries that would have gone but were in use (locked) or recently used
    busy: int = 0


def cache_usage(cache_dir: Path) -> CacheUsage:
    """Every entry of the cache, least recently used first."""
    entries = _scan(Path(cache_dir))
    return CacheUsage(entries, _total(entries))


def evict(
    cache_dir: Path, max_bytes: int | None, *, min_free_bytes: int = 0,
    keep: Iterable[Path] = (), min_age: float = MIN_AGE, now: float | None = None,
) -> Eviction:
    """Remove least recently used entries until the cache occupies at most max_bytes (None:
    no limit) and its file system has at least min_free_bytes free.

    Never removes a path in ``keep``, an entry used in the last ``min_age`` seconds, or a file
    another task holds (see :func:`hold_artifact`)."""
    now = time.time() if now is None else now
    entries = _scan(Path(cache_dir))
    kept = {os.path.abspath(p) for p in keep}
    result = Eviction(left=_total(entries))

    def enough() -> bool:
        return ((max_bytes is None or result.left <= max_bytes)
                and (min_free_bytes <= 0 or free_bytes(Path(cache_dir)) >= min_free_bytes))

    for entry in entries:
        if enough():
            break
        if any(os.path.abspath(p) in kept for p in entry.paths) or now - entry.used < min_age:
            result.busy += 1
            continue
        freed = _remove_entry(entry, min_age, now)
        if freed is None:
            result.busy += 1
            continue
        result.removed.append(entry)
        result.freed += freed
        result.left -= freed
    return result


# Files this process holds, counted: where flock is emulated with POSIX locks (NFS), locks of
# one process never conflict with each other, so eviction also asks this table.
_HELD: dict[tuple[int, int], int] = {}
_HELD_LOCK = threading.Lock()


class ArtifactHold:
    """A shared lock on a cached file: eviction leaves it alone until released.

    Raises FileNotFoundError when the file is gone, also when an evictor removed it while
    this hold waited for the lock (the caller builds it again)."""

    def __init__(self, path: Path, *, wait: bool = True) -> None:
        self.path = path
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            # without wait: BlockingIOError while an evictor holds the file
            fcntl.flock(fd, fcntl.LOCK_SH | (0 if wait else fcntl.LOCK_NB))
            if not _names(path, os.fstat(fd)):
                raise FileNotFoundError(errno.ENOENT, "removed from the cache", str(path))
        except BaseException:
            os.close(fd)
            raise
        self._fd: int | None = fd
        st = os.fstat(fd)
        self._inode = (st.st_dev, st.st_ino)
        with _HELD_LOCK:
            _HELD[self._inode] = _HELD.get(self._inode, 0) + 1

    def release(self) -> None:
        if self._fd is not None:
            with _HELD_LOCK:
                _HELD[self._inode] -= 1
                if not _HELD[self._inode]:
                    del _HELD[self._inode]
            os.close(self._fd)  # closing the last descriptor drops the lock
            self._fd = None

    def __enter__(self) -> ArtifactHold:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def hold_artifact(path: Path, *, wait: bool = True) -> ArtifactHold:
    return ArtifactHold(Path(path), wait=wait)


async def hold_artifact_async(path: Path) -> ArtifactHold:
    """hold_artifact for an event loop: never blocks it while an evictor holds the file (a
    hold taken in a worker thread could leak if the caller were cancelled meanwhile)."""
    while True:
        try:
            return hold_artifact(path, wait=False)
        except BlockingIOError:
            await asyncio.sleep(0.05)


def _held_here(st: os.stat_result) -> bool:
    with _HELD_LOCK:
        return (st.st_dev, st.st_ino) in _HELD


def _names(path: Path, st: os.stat_result) -> bool:
    """Whether path (still) names the open file st."""
    try:
        now = path.lstat()
    except FileNotFoundError:
        return False
    return (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino) and st.st_nlink > 0


def _scan(root: Path) -> list[CacheEntry]:
    groups: dict[tuple[str, str], list[tuple[Path, os.stat_result]]] = {}
    for folder in ("images", "raw"):
        try:
            names = os.listdir(root / folder)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for name in names:
            path = root / folder / name
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode):
                groups.setdefault((folder, name.split(".", 1)[0]), []).append((path, st))
    entries = []
    for (_, key), files in groups.items():
        files.sort(key=lambda item: item[0].suffix == ".json")  # the data file first
        used = max(st.st_mtime for _, st in files)
        size = sum(st.st_blocks * 512 for _, st in files)
        entries.append(CacheEntry(key, tuple(p for p, _ in files), used, size))
    entries += _layer_entries(root)
    entries.sort(key=lambda e: e.used)
    return entries


def _layer_entries(root: Path) -> list[CacheEntry]:
    from .layer_cache import FACTS, read_facts  # layer_cache holds its entries with this module

    try:
        names = os.listdir(root / "layers")
    except (FileNotFoundError, NotADirectoryError):
        return []
    entries = []
    for name in names:
        folder = root / "layers" / name
        facts = read_facts(folder)
        try:
            used = (folder / FACTS).stat().st_mtime
        except OSError:
            continue  # not (or no longer) an entry: layer_cache discards broken ones it meets
        size = facts.disk_bytes if facts is not None else 0
        entries.append(CacheEntry(name, (folder / FACTS,), used, size, folder))
    return entries


def _total(entries: list[CacheEntry]) -> int:
    seen: dict[tuple[int, int], int] = {}
    layers = 0
    for entry in entries:
        if entry.folder is not None:
            layers += entry.size
            continue
        for path in entry.paths:
            with contextlib.suppress(FileNotFoundError):
                st = path.lstat()
                seen[(st.st_dev, st.st_ino)] = st.st_blocks * 512
    return sum(seen.values()) + layers


def _remove_entry(entry: CacheEntry, min_age: float, now: float) -> int | None:
    """Unlink the entry's files unless it is held or was used since the scan; bytes freed,
    or None when it is in use."""
    data = entry.paths[0]
    try:
        fd = os.open(data, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        fd = None  # gone already (another runner evicted it): remove the rest
    freed = 0
    try:
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return None
            # a cache hit may have renewed it after the scan: look again under the lock
            st = os.fstat(fd)
            if now - st.st_mtime < min_age or not _names(data, st) or _held_here(st):
                return None
        if entry.folder is not None:
            Cache(entry.folder.parent.parent).retire(entry.folder)
            return entry.size
        # a lookup needs both the artifact and its facts: it misses once the first is gone
        for path in entry.paths:
            try:
                st = path.lstat()
                path.unlink()
            except FileNotFoundError:
                continue
            if st.st_nlink == 1:  # its last name: the blocks are free now
                freed += st.st_blocks * 512
    finally:
        if fd is not None:
            os.close(fd)
    return freed
