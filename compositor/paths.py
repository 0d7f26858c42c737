"""Layer member names: normalised, relative, and never escaping the tree."""

from __future__ import annotations

import os
import stat

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"


class UnsafePath(ValueError):
    """The name is absolute or climbs out with '..'."""


def clean_member_name(name: str) -> str:
    """'./usr//bin/' -> 'usr/bin'; '' for the root itself. Raises UnsafePath."""
    if name.startswith("/"):
        raise UnsafePath("absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafePath("path contains '..'")
    return "/".join(parts)


def parent_of(rel: str) -> str:
    return rel.rpartition("/")[0]


def base_of(rel: str) -> str:
    return rel.rpartition("/")[2]


def join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def ancestors(rel: str) -> list[str]:
    """'a/b/c' -> ['a', 'a/b'] (proper ancestors, outermost first)."""
    parts = rel.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def real_dir_chain(root: str, rel: str) -> bool:
    """True when every proper ancestor of rel under root is a real directory (no symlink)."""
    for anc in ancestors(rel):
        try:
            st = os.lstat(os.path.join(root, anc))
        except FileNotFoundError:
            return False
        if not stat.S_ISDIR(st.st_mode):
            return False
    return True
