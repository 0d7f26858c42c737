"""Where a disk file holds data: its 512-byte pages that are not all zero, as byte ranges.

A fixed VHD is mostly zeros and a page blob stores only the pages written, so the upload
sends only these. The file system says where data may be (SEEK_DATA/SEEK_HOLE, no read);
reading those extents says which of their pages are zero. Ranges are ``(start, end)``, end
exclusive, sorted, never overlapping nor touching (adjacent ones are merged).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Iterator, Sequence

PAGE = 512
MIB = 1 << 20
#: Azure's limit for one Put Page request
MAX_REQUEST = 4 * MIB
#: bytes read at once while looking for zero pages
WINDOW = 4 * MIB
#: a zero check of this many bytes at once before looking at single pages
_BLOCK = 64 * 1024
_ZERO_BLOCK = bytes(_BLOCK)

Range = tuple[int, int]


def _floor(value: int) -> int:
    return value - value % PAGE


def _ceil(value: int) -> int:
    return _floor(value + PAGE - 1)


def data_extents(fd: int, size: int) -> list[Range]:
    """The page-aligned extents of the file that may hold data; the holes between them read as
    zeros. A file system without SEEK_DATA gives one extent, the whole file."""
    found: list[Range] = []
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # nothing but a hole from offset to the end
                break
            if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
                return [(0, size)] if size else []
            raise
        end = os.lseek(fd, start, os.SEEK_HOLE)
        _append(found, (_floor(start), min(size, _ceil(end))))
        offset = end
    return found


def nonzero_runs(fd: int, extents: Iterable[Range], window: int = WINDOW) -> Iterator[Range]:
    """The ranges of non-zero pages inside ``extents``, read ``window`` bytes at a time."""
    pending: Range | None = None
    for start, end in extents:
        for base in range(start, end, window):
            data = os.pread(fd, min(window, end - base), base)
            for run in _runs_in(data, base):
                if pending is not None and pending[1] == run[0]:
                    pending = (pending[0], run[1])
                    continue
                if pending is not None:
                    yield pending
                pending = run
    if pending is not None:
        yield pending


def _runs_in(data: bytes, base: int) -> Iterator[Range]:
    """Runs of non-zero pages in ``data``, which starts at file offset ``base``."""
    run_start: int | None = None
    size = len(data)
    pos = 0
    while pos < size:
        block_end = min(pos + _BLOCK, size)
        if run_start is None and data[pos:block_end] == _ZERO_BLOCK[: block_end - pos]:
            pos = block_end
            continue
        for page in range(pos, block_end, PAGE):
            page_end = min(page + PAGE, size)
            zero = data.count(0, page, page_end) == page_end - page
            if zero and run_start is not None:
                yield base + run_start, base + page
                run_start = None
            elif not zero and run_start is None:
                run_start = page
        pos = block_end
    if run_start is not None:
        yield base + run_start, base + size


def merged(ranges: Iterable[Range]) -> list[Range]:
    """The union of ``ranges`` (any order, overlapping or not), sorted and merged."""
    out: list[Range] = []
    for start, end in sorted(r for r in ranges if r[1] > r[0]):
        _append(out, (start, end))
    return out


def _append(out: list[Range], item: Range) -> None:
    if out and item[0] <= out[-1][1]:
        out[-1] = (out[-1][0], max(out[-1][1], item[1]))
    else:
        out.append(item)


def subtract(ranges: Iterable[Range], taken: Sequence[Range]) -> Iterator[Range]:
    """The parts of sorted ``ranges`` outside sorted, merged ``taken`` (lazily, in one pass)."""
    j = 0
    for start, end in ranges:
        while j < len(taken) and taken[j][1] <= start:
            j += 1
        k = j
        cursor = start
        while k < len(taken) and taken[k][0] < end:
            if taken[k][0] > cursor:
                yield cursor, taken[k][0]
            cursor = max(cursor, taken[k][1])
            k += 1
        if cursor < end:
            yield cursor, end


def split(ranges: Iterable[Range], limit: int = MAX_REQUEST) -> Iterator[Range]:
    """``ranges`` cut into pieces of at most ``limit`` bytes."""
    for start, end in ranges:
        for piece in range(start, end, limit):
            yield piece, min(piece + limit, end)


def total(ranges: Iterable[Range]) -> int:
    return sum(end - start for start, end in ranges)
