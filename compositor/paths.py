"""Paths from names: layer members (normalised, relative) and catalog names joined to a
target folder, never escaping the tree or the folder."""

from __future__ import annotations

import os
import stat
from pathlib import Path

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


def join_inside(base: Path, *names: str) -> Path:
    """``base/name/...`` for names taken from the catalog (a template, a task, a VM name).

    Each name must be one ordinary path component, and the result, symlinks resolved, must
    stay inside ``base`` (itself resolved): a name like '../x', or a symlink planted under
    ``base``, cannot make a publish write elsewhere. Raises UnsafePath."""
    for name in names:
        if name in ("", ".", "..") or "/" in name or "\0" in name:
            raise UnsafePath(f"{name!r} is not a plain file or folder name")
    path = base.joinpath(*names)
    real_base = base.resolve()
    if not path.resolve().is_relative_to(real_base):
        raise UnsafePath(f"{str(path)!r} leads outside {str(real_base)!r}")
    return path
