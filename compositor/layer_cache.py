"""Extracted tar layers kept by layer digest, so a republish unpacks only the layers that changed.

Layout under cache_dir (next to cache.py's images/ and raw/):
  layers/<digest>/layer.json   small facts (version, entry count, bytes, disk blocks, budget cost);
                               its flock is the entry's hold and its mtime the entry's last use
  layers/<digest>/table.json   the LayerTree's metadata table, whiteouts and opaque directories
  layers/<digest>/tree/        the extracted entries (files 0600, dirs 0700: owners and modes
                               live in the table, as for any extracted layer)

A layer is extracted straight into ``tmp/tmp-<host>-<pid>-<random>.layer/`` (swept like every
cache temp when its process dies) and renamed into place once complete. Builds merge a cached
tree as a not-owned LayerTree: its files are hard-linked (or copied, across file systems) into
the staging tree, never moved or changed. A build holds every entry it uses (shared flock on
layer.json) until its raw disk is written; evict.py removes unheld entries least recently used
first, like images. Before use an entry is checked against its table (every path, its type, a
regular file's size and mtime): a damaged or partial entry is discarded and extracted again.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import stat
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from .budget import SpaceBudget, entry_cost
from .cache import Cache
from .digest import walk_entries
from .evict import ArtifactHold, hold_artifact
from .layertree import LayerTree
from .meta import Meta
from .spec import LayerSource
from .sweep import CACHE_TEMP_PREFIX, owner_prefix

VERSION = 1
#: set to "0" to build without the layer cache (every tar layer extracted into the work folder)
ENABLE_ENV = "LAYERBOT_LAYER_CACHE"
FACTS = "layer.json"
TABLE = "table.json"
TREE = "tree"


@dataclass(frozen=True)
class LayerFacts:
    entries: int
    #: apparent bytes of the regular files (each inode once)
    bytes: int
    #: blocks the entry occupies (what eviction frees)
    disk_bytes: int
    #: what extracting it charges a SpaceBudget: entry costs of the tree, whiteouts included
    cost: int


def layer_cache_enabled() -> bool:
    return os.environ.get(ENABLE_ENV, "1") != "0"


def read_facts(entry: Path) -> LayerFacts | None:
    """The facts of layers/<digest>, or None when missing or not of this version."""
    try:
        doc = json.loads((entry / FACTS).read_text())
        if doc.get("v") != VERSION:
            return None
        return LayerFacts(int(doc["entries"]), int(doc["bytes"]), int(doc["disk_bytes"]),
                          int(doc["cost"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


class BrokenEntry(Exception):
    """A cached layer does not match its table (damaged, partial, or written by another version)."""


class LayerCache:
    """One build's view of the extracted-layer cache: the entries it holds and its temps.
    Thread-safe (layers are prepared two at a time)."""

    def __init__(self, cache_dir: Path) -> None:
        self.cache = Cache(Path(cache_dir))
        self.root = Path(cache_dir) / "layers"
        self._holds: list[ArtifactHold] = []
        self._temps: list[Path] = []
        self._lock = threading.Lock()

    def entry(self, digest: str) -> Path:
        return self.root / digest

    # -- reuse ---------------------------------------------------------------------------------
    def open(self, digest: str, layer: LayerSource, budget: SpaceBudget) -> LayerTree | None:
        """The cached tree of digest as a held, not-owned LayerTree, charged to budget; None on
        a miss. A broken entry is discarded (None); one whose kind forbids its content (device
        nodes in an app layer) is left for extraction to report."""
        entry = self.entry(digest)
        try:
            hold = hold_artifact(entry / FACTS)
        except FileNotFoundError:
            if entry.exists():  # a damaged entry: without its facts it can never be used
                self.discard(entry)
            return None
        try:
            facts = read_facts(entry)
            if facts is None:
                raise BrokenEntry(f"{entry / FACTS} is unreadable")
            tree, sizes = _load_table(entry, layer)
            _verify(entry / TREE, tree, sizes)
        except BrokenEntry:
            hold.release()
            self.discard(entry)
            return None
        if layer.kind != "os" and any(m.is_device for m in tree.meta.values()):  # type: ignore[attr-defined]
            hold.release()
            return None
        budget.charge(layer.name, None, facts.cost)
        for _ in range(facts.entries):
            budget.add_entry(layer.name, None)
        with self._lock:
            self._holds.append(hold)
        Cache.touch(entry / FACTS)
        return tree

    # -- storing -------------------------------------------------------------------------------
    def new_extraction(self) -> Path:
        """An empty directory to extract a layer into (``<it>/tree``), removed by close()
        unless store() moved it into the cache."""
        temp = Path(tempfile.mkdtemp(dir=self.cache.temp_dir(), suffix=".layer",
                                     prefix=owner_prefix(CACHE_TEMP_PREFIX)))
        with self._lock:
            self._temps.append(temp)
        (temp / TREE).mkdir()
        return temp

    def store(self, digest: str, temp: Path, tree: LayerTree) -> LayerTree:
        """Publish a tree extracted into temp/tree as layers/<digest> and hold it; the tree,
        now not owned, is returned at its cached place. If another build stored the digest
        meanwhile, the tree stays in temp (owned: this build's, removed by close())."""
        _write_table(temp, tree)
        entry = self.entry(digest)
        entry.parent.mkdir(parents=True, exist_ok=True)
        # held before it is visible, so no evictor can take it between the rename and the hold
        hold = hold_artifact(temp / FACTS)
        try:
            os.rename(temp, entry)
        except OSError:
            hold.release()
            if not entry.is_dir():
                raise
            return tree
        with self._lock:
            self._temps.remove(temp)
            self._holds.append(hold)
        tree.root = entry / TREE
        tree.owned = False
        return tree

    # -- ending --------------------------------------------------------------------------------
    def release(self) -> None:
        """Let eviction have the entries this build used (its raw disk is written)."""
        with self._lock:
            holds, self._holds = self._holds, []
        for hold in holds:
            hold.release()

    def close(self) -> None:
        self.release()
        with self._lock:
            temps, self._temps = self._temps, []
        for temp in temps:
            shutil.rmtree(temp, ignore_errors=True)

    def discard(self, entry: Path) -> None:
        """Remove a broken entry unless another build holds it (then it is only not used)."""
        try:
            fd = os.open(entry / FACTS, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            fd = None
        try:
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return
            self.cache.retire(entry)
        finally:
            if fd is not None:
                os.close(fd)


def _write_table(temp: Path, tree: LayerTree) -> LayerFacts:
    """Write table.json and layer.json for the tree in temp/tree; their facts are measured on
    the tree itself."""
    meta: dict[str, Meta] = tree.meta  # type: ignore[assignment]
    found = dict(walk_entries(Path(temp) / TREE))
    if found.keys() != meta.keys():  # extraction keeps them equal; never store a mismatch
        raise BrokenEntry(f"{temp}: {len(found)} entries extracted, {len(meta)} in the table")
    seen: set[tuple[int, int]] = set()
    content = disk_bytes = cost = 0
    for st in found.values():
        first = (st.st_dev, st.st_ino) not in seen
        seen.add((st.st_dev, st.st_ino))
        if first:
            disk_bytes += st.st_blocks * 512
        size = st.st_size if stat.S_ISREG(st.st_mode) and first else 0
        content += size
        cost += entry_cost(size)
    markers = len(tree.whiteouts) + len(tree.opaque)
    cost += markers * entry_cost(0)
    rows = [[rel, m.mode, m.uid, m.gid, m.mtime_ns, m.rdev, int(m.implicit), found[rel].st_size]
            for rel, m in meta.items()]
    _write_json(temp / TABLE, {"v": VERSION, "meta": rows, "whiteouts": tree.whiteouts,
                               "opaque": tree.opaque})
    facts = LayerFacts(len(found) + markers, content, disk_bytes, cost)
    _write_json(temp / FACTS, {"v": VERSION, "entries": facts.entries, "bytes": facts.bytes,
                               "disk_bytes": facts.disk_bytes, "cost": facts.cost})
    return facts


def _write_json(path: Path, doc: object) -> None:
    with open(path, "w") as fh:
        json.dump(doc, fh, separators=(",", ":"))


def _load_table(entry: Path, layer: LayerSource) -> tuple[LayerTree, dict[str, int]]:
    """The entry's LayerTree (named and kinded after layer) and each entry's recorded size."""
    try:
        doc = json.loads((entry / TABLE).read_text())
        if doc.get("v") != VERSION:
            raise BrokenEntry(f"{entry / TABLE}: version {doc.get('v')!r}")
        tree = LayerTree(layer.name, layer.kind, entry / TREE, owned=False,
                         whiteouts=[str(w) for w in doc["whiteouts"]],
                         opaque=[str(o) for o in doc["opaque"]])
        sizes: dict[str, int] = {}
        for rel, mode, uid, gid, mtime, rdev, implicit, size in doc["meta"]:
            tree.meta[str(rel)] = Meta(int(mode), int(uid), int(gid), int(mtime), int(rdev),
                                       bool(implicit))
            sizes[str(rel)] = int(size)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BrokenEntry(f"{entry / TABLE}: {exc}") from exc
    return tree, sizes


def _verify(root: Path, tree: LayerTree, sizes: dict[str, int]) -> None:
    """Every entry of the table is in the tree with its type (device nodes and fifos are
    stand-in files) and size, every regular file with its mtime; nothing else is there."""
    try:
        found = dict(walk_entries(root))
    except OSError as exc:
        raise BrokenEntry(f"{root}: {exc}") from exc
    meta: dict[str, Meta] = tree.meta  # type: ignore[assignment]
    if found.keys() != meta.keys():
        raise BrokenEntry(f"{root}: {len(found)} entries, the table has {len(meta)}")
    for rel, st in found.items():
        want = meta[rel]
        # device nodes and fifos are stand-in regular files until the debugfs fixup
        staged = stat.S_IFMT(want.mode) if want.is_dir or want.is_symlink else stat.S_IFREG
        if stat.S_IFMT(st.st_mode) != staged:
            raise BrokenEntry(f"{root}/{rel}: not of its recorded type")
        if want.is_dir:
            continue
        if st.st_size != sizes[rel]:
            raise BrokenEntry(f"{root}/{rel}: {st.st_size} bytes, {sizes[rel]} recorded")
        if stat.S_ISREG(want.mode) and st.st_mtime_ns != want.mtime_ns:
            raise BrokenEntry(f"{root}/{rel}: changed since it was extracted")
