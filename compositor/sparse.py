"""Data ranges of a sparse file (SEEK_DATA / SEEK_HOLE), shared by every copy that skips holes."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os
from pathlib import Path


def data_extents(fd: int, size: int) -> list[tuple[int, int]]:
    """(start, end) byte ranges of the first `size` bytes of fd that hold data, in order.

    Holes are skipped. When holes cannot be probed (a filesystem or kernel without
    SEEK_DATA, or any other error while probing), the whole range is one extent: a caller
    copies zeros rather than loses data.
    """
    extents: list[tuple[int, int]] = []
    pos = 0
    try:
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # no data after pos
                    break
                raise
            if start >= size:
                break
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            extents.append((start, end))
            pos = end
    except (OSError, AttributeError):
        return [(0, size)] if size > 0 else []
    return extents


#: the hole granularity of ext4, xfs and tmpfs on 4 KiB-page machines
HOLE_BLOCK = 4096
_WINDOW = 4 << 20
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02


def punch_zero_blocks(path: Path, block: int = HOLE_BLOCK) -> int:
    """Punch a hole at every all-zero, ``block``-aligned block inside ``path``'s data extents;
    return the bytes punched. The bytes read the same; afterwards the hole map follows from
    them alone. Without it the map is the filesystem's history: ext4 reports an unwritten
    extent as data while its zeroed pages sit in the page cache and as a hole once they are
    evicted, so the same disk gave two different sparse tars (gce-tar) from one run to the next.
    A filesystem that cannot punch holes is left as it is."""
    punched = 0
    with open(path, "r+b") as fh:
        fd = fh.fileno()
        for start, end in data_extents(fd, os.fstat(fd).st_size):
            first = start - start % block
            for base in range(first, end, _WINDOW):
                data = memoryview(os.pread(fd, min(_WINDOW, end - base), base))
                for run_start, run_end in _zero_runs(data, block):
                    if not _punch(fd, base + run_start, run_end - run_start):
                        return punched
                    punched += run_end - run_start
    return punched


def _zero_runs(data: memoryview, block: int) -> list[tuple[int, int]]:
    """Runs of whole all-zero ``block``s in ``data`` (a trailing partial block is never one)."""
    zero = bytes(block)
    runs: list[tuple[int, int]] = []
    for offset in range(0, len(data) - block + 1, block):
        if data[offset:offset + block] != zero:
            continue
        if runs and runs[-1][1] == offset:
            runs[-1] = (runs[-1][0], offset + block)
        else:
            runs.append((offset, offset + block))
    return runs


def _punch(fd: int, offset: int, length: int) -> bool:
    libc = _libc()
    if libc is None:
        return False
    if libc.fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE,
                      ctypes.c_int64(offset), ctypes.c_int64(length)) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EOPNOTSUPP, errno.ENOSYS):
        return False
    raise OSError(err, f"fallocate(PUNCH_HOLE) at {offset}+{length}: {os.strerror(err)}")


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name, use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    return libc
