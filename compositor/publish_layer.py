"""layerbot's own publish layer (ExtraFiles and symlinks), written as the highest layer.

Its entries are stamped with the build epoch (identity.py), not the clock, so a rebuild gives
the same disk."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from . import paths
from .errors import LayerError
from .layertree import LayerTree
from .meta import Meta, implicit_dir
from .spec import ImageSpec

PUBLISH_LAYER = "layerbot publish layer"
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC


def write_publish_layer(spec: ImageSpec, dest: Path, epoch: int) -> LayerTree:
    tree = LayerTree(PUBLISH_LAYER, "platform", dest, owned=True)
    meta: dict[str, Meta] = tree.meta  # type: ignore[assignment]
    now = epoch * 1_000_000_000
    for extra in spec.extra_files:
        rel = _place(tree, meta, extra.path, now)
        fd = os.open(dest / rel, _FLAGS, 0o600)
        try:
            view = memoryview(extra.content)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.utime(dest / rel, ns=(now, now))
        meta[rel] = Meta(stat.S_IFREG | stat.S_IMODE(extra.mode), extra.uid, extra.gid, now)
    for link_path, target in spec.extra_symlinks:
        rel = _place(tree, meta, link_path, now)
        os.symlink(target, dest / rel)
        os.utime(dest / rel, ns=(now, now), follow_symlinks=False)  # mke2fs copies the link's own
        meta[rel] = Meta(stat.S_IFLNK | 0o777, 0, 0, now)
    return tree


def _place(tree: LayerTree, meta: dict[str, Meta], image_path: str, now: int) -> str:
    """Checked relative path for image_path, with its parent directories created."""
    if not image_path.startswith("/"):
        raise LayerError(tree.name, image_path, "extra paths must be absolute")
    try:
        rel = paths.clean_member_name(image_path.lstrip("/"))
    except paths.UnsafePath as exc:
        raise LayerError(tree.name, image_path, f"unsafe path ({exc})") from None
    if not rel:
        raise LayerError(tree.name, image_path, "cannot replace the root directory")
    for anc in paths.ancestors(rel):
        known = meta.get(anc)
        if known is None:
            os.mkdir(tree.root / anc, 0o700)
            meta[anc] = implicit_dir(now)
        elif not known.is_dir:
            raise LayerError(tree.name, image_path, f"{anc!r} is not a directory")
    known = meta.pop(rel, None)
    if known is not None:
        if known.is_dir:
            raise LayerError(tree.name, image_path, "is already a directory")
        os.unlink(tree.root / rel)
    return rel
