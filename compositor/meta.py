"""What the image keeps of each entry (owner, mode, times, device number), and fakeroot's view of it.

The staging tree is written by an ordinary user, so its real owners and modes are wrong. The
true metadata lives in a table; it reaches mke2fs through a fakeroot database (one line per
inode: dev, ino, mode, uid, gid, nlink, rdev) that `fakeroot -i` loads before running mke2fs.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Meta:
    mode: int  # full st_mode: file type and permission bits (setuid etc. included)
    uid: int = 0
    gid: int = 0
    mtime_ns: int = 0
    rdev: int = 0
    #: a directory the layer did not list (created for a member below it)
    implicit: bool = False

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.mode)

    @property
    def is_device(self) -> bool:
        return stat.S_ISCHR(self.mode) or stat.S_ISBLK(self.mode)


def implicit_dir(mtime_ns: int) -> Meta:
    return Meta(stat.S_IFDIR | 0o755, 0, 0, mtime_ns, 0, implicit=True)


def from_stat(st: os.stat_result) -> Meta:
    return Meta(st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_rdev)


def fakeroot_line(st: os.stat_result, meta: Meta) -> str:
    return (
        f"dev={st.st_dev:x},ino={st.st_ino},mode={meta.mode:o},uid={meta.uid},"
        f"gid={meta.gid},nlink={st.st_nlink},rdev={meta.rdev}\n"
    )
