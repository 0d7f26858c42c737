"""What the image keeps of each entry: owner, mode, mtime, device number.

The staging tree is written by an ordinary user, so its real owners and modes are wrong. The
true metadata lives in this table and reaches the image through fixup.py's debugfs script.
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
