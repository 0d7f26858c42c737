"""Walk the merged staging tree once: metadata fixes, size estimate, directories to treat."""

from __future__ import annotations

import os
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .fixup import Fix
from .layertree import check_cancel
from .meta import Meta

BLOCK = 4096
#: directories with at least this many non-directory entries are populated specially
BIG_DIR_ENTRIES = 2000
_FAST_SYMLINK_MAX = 59  # targets up to this length live in the inode


@dataclass
class StageSummary:
    entries: int = 0
    #: bytes of filesystem blocks the content needs (data, directories, long symlinks)
    content_bytes: int = 0
    dir_mtimes: list[tuple[str, int]] = field(default_factory=list)
    big_dirs: list[str] = field(default_factory=list)
    #: entries whose staged owner or mode differs from the layer's
    fixes: list[Fix] = field(default_factory=list)


def summarize(root: Path, meta: dict[str, Meta], cancel: threading.Event) -> StageSummary:
    summary = StageSummary()
    seen_inodes: set[int] = set()
    stack = [""]
    while stack:
        check_cancel(cancel)
        rel_dir = stack.pop()
        files = 0
        dirent_bytes = 24
        for entry in os.scandir(os.path.join(root, rel_dir)):
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            st = entry.stat(follow_symlinks=False)
            m = meta[rel]
            if (m.mode, m.uid, m.gid) != (st.st_mode, st.st_uid, st.st_gid):
                summary.fixes.append(Fix(rel, m, st.st_uid, st.st_gid, st.st_mode))
            summary.entries += 1
            dirent_bytes += 8 + (len(os.fsencode(entry.name)) + 3) // 4 * 4
            if stat.S_ISDIR(st.st_mode):
                stack.append(rel)
                summary.dir_mtimes.append((rel, m.mtime_ns))
                continue
            files += 1
            if stat.S_ISREG(st.st_mode) and stat.S_ISREG(m.mode):
                if st.st_nlink == 1 or st.st_ino not in seen_inodes:
                    summary.content_bytes += -(-st.st_size // BLOCK) * BLOCK
                    if st.st_nlink > 1:
                        seen_inodes.add(st.st_ino)
            elif stat.S_ISLNK(st.st_mode) and st.st_size > _FAST_SYMLINK_MAX:
                summary.content_bytes += BLOCK
        summary.content_bytes += -(-dirent_bytes // BLOCK) * BLOCK
        if files >= BIG_DIR_ENTRIES and rel_dir:
            summary.big_dirs.append(rel_dir)
    return summary


def set_dir_mtimes(root: Path, dir_mtimes: list[tuple[str, int]]) -> None:
    for rel, mtime_ns in dir_mtimes:
        os.utime(os.path.join(root, rel), ns=(mtime_ns, mtime_ns), follow_symlinks=False)
