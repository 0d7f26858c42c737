"""The running count of bytes a template's layers unpack to, against the size of its disk.

Tar layers are unpacked into the work folder before they are merged, so without a bound a
small archive (a gzip bomb, a header claiming 1 TiB) would fill this machine's disk long before
the merged tree's "does it fit" check. Every entry is checked when its header is read (one
claiming more than is left fails before a byte is written) and its data is charged chunk by
chunk before it is written; layers unpacked at the same time share one count.

The limit is the disk's size: what its filesystem can hold plus the filesystem's own overhead
as a margin, because upper layers may still replace or delete files of lower ones.

Entries are counted too: each is an inode on this machine and a few hundred bytes of memory,
and an empty one costs only ENTRY_BYTES of the byte count. They stop at one per block of the
disk's filesystem (an inode table mke2fs can still make, 4 times its default count), and,
once a work folder is watched, before its filesystem's free inodes run out.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

from .errors import DiskTooSmallError, HostInodesError, ScratchFull, TooManyEntriesError

BLOCK = 4096
#: what an entry costs besides its data blocks (an ext4 inode; NTFS's MFT record is 1 KiB,
#: but its small files live inside the record)
ENTRY_BYTES = 256
#: Inodes left free on this machine's work folder (for the merge, the image, everyone else)
HOST_SPARE_INODES = 10_000


def entry_cost(size: int) -> int:
    """Bytes an entry with `size` bytes of data takes on a filesystem: whole blocks + inode."""
    return -(-size // BLOCK) * BLOCK + ENTRY_BYTES


def disk_capacity(filesystem: str, size_gib: int) -> int:
    """At most this many bytes of files fit on the template's disk (the figure the
    filesystem builders check the merged tree against; NTFS's without its per-file records)."""
    from . import disk
    from .ntfs import ntfs_capacity

    layout = disk.layout_for(size_gib)
    return ntfs_capacity(layout, 0) if filesystem == "ntfs" else disk.fs_capacity(layout)


def disk_entries(size_gib: int) -> int:
    """At most this many entries fit the template's disk: one per 4 KiB block (ext4's inode
    count, which compositor.disk raises from mke2fs's default for many small files, and
    NTFS's clusters)."""
    from . import disk

    return disk.layout_for(size_gib).fs_blocks


class SpaceBudget:
    """Thread-safe: layers are unpacked two at a time."""

    def __init__(self, size_gib: int, capacity: int, *, limit: int | None = None,
                 max_entries: int | None = None) -> None:
        self.size_gib = size_gib
        self.capacity = capacity
        self.limit = max(capacity, size_gib << 30) if limit is None else limit
        self.max_entries = disk_entries(size_gib) if max_entries is None else max_entries
        self.used = 0
        self.entries = 0
        self.host: tuple[Path, int] | None = None  # the work folder and its free inodes
        #: the bytes a work folder in RAM has room for (compositor.scratch)
        self.ram_limit: int | None = None
        self._lock = threading.Lock()

    @classmethod
    def for_disk(cls, filesystem: str, size_gib: int) -> SpaceBudget:
        return cls(size_gib, disk_capacity(filesystem, size_gib))

    @classmethod
    def unlimited(cls) -> SpaceBudget:
        """Counts, never stops (a layer unpacked on its own, outside any image)."""
        return cls(0, 0, limit=sys.maxsize, max_entries=sys.maxsize)

    def watch_host(self, work: Path) -> None:
        """Also stop before the work folder's filesystem runs out of free inodes (a filesystem
        that reports none, like btrfs, allocates them as it goes)."""
        st = os.statvfs(work)
        if st.f_files:
            self.host = (work, st.f_favail)

    def add_entry(self, layer: str, member: str | None) -> None:
        """Count one more entry, before it is made; raise past the disk's or the host's limit."""
        with self._lock:
            self.entries += 1
            entries = self.entries
        if entries > self.max_entries:
            raise TooManyEntriesError(self.max_entries, self.size_gib, layer=layer, member=member)
        if self.host is not None and entries > self.host[1] - HOST_SPARE_INODES:
            raise HostInodesError(self.host[0], self.host[1], layer)

    def check(self, layer: str, member: str | None, size: int) -> None:
        """Raise now if an entry with `size` bytes of data cannot fit (charges nothing)."""
        needed = self.used + entry_cost(size)
        if needed > self.limit:
            raise self.too_big(layer, member, needed)

    def charge(self, layer: str, member: str | None, n: int) -> None:
        """Count n more bytes, before they are written; raise if that passes the limit."""
        with self._lock:
            self.used += n
            used = self.used
        if used > self.limit:
            raise self.too_big(layer, member, used)
        if self.ram_limit is not None and used > self.ram_limit:
            raise ScratchFull()

    def refund(self, n: int) -> None:
        """Bytes charged but not written (a short read at the end of the data)."""
        with self._lock:
            self.used -= n

    def too_big(self, layer: str, member: str | None, needed: int) -> DiskTooSmallError:
        return DiskTooSmallError(needed, self.capacity, self.size_gib, layer=layer, member=member)
