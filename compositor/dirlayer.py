"""A layer given as a directory: read its entries' metadata and whiteouts, never change it.
Its files count toward the image's SpaceBudget like a tar layer's (hard links once)."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

from . import paths
from .budget import SpaceBudget, entry_cost
from .errors import LayerError
from .layertree import LayerTree, check_cancel
from .meta import Meta, from_stat
from .spec import LayerSource


def scan_dir_layer(
    layer: LayerSource, cancel: threading.Event, budget: SpaceBudget | None = None
) -> LayerTree:
    budget = budget or SpaceBudget.unlimited()
    linked: set[tuple[int, int]] = set()
    root = Path(layer.source)
    tree = LayerTree(layer.name, layer.kind, root, owned=False)
    meta: dict[str, Meta] = tree.meta  # type: ignore[assignment]
    stack = [""]
    while stack:
        check_cancel(cancel)
        rel_dir = stack.pop()
        try:
            entries = list(os.scandir(os.path.join(root, rel_dir)))
        except OSError as exc:
            raise LayerError(layer.name, rel_dir or "/", f"cannot read: {exc.strerror}") from exc
        for entry in entries:
            rel = paths.join(rel_dir, entry.name)
            name = entry.name
            if name.startswith(paths.WHITEOUT_PREFIX):
                if name == paths.OPAQUE_MARKER:
                    tree.opaque.append(rel_dir)
                elif not name.startswith(paths.WHITEOUT_PREFIX * 2):
                    tree.whiteouts.append(paths.join(rel_dir, name[len(paths.WHITEOUT_PREFIX) :]))
                continue
            st = entry.stat(follow_symlinks=False)
            if (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)) and layer.kind != "os":
                raise LayerError(layer.name, rel, f"device node in an {layer.kind} layer")
            if stat.S_ISSOCK(st.st_mode):
                continue  # sockets are runtime objects; images do not carry them
            meta[rel] = from_stat(st)
            size = st.st_size if stat.S_ISREG(st.st_mode) else 0
            if st.st_nlink > 1 and size:
                if (st.st_dev, st.st_ino) in linked:
                    size = 0
                linked.add((st.st_dev, st.st_ino))
            budget.charge(layer.name, rel, entry_cost(size))
            budget.add_entry(layer.name, rel)
            if stat.S_ISDIR(st.st_mode):
                stack.append(rel)
    return tree
