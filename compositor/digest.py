"""Layer digests: sha256 of the content, computed once and remembered by a cheap signature.

An archive's digest is the sha256 of its bytes; its signature is (size, mtime, inode).
The archive is not decoded here, so a corrupt one gets a digest (extraction then fails with
a LayerError); a layer that cannot be read at all fails with a LayerError naming it.
A directory's digest hashes, in sorted order, every entry's path, type, mode, owner, mtime,
device number, symlink target or content hash, and hard-link structure; its signature hashes
the lstat of every entry (a walk without reading any file).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path

from .errors import LayerError
from .sweep import DIGEST_TEMP_PREFIX, owner_prefix

_VERSION = 1


def layer_digest(source: Path, *, cache_dir: Path, layer: str | None = None) -> str:
    """sha256 (hex) of a layer's content; reused while the layer's signature is unchanged.
    Raises LayerError (naming `layer`, else the source's file name) when it cannot be read."""
    source = Path(source).absolute()
    try:
        signature = _signature(source)
        cached = cached_digest(source, cache_dir=cache_dir, signature=signature)
        if cached is not None:
            return cached
        digest = _dir_digest(source) if source.is_dir() else _file_digest(source)
    except OSError as exc:
        where = exc.filename or source
        raise LayerError(layer or source.name, str(where),
                         f"cannot read the layer: {exc.strerror or exc}") from exc
    _store(cache_dir, source, signature, digest)
    return digest


def cached_digest(
    source: Path, *, cache_dir: Path, signature: str | None = None
) -> str | None:
    """The remembered digest if the layer has not changed since, without reading its data."""
    source = Path(source).absolute()
    try:
        signature = signature or _signature(source)
        entry = json.loads(_entry_path(cache_dir, source).read_text())
    except (OSError, ValueError):
        return None
    if entry.get("v") == _VERSION and entry.get("signature") == signature:
        return str(entry["digest"])
    return None


def _entry_path(cache_dir: Path, source: Path) -> Path:
    key = hashlib.sha256(os.fsencode(source)).hexdigest()
    return Path(cache_dir) / "digests" / f"{key}.json"


def _store(cache_dir: Path, source: Path, signature: str, digest: str) -> None:
    path = _entry_path(cache_dir, source)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps({"v": _VERSION, "source": str(source), "signature": signature,
                       "digest": digest})
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=owner_prefix(DIGEST_TEMP_PREFIX))
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _signature(source: Path) -> str:
    """A cheap change detector. Not ctime: building an image hard-links the files of a
    directory layer into the staging tree, which changes their ctime (and link count)
    without changing their content."""
    st = os.stat(source)
    if not stat.S_ISDIR(st.st_mode):
        return f"file:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}:{st.st_dev}"
    h = hashlib.sha256()
    for rel, est in walk_entries(source):
        h.update(
            f"{rel}\0{est.st_mode}\0{est.st_uid}\0{est.st_gid}\0{est.st_size}\0"
            f"{est.st_mtime_ns}\0{est.st_ino}\n".encode(errors="surrogateescape")
        )
    return "dir:" + h.hexdigest()


def _file_digest(source: Path) -> str:
    with open(source, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _dir_digest(source: Path) -> str:
    h = hashlib.sha256()
    first_path: dict[tuple[int, int], str] = {}
    for rel, st in walk_entries(source):
        kind = stat.S_IFMT(st.st_mode)
        if stat.S_ISREG(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in first_path:
                body = "link:" + first_path[key]
            else:
                first_path[key] = rel
                body = _file_digest(source / rel)
        elif stat.S_ISLNK(st.st_mode):
            body = "symlink:" + os.readlink(source / rel)
        else:
            body = ""
        h.update(
            f"{rel}\0{kind:o}\0{stat.S_IMODE(st.st_mode):o}\0{st.st_uid}\0{st.st_gid}\0"
            f"{st.st_mtime_ns}\0{st.st_rdev}\0{st.st_size}\0{body}\n".encode(
                errors="surrogateescape"
            )
        )
    return h.hexdigest()


def walk_entries(root: Path) -> list[tuple[str, os.stat_result]]:
    """Every entry below root, sorted by path, with its lstat."""
    out: list[tuple[str, os.stat_result]] = []
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        for entry in os.scandir(os.path.join(root, rel_dir)):
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            st = entry.stat(follow_symlinks=False)
            out.append((rel, st))
            if stat.S_ISDIR(st.st_mode):
                stack.append(rel)
    out.sort(key=lambda item: item[0])
    return out
