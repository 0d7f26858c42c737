"""A read-only look at what the template's layers will put in the image, before compositing:
enough to tell how the guest boots and where the first-boot runner must hook in.

Layers are looked at top-down (platform, apps, OS); a higher layer's whiteout hides the
path below it. Names are compared case-insensitively, as Windows does. A tar layer's
member list is read once per file version (cached by path, size and mtime), the way the
compositor reads it (compositor.tarlayer: a truncated archive fails at once), and with a
SpaceBudget the reading stops once the layers' members need more than the disk holds.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import paths
from .budget import SpaceBudget, entry_cost
from .errors import CompositorError
from .spec import LayerSource
from .tarlayer import ARCHIVE_ERRORS, members, open_tar, unreadable


class GuestOSError(CompositorError):
    """The layers do not show how the guest boots or where to hook the first-boot runner."""


@dataclass(frozen=True)
class Entry:
    rel: str  # the path as the layer spells it
    kind: str  # "file", "dir", "symlink", "other"
    link_target: str = ""


@dataclass(frozen=True)
class _TarIndex:
    entries: dict[str, Entry]  # lower-cased rel path -> entry
    whiteouts: frozenset[str]  # lower-cased rel paths hidden by this layer
    opaque: frozenset[str]  # lower-cased dirs whose lower children are hidden
    unpacked: int  # bytes the layer unpacks to (compositor.budget.entry_cost of each member)


class _TooBig(Exception):
    def __init__(self, member: str, needed: int) -> None:
        super().__init__(member, needed)
        self.member = member
        self.needed = needed


@dataclass(frozen=True)
class Wanted:
    """The paths (and path prefixes) the checks look up. A tar layer's index keeps only these
    and their ancestors, so a Windows layer with a million files costs a few entries."""

    paths: frozenset[str]  # lower-cased, with every ancestor
    prefixes: tuple[str, ...] = ()

    @classmethod
    def of(cls, *paths_: str, prefixes: tuple[str, ...] = ()) -> Wanted:
        keep: set[str] = set()
        for p in paths_:
            key = p.strip("/").lower()
            keep.add(key)
            keep.update(paths.ancestors(key))
        return cls(frozenset(keep), tuple(x.lower() for x in prefixes))

    def __add__(self, other: Wanted) -> Wanted:
        return Wanted(self.paths | other.paths, self.prefixes + other.prefixes)

    def keeps(self, key: str) -> bool:
        return key in self.paths or key.startswith(self.prefixes)


def _kind(member: tarfile.TarInfo) -> str:
    if member.isdir():
        return "dir"
    if member.issym():
        return "symlink"
    if member.isreg() or member.islnk():
        return "file"
    return "other"


@functools.lru_cache(maxsize=16)
def _tar_index(
    layer: str, path: str, size: int, mtime_ns: int, wanted: Wanted, limit: int
) -> _TarIndex:
    """Raises _TooBig once the members need more than limit bytes (read no further)."""
    entries: dict[str, Entry] = {}
    whiteouts: set[str] = set()
    opaque: set[str] = set()
    unpacked = 0
    with open_tar(Path(path)) as (tar, raw_fd):  # read errors: the caller names the layer
        for member in members(tar, raw_fd, layer, path):
            unpacked += entry_cost(member.size if member.isreg() else 0)
            if unpacked > limit:
                raise _TooBig(member.name, unpacked)
            try:
                rel = paths.clean_member_name(member.name)
            except paths.UnsafePath:
                continue  # the compositor reports it with the layer's name
            base = paths.base_of(rel)
            if base == paths.OPAQUE_MARKER:
                opaque.add(paths.parent_of(rel).lower())
            elif base.startswith(paths.WHITEOUT_PREFIX):
                whiteouts.add(paths.join(paths.parent_of(rel),
                                         base[len(paths.WHITEOUT_PREFIX):]).lower())
            elif rel and wanted.keeps(rel.lower()):
                entries[rel.lower()] = Entry(rel, _kind(member), member.linkname)
    return _TarIndex(entries, frozenset(whiteouts), frozenset(opaque), unpacked)


class LayerView:
    """One layer's names (directory or tar), and its files' bytes on request."""

    def __init__(
        self, layer: LayerSource, wanted: Wanted, budget: SpaceBudget | None = None
    ) -> None:
        self.layer = layer
        self.source = layer.source
        self.wanted = wanted
        self._index: _TarIndex | None = None
        if not self.source.is_dir():
            budget = budget or SpaceBudget.unlimited()
            with self._reading():
                st = self.source.stat()
                try:
                    self._index = _tar_index(layer.name, str(self.source), st.st_size,
                                             st.st_mtime_ns, wanted, budget.limit)
                except _TooBig as exc:
                    raise budget.too_big(layer.name, exc.member, exc.needed) from None
            budget.charge(layer.name, None, self._index.unpacked)

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """A corrupt, truncated or unreadable archive -> LayerError naming the layer."""
        try:
            yield
        except (OSError, *ARCHIVE_ERRORS) as exc:
            raise unreadable(self.layer.name, exc, self.source) from exc

    def _check_wanted(self, key: str, prefix: bool = False) -> None:
        if (key not in self.wanted.prefixes) if prefix else not self.wanted.keeps(key):
            raise ValueError(f"{key!r} is not among the paths this view was built for")

    def _dir_find(self, rel: str) -> Entry | None:
        current = self.source
        found: list[str] = []
        for part in rel.split("/"):
            if not current.is_dir() or current.is_symlink():
                return None
            try:
                names = os.listdir(current)
            except OSError:
                return None
            match = part if part in names else next(
                (n for n in names if n.lower() == part.lower()), None)
            if match is None:
                return None
            found.append(match)
            current = current / match
        if current.is_symlink():
            return Entry("/".join(found), "symlink", os.readlink(current))
        kind = "dir" if current.is_dir() else "file" if current.is_file() else "other"
        return Entry("/".join(found), kind)

    def find(self, rel: str) -> Entry | None:
        if self._index is None:
            return self._dir_find(rel)
        self._check_wanted(rel.lower())
        return self._index.entries.get(rel.lower())

    def has_file_starting(self, prefix: str) -> bool:
        """True when the layer has a file whose path starts with prefix (any case)."""
        key = prefix.lower()
        if self._index is not None:
            self._check_wanted(key, prefix=True)
            return any(k.startswith(key) for k in self._index.entries)
        parent_rel, base = paths.parent_of(key), paths.base_of(key)
        folder = self.source
        if parent_rel:
            parent = self._dir_find(parent_rel)
            if parent is None or parent.kind != "dir":
                return False
            folder = self.source / parent.rel
        return any(n.lower().startswith(base) for n in os.listdir(folder))

    def hides(self, rel: str) -> bool:
        """True when this layer deletes rel (or an ancestor) from the layers below it."""
        key = rel.lower()
        chain = [*paths.ancestors(key), key]
        if self._index is not None:
            return any(c in self._index.whiteouts for c in chain) or any(
                a in self._index.opaque for a in paths.ancestors(key))
        for c in chain:
            parent, base = paths.parent_of(c), paths.base_of(c)
            if self._dir_find(paths.join(parent, paths.WHITEOUT_PREFIX + base)) is not None:
                return True
        return any(self._dir_find(paths.join(a, paths.OPAQUE_MARKER)) is not None
                   for a in paths.ancestors(key))

    def read(self, entry: Entry) -> bytes:
        if self._index is None:
            return (self.source / entry.rel).read_bytes()
        with self._reading(), open_tar(self.source) as (tar, raw_fd):
            for member in members(tar, raw_fd, self.layer.name, self.source):
                if member.isreg() and paths.clean_member_name(member.name) == entry.rel:
                    data = tar.extractfile(member)
                    assert data is not None
                    return data.read()
        raise GuestOSError(f"layer {self.layer.name!r}: cannot read {entry.rel}")


class GuestTree:
    """The merged view of the layers, without merging them."""

    def __init__(self, layers: Sequence[LayerSource], wanted: Wanted | None = None,
                 budget: SpaceBudget | None = None) -> None:
        """budget: the tar layers' members together must fit it (directories are not counted)."""
        wanted = LINUX_WANTED if wanted is None else wanted
        # highest first
        self.views = [LayerView(layer, wanted, budget) for layer in reversed(layers)]

    def find(self, rel: str) -> tuple[LayerView, Entry] | None:
        for view in self.views:
            entry = view.find(rel)
            if entry is not None:
                return view, entry
            if view.hides(rel):
                return None
        return None

    def exists(self, rel: str) -> bool:
        return self.find(rel) is not None

    def read(self, rel: str) -> tuple[str, bytes] | None:
        """(path as spelled in the layer, content) of a regular file, or None."""
        found = self.find(rel)
        if found is None or found[1].kind != "file":
            return None
        view, entry = found
        return entry.rel, view.read(entry)

    def link_target(self, rel: str) -> str | None:
        found = self.find(rel)
        return found[1].link_target if found and found[1].kind == "symlink" else None


