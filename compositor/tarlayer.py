"""Extract one tar layer (plain, gzip, zstd) into its own directory, safely and streaming.

File data is copied once: with copy_file_range from a plain tar, in 1 MiB chunks from a
compressed stream (decompressed at most 1 MiB at a time, so memory stays flat whatever the
ratio). Every entry is charged to the image's SpaceBudget before it is written, so an archive
that unpacks to more than the disk holds stops there. An archive that ends inside a member
fails at that member: at its header for a plain tar, at the short read for a stream.
Nothing is written outside dest: names are checked, parents are tracked so
no member is written through a symlink, and hard links must point at an earlier member.
Owners, modes and device numbers go to the metadata table, not to the files.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import lzma
import os
import shutil
import stat
import tarfile
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import zstandard
from isal import igzip, isal_zlib

from . import paths
from .budget import SpaceBudget, entry_cost
from .errors import LayerError
from .layertree import LayerTree, check_cancel
from .meta import Meta, implicit_dir
from .spec import LayerSource
from .tarheaders import BoundedTarInfo

_CHUNK = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_NO_COPY_RANGE = (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

ByteProgress = Callable[[int], None]

#: What reading a corrupt, truncated or non-archive layer raises (besides OSError, which also
#: means a failed write or a vanished file and is told apart by the caller). tarfile raises
#: ValueError for a bad sparse map (`GNU.sparse.map=abc`) and UnicodeError for bad names.
ARCHIVE_ERRORS: tuple[type[Exception], ...] = (
    tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError,
    zstandard.ZstdError, isal_zlib.error, ValueError, UnicodeError,
)


def unreadable(layer: str, exc: BaseException, source: Path | str | None = None) -> LayerError:
    """The LayerError for an archive that cannot be read, naming the layer, the archive file
    (when given) and why."""
    why = str(exc) or type(exc).__name__
    archive = str(source) if source is not None else None
    return LayerError(layer, None, f"cannot read the archive: {why}", archive=archive)


def check_archive(layer: str, source: Path, budget: SpaceBudget | None = None) -> int:
    """Read every member header (a plain tar: seeks only; a compressed one: decompressed, data
    skipped), so a corrupt, truncated or non-tar file is found before a publish. Each member is
    charged to the budget (stopping with DiskTooSmallError once they need more than the disk
    holds, TooManyEntriesError once they are more entries than it has inodes for). Returns
    the bytes charged; raises the LayerError of :func:`unreadable` or :func:`truncated`."""
    budget = budget or SpaceBudget.unlimited()
    charged = 0
    try:
        with open_tar(source) as (tar, raw_fd):
            for member in members(tar, raw_fd, layer, source):
                cost = entry_cost(member.size if member.isreg() else 0)
                budget.charge(layer, member.name, cost)
                budget.add_entry(layer, member.name)
                charged += cost
    except (OSError, *ARCHIVE_ERRORS) as exc:
        raise unreadable(layer, exc, source) from exc
    return charged


def truncated(layer: str, member: tarfile.TarInfo, source: Path | str) -> LayerError:
    return LayerError(layer, member.name, f"the archive ends inside this member (its header "
                      f"says {member.size} bytes)", archive=str(source))


def members(
    tar: tarfile.TarFile, raw_fd: int | None, layer: str, source: Path | str
) -> Iterator[tarfile.TarInfo]:
    """The archive's members, in order. Unlike iterating the TarFile, an archive that ends
    inside a member raises :func:`truncated` at once: tarfile would skip a stream's missing
    data block by block (hours for a header claiming 1 TiB) and keep every header in memory."""
    archive_size = os.fstat(raw_fd).st_size if raw_fd is not None else None
    while (member := tar.next()) is not None:
        tar.members.clear()
        data_end = tar.offset  # the next header: this member's data, padded to a block
        if archive_size is not None and data_end > archive_size:
            raise truncated(layer, member, source)
        yield member
        if archive_size is None:
            _skip_to(tar, data_end, layer, member, source)


def _skip_to(
    tar: tarfile.TarFile, end: int, layer: str, member: tarfile.TarInfo, source: Path | str
) -> None:
    stream = tar.fileobj
    assert stream is not None
    while (pos := stream.tell()) < end:
        if not stream.read(min(_CHUNK, end - pos)):
            raise truncated(layer, member, source)


@contextlib.contextmanager
def open_tar(source: Path) -> Iterator[tuple[tarfile.TarFile, int | None]]:
    """The archive as a TarFile, and the raw fd when members can be copied in-kernel (a plain
    tar). Compressed archives are read as streams ("r|"), decompressed by readers that return
    at most the bytes asked for (tarfile's own gzip stream inflates a whole input buffer at
    once: 1 GiB of memory for 1 MiB of a gzip bomb). Extended headers are bounded
    (compositor.tarheaders)."""
    with open(source, "rb") as fh:
        magic = fh.read(4)
        fh.seek(0)
        if magic.startswith(_GZIP_MAGIC):
            reader = igzip.IGzipFile(fileobj=fh, mode="rb")
            with reader, _stream_tar(reader) as tar:
                yield tar, None
        elif magic == _ZSTD_MAGIC:
            reader = zstandard.ZstdDecompressor().stream_reader(fh, read_size=_CHUNK)
            with reader, _stream_tar(reader) as tar:
                yield tar, None
        else:
            with tarfile.open(fileobj=fh, mode="r:", tarinfo=BoundedTarInfo) as tar:
                yield tar, fh.fileno()


def _stream_tar(reader: BinaryIO) -> tarfile.TarFile:
    return tarfile.open(fileobj=reader, mode="r|", bufsize=_CHUNK, tarinfo=BoundedTarInfo)


def extract_tar_layer(
    layer: LayerSource,
    dest: Path,
    cancel: threading.Event,
    on_bytes: ByteProgress | None = None,
    budget: SpaceBudget | None = None,
) -> LayerTree:
    tree = LayerTree(layer.name, layer.kind, dest, owned=True)
    writer = _Writer(tree, layer.source, cancel, on_bytes, budget)
    try:
        with open_tar(layer.source) as (tar, raw_fd):
            for member in members(tar, raw_fd, layer.name, layer.source):
                check_cancel(cancel)
                writer.add(tar, raw_fd, member)
    except ARCHIVE_ERRORS as exc:
        raise unreadable(layer.name, exc, layer.source) from exc
    return tree


class _Writer:
    def __init__(
        self, tree: LayerTree, source: Path, cancel: threading.Event,
        on_bytes: ByteProgress | None, budget: SpaceBudget | None,
    ) -> None:
        self.tree = tree
        self.source = source
        self.budget = budget or SpaceBudget.unlimited()
        self.member = ""  # the member being written, for the budget's message
        self.meta: dict[str, Meta] = tree.meta  # type: ignore[assignment]
        self.root = str(tree.root)
        self.cancel = cancel
        self.on_bytes = on_bytes
        self.in_kernel = True  # copy_file_range works (else sendfile)

    def fail(self, member: str, problem: str) -> LayerError:
        return LayerError(self.tree.name, member, problem)

    def add(self, tar: tarfile.TarFile, raw_fd: int | None, m: tarfile.TarInfo) -> None:
        try:
            rel = paths.clean_member_name(m.name)
        except paths.UnsafePath as exc:
            raise self.fail(m.name, f"unsafe path ({exc})") from None
        size = m.size if m.isreg() else 0
        self.member = m.name
        self.budget.check(self.tree.name, m.name, size)
        # the rounding and the inode now; the data itself chunk by chunk, before each write
        self.budget.charge(self.tree.name, m.name, entry_cost(size) - size)
        self.budget.add_entry(self.tree.name, m.name)
        if not rel:
            return  # the layer's root entry: the image root keeps its own metadata
        mtime_ns = int(m.mtime * 1_000_000_000)
        parent, base = paths.parent_of(rel), paths.base_of(rel)
        if base.startswith(paths.WHITEOUT_PREFIX):
            self.ensure_parents(m.name, rel, mtime_ns)
            if base == paths.OPAQUE_MARKER:
                self.tree.opaque.append(parent)
            elif not base.startswith(paths.WHITEOUT_PREFIX * 2):
                target = base[len(paths.WHITEOUT_PREFIX) :]
                if target in (".", ".."):
                    raise self.fail(m.name, "whiteout of '.' or '..'")
                self.tree.whiteouts.append(paths.join(parent, target))
            return
        self.ensure_parents(m.name, rel, mtime_ns)
        meta = Meta(stat.S_IMODE(m.mode), m.uid, m.gid, mtime_ns)
        path = os.path.join(self.root, rel)
        if m.isdir():
            self.make_dir(rel, path, Meta(stat.S_IFDIR | meta.mode, m.uid, m.gid, mtime_ns))
            return
        self.clear(rel, path)
        if m.isreg():
            self.write_file(tar, raw_fd, m, path)
            self.meta[rel] = Meta(stat.S_IFREG | meta.mode, m.uid, m.gid, mtime_ns)
        elif m.issym():
            os.symlink(m.linkname, path)
            self.meta[rel] = Meta(stat.S_IFLNK | 0o777, m.uid, m.gid, mtime_ns)
        elif m.islnk():
            self.hard_link(m, rel, path)
            return
        elif m.ischr() or m.isblk() or m.isfifo():
            if not m.isfifo() and self.tree.kind != "os":
                raise self.fail(m.name, f"device node in an {self.tree.kind} layer")
            kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK if m.isblk() else stat.S_IFIFO
            os.close(os.open(path, _FILE_FLAGS, 0o600))  # stand-in; the debugfs fixup makes the node
            rdev = os.makedev(m.devmajor, m.devminor) if kind != stat.S_IFIFO else 0
            self.meta[rel] = Meta(kind | meta.mode, m.uid, m.gid, mtime_ns, rdev)
        else:
            raise self.fail(m.name, f"unsupported member type {m.type!r}")
        os.utime(path, ns=(mtime_ns, mtime_ns), follow_symlinks=False)

    def ensure_parents(self, name: str, rel: str, mtime_ns: int) -> None:
        for anc in paths.ancestors(rel):
            known = self.meta.get(anc)
            if known is None:
                self.budget.add_entry(self.tree.name, name)
                os.mkdir(os.path.join(self.root, anc), 0o700)
                self.meta[anc] = implicit_dir(mtime_ns)
            elif known.is_symlink:
                raise self.fail(name, f"path passes through the symlink {anc!r}")
            elif not known.is_dir:
                raise self.fail(name, f"parent {anc!r} is not a directory")

    def make_dir(self, rel: str, path: str, meta: Meta) -> None:
        known = self.meta.get(rel)
        if known is None or not known.is_dir:
            if known is not None:
                os.unlink(path)
            os.mkdir(path, 0o700)
        self.meta[rel] = meta

    def clear(self, rel: str, path: str) -> None:
        """A later member replaces an earlier one of the same name."""
        known = self.meta.pop(rel, None)
        if known is None:
            return
        if known.is_dir:
            shutil.rmtree(path)
            prefix = rel + "/"
            for key in [k for k in self.meta if k.startswith(prefix)]:
                del self.meta[key]
        else:
            os.unlink(path)

    def hard_link(self, m: tarfile.TarInfo, rel: str, path: str) -> None:
        try:
            target = paths.clean_member_name(m.linkname)
        except paths.UnsafePath:
            target = ""
        known = self.meta.get(target) if target else None
        if known is None or known.is_dir:
            raise self.fail(
                m.name, f"hard link to {m.linkname!r}, a target outside the layer"
            )
        os.link(os.path.join(self.root, target), path, follow_symlinks=False)
        self.meta[rel] = known

    def write_file(
        self, tar: tarfile.TarFile, raw_fd: int | None, m: tarfile.TarInfo, path: str
    ) -> None:
        fd = os.open(path, _FILE_FLAGS, 0o600)
        try:
            if raw_fd is not None and not m.issparse():
                self.copy_range(raw_fd, fd, m.offset_data, m.size)
            else:
                src = tar.extractfile(m)
                if src is None:
                    raise self.fail(m.name, "no data for a regular file")
                try:
                    self.copy_stream(src, fd)
                except tarfile.ReadError as exc:  # tarfile's "unexpected end of data"
                    raise truncated(self.tree.name, m, self.source) from exc
        finally:
            os.close(fd)

    def copy_range(self, src: int, dst: int, offset: int, size: int) -> None:
        done = 0
        while done < size:
            check_cancel(self.cancel)
            count = min(size - done, 64 * _CHUNK)
            self.budget.charge(self.tree.name, self.member, count)
            if self.in_kernel:
                try:
                    n = os.copy_file_range(src, dst, count, offset + done)
                except OSError as exc:
                    self.budget.refund(count)
                    if exc.errno not in _NO_COPY_RANGE:
                        raise
                    self.in_kernel = False
                    continue
            else:
                n = os.sendfile(dst, src, offset + done, count)
            self.budget.refund(count - max(n, 0))
            if n <= 0:
                raise EOFError("archive ends inside a member")
            done += n
            if self.on_bytes:
                self.on_bytes(n)

    def copy_stream(self, src: BinaryIO, dst: int) -> None:
        while chunk := src.read(_CHUNK):
            check_cancel(self.cancel)
            self.budget.charge(self.tree.name, self.member, len(chunk))
            view = memoryview(chunk)
            while view:
                view = view[os.write(dst, view) :]
            if self.on_bytes:
                self.on_bytes(len(chunk))
