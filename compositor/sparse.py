"""Data ranges of a sparse file (SEEK_DATA / SEEK_HOLE), shared by every copy that skips holes."""

from __future__ import annotations

import errno
import os


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