# ------------------------------------------------------------------ Linux
_SYSTEMD = ("usr/lib/systemd/systemd", "lib/systemd/systemd")
_INITS = ("sbin/init", "usr/sbin/init")
_KERNELS = "boot/vmlinuz"
#: what check_linux_boot looks at
LINUX_WANTED = Wanted.of(*_SYSTEMD, *_INITS, "etc/inittab", "windows/system32",
                         prefixes=(_KERNELS,))
_OTHER_INITS = {"busybox": "BusyBox init", "openrc-init": "OpenRC", "upstart": "Upstart",
                "runit-init": "runit", "s6-svscan": "s6"}


def check_linux_boot(tree: GuestTree) -> None:
    """Return when the guest boots with systemd (the first-boot unit will run); raise
    GuestOSError naming what was found otherwise.

    A layer set with neither an init nor a kernel is content only (no boot to hook), as in
    file-level tests, and passes.
    """
    has_systemd = any(tree.exists(p) for p in _SYSTEMD)
    inits = [(p, tree.find(p)) for p in _INITS]
    init = next(((p, f[1]) for p, f in inits if f is not None), None)
    if tree.exists("windows/system32"):
        raise GuestOSError("the OS layer is Windows (it has Windows/System32), but the template's "
                           "disk is ext4; set disk.filesystem: ntfs")
    if init is not None:
        path, entry = init
        target = entry.link_target
        name = os.path.basename(target) if entry.kind == "symlink" else ""
        if name == "systemd":
            return
        if name in _OTHER_INITS:
            raise GuestOSError(f"the OS layer boots with {_OTHER_INITS[name]} (/{path} -> {target}); "
                               "layerbot's first-boot runner needs systemd")
        if has_systemd and entry.kind == "symlink":
            return
        if tree.exists("etc/inittab") and not has_systemd:
            raise GuestOSError(f"the OS layer boots with SysV init (/{path} and /etc/inittab); "
                               "layerbot's first-boot runner needs systemd")
        if has_systemd:
            return
        raise GuestOSError(f"cannot tell how the OS layer boots: /{path} is not systemd and the "
                           "layers have no /lib/systemd/systemd; the first-boot runner needs systemd")
    if has_systemd:
        return
    if _has_kernel(tree):
        raise GuestOSError("cannot tell how the OS layer boots: it has a kernel in /boot but no "
                           "/sbin/init and no /lib/systemd/systemd")


def _has_kernel(tree: GuestTree) -> bool:
    return any(view.has_file_starting(_KERNELS) for view in tree.views)
