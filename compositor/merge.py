"""Merge layers, lowest priority first, into one staging tree without copying file data.

Entries of layers the compositor extracted itself are moved in (rename: a whole new subtree is
one rename); entries of directory layers are hard-linked (copied only where the kernel refuses a
link). The metadata table mirrors the staging tree exactly, so every safety decision (is this
parent a real directory?) is answered from it, and nothing is ever followed through a symlink.
"""

from __future__ import annotations

import os
import shutil
import stat
import threading
from pathlib import Path

from . import paths
from .errors import LayerError
from .layertree import LayerTree, check_cancel
from .meta import Meta

_PLACEHOLDER_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class Merger:
    def __init__(self, root: Path, cancel: threading.Event) -> None:
        self.root = str(root)
        self.cancel = cancel
        self.meta: dict[str, Meta] = {}
        self._copies: dict[tuple[int, int], str] = {}  # directory-layer inode -> staged path

    def apply(self, tree: LayerTree) -> None:
        """Whiteouts first (they hide lower layers only), then the layer's own entries."""
        for rel in tree.opaque:
            self._hide_children(rel)
        for rel in tree.whiteouts:
            if self._reachable(rel):
                self._remove(rel)
        self._copies.clear()
        self._merge_dir(tree, "")

    # -- whiteouts -----------------------------------------------------------------------------
    def _reachable(self, rel: str) -> bool:
        """rel is in the staging tree and no ancestor is a symlink or a file."""
        if rel not in self.meta:
            return False
        return all(self.meta.get(a, _NOT_DIR).is_dir for a in paths.ancestors(rel))

    def _hide_children(self, rel: str) -> None:
        if rel and not (self._reachable(rel) and self.meta[rel].is_dir):
            return
        for entry in list(os.scandir(os.path.join(self.root, rel))):
            self._remove(paths.join(rel, entry.name))

    def _remove(self, rel: str) -> None:
        known = self.meta.pop(rel)
        path = os.path.join(self.root, rel)
        if not known.is_dir:
            os.unlink(path)
            return
        for dirpath, dirnames, filenames in os.walk(path):
            sub = os.path.relpath(dirpath, self.root)
            for name in dirnames + filenames:
                self.meta.pop(f"{sub}/{name}", None)
        shutil.rmtree(path)

    # -- entries -------------------------------------------------------------------------------
    def _merge_dir(self, tree: LayerTree, rel_dir: str) -> None:
        check_cancel(self.cancel)
        src_dir = os.path.join(tree.root, rel_dir)
        layer_meta: dict[str, Meta] = tree.meta  # type: ignore[assignment]
        for entry in list(os.scandir(src_dir)):
            rel = paths.join(rel_dir, entry.name)
            mine = layer_meta.get(rel)
            if mine is None:
                continue  # whiteout markers and sockets of a directory layer
            src, dst = entry.path, os.path.join(self.root, rel)
            lower = self.meta.get(rel)
            if mine.is_dir:
                if lower is not None and lower.is_dir:
                    self._merge_dir(tree, rel)
                    if not mine.implicit:
                        self.meta[rel] = mine
                    continue
                if lower is not None:
                    if mine.implicit:
                        kind = "symlink" if lower.is_symlink else "file"
                        raise LayerError(
                            tree.name, rel + "/…",
                            f"path passes through {rel!r}, a {kind} in a lower layer",
                        )
                    self._remove(rel)
                if tree.owned:
                    os.rename(src, dst)
                    self._adopt(layer_meta, rel)
                else:
                    os.mkdir(dst, 0o700)
                    self.meta[rel] = mine
                    self._merge_dir(tree, rel)
                continue
            if lower is not None:
                self._remove(rel)
            if tree.owned:
                os.rename(src, dst)
            else:
                self._link_in(src, dst, mine)
            self.meta[rel] = mine

    def _adopt(self, layer_meta: dict[str, Meta], rel: str) -> None:
        """Record the metadata of a subtree that was moved in whole."""
        self.meta[rel] = layer_meta[rel]
        for dirpath, dirnames, filenames in os.walk(os.path.join(self.root, rel)):
            sub = os.path.relpath(dirpath, self.root)
            for name in dirnames + filenames:
                key = f"{sub}/{name}"
                self.meta[key] = layer_meta[key]

    def _link_in(self, src: str, dst: str, meta: Meta) -> None:
        """Stage an entry of a directory layer without changing the user's files."""
        if stat.S_ISLNK(meta.mode):
            os.symlink(os.readlink(src), dst)
            os.utime(dst, ns=(meta.mtime_ns, meta.mtime_ns), follow_symlinks=False)
            return
        if not stat.S_ISREG(meta.mode):  # device node or fifo: the debugfs fixup makes it
            os.close(os.open(dst, _PLACEHOLDER_FLAGS, 0o600))
            return
        try:
            os.link(src, dst, follow_symlinks=False)
            return
        except OSError:
            pass  # another filesystem, or protected_hardlinks: copy instead
        st = os.lstat(src)
        first = self._copies.get((st.st_dev, st.st_ino))
        if first is not None:
            os.link(first, dst)
            return
        shutil.copyfile(src, dst, follow_symlinks=False)
        os.utime(dst, ns=(meta.mtime_ns, meta.mtime_ns))
        if st.st_nlink > 1:
            self._copies[(st.st_dev, st.st_ino)] = dst


_NOT_DIR = Meta(stat.S_IFREG)
