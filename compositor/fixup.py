"""The debugfs script that gives every inode its layer's owner, mode and device number.

mke2fs -d copies owner and mode from the staging tree, which an ordinary user wrote: all of it
is owned by that user with private modes, and device nodes are empty stand-in files. This
script corrects each inode afterwards (`sif` for uid, gid and mode; `rm` + `mknod` for device
nodes and fifos) in one debugfs run. Measured on 9,342 entries: 0.5 s, against 2 s more for
running mke2fs under fakeroot.

mke2fs -d also copies each staged file's atime and ctime, which say when this build extracted
or read it; times_script() replaces them so a rebuild writes the same inodes.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .errors import CompositorError
from .meta import Meta


@dataclass(frozen=True, slots=True)
class Fix:
    rel: str
    meta: Meta
    staged_uid: int
    staged_gid: int
    staged_mode: int


def quote(path: str) -> str:
    """A debugfs argument: double-quoted, inner quotes doubled (lib/ss/parse.c)."""
    if "\n" in path or "\r" in path:
        raise CompositorError(f"file names with line breaks are not supported: {path!r}")
    return '"' + path.replace('"', '""') + '"'


def fixup_script(fixes: Iterable[Fix], moved: Mapping[str, str]) -> list[str]:
    lines: list[str] = []
    for fix in fixes:
        meta = fix.meta
        staged = "/" + moved.get(fix.rel, fix.rel)
        target = quote(staged)
        special = _special(meta)
        if special is not None:
            folder, _, name = staged.rpartition("/")
            lines.append(f"rm {target}")
            lines.append(f"cd {quote(folder or '/')}")  # mknod creates its name in cwd
            lines.append(f"mknod {quote(name)} {special}")
            lines.append("cd /")
            lines.append(f"sif {target} mode 0{meta.mode:o}")
            lines.append(f"sif {target} uid {meta.uid}")
            lines.append(f"sif {target} gid {meta.gid}")
            lines.append(f"sif {target} mtime @{meta.mtime_ns // 1_000_000_000}")
            continue
        if meta.mode != fix.staged_mode and not stat.S_ISLNK(meta.mode):
            lines.append(f"sif {target} mode 0{meta.mode:o}")
        if meta.uid != fix.staged_uid:
            lines.append(f"sif {target} uid {meta.uid}")
        if meta.gid != fix.staged_gid:
            lines.append(f"sif {target} gid {meta.gid}")
    return lines


def _special(meta: Meta) -> str | None:
    """debugfs mknod arguments for device nodes and fifos, else None."""
    if stat.S_ISCHR(meta.mode) or stat.S_ISBLK(meta.mode):
        kind = "c" if stat.S_ISCHR(meta.mode) else "b"
        return f"{kind} {os.major(meta.rdev)} {os.minor(meta.rdev)}"
    if stat.S_ISFIFO(meta.mode):
        return "p"
    return None


def times_script(meta: Mapping[str, Meta], moved: Mapping[str, str], epoch: int) -> list[str]:
    """atime := the entry's mtime, ctime := the build epoch, for every entry.

    Sorted by path: hard links share an inode, and the last line for it must always be the same.
    """
    lines: list[str] = []
    for rel in sorted(meta):
        target = quote("/" + moved.get(rel, rel))
        lines.append(f"sif {target} atime @{meta[rel].mtime_ns // 1_000_000_000}")
        lines.append(f"sif {target} ctime @{epoch}")
    return lines
