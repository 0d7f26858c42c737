"""Local folder target: copies the artifact to ``path/<template>/<task-id>.<ext>``.

There is no VM here, so the task goes straight to Done once the file is in place.
The copy skips holes (SEEK_DATA/SEEK_HOLE), so a sparse raw disk stays sparse.

The copy goes to ``<task-id>.<ext>.partial`` (a STAGING resource, removed by the cleanup
after success) and is hard-linked into place at the end. It is resumable: a runner that takes
the task over continues the partial file from its length once a hash of that prefix matches
the artifact's (else from byte 0). The copying runner holds an exclusive ``flock`` on it from
before the copy until the link and both fsyncs (file, then folder) are done, so a runner that
lost the task but is still copying is waited for rather than written over. Once locked, a
runner checks that the path still names the file it locked (else it opens it again), and
never writes into a copy already linked into place: that one is finished.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import hashlib
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, Literal

from adapters.base import (
    FORMAT_MAX_GIB,
    Capability,
    CatalogPath,
    ConnectorConfig,
    DiskFormat,
    InsufficientSpaceError,
    PlatformError,
    PlatformStep,
    PublishContext,
    Published,
)
from adapters.resources import Lifetime, Resource, latest
from adapters.steps import Step
from bot.messages import human_bytes
from compositor.paths import UnsafePath, join_inside
from compositor.sparse import data_extents
from compositor.spec import FORMAT_EXTENSIONS
from compositor.threads import in_thread

_CHUNK = 8 << 20
_LOCK_POLL = 0.1


class _Stopped(Exception):
    """The copy thread saw the task's cancellation."""


class LocalFile(Resource):
    """The published file (kept once the publish succeeded). ``identity`` (inode and
    mtime, as inodes are reused) is the task's own copy, hard-linked into place: cleanup
    never removes another file at that path (None in rows recorded before: removed by path)."""

    kind: ClassVar[str] = "local.file"
    path: Path
    identity: tuple[int, int] | None = None

    def describe(self) -> str:
        return f"file {self.path}"


class LocalUpload(Resource):
    """The partial copy, renamed into place at the end; resumable."""

    kind: ClassVar[str] = "local.upload"
    lifetime: ClassVar[Lifetime] = Lifetime.STAGING
    path: Path

    def describe(self) -> str:
        return f"file {self.path}"


class Config(ConnectorConfig):
    type: Literal["local"]
    path: CatalogPath
    format: DiskFormat = "qcow2"

    def disk_limit_gib(self) -> int | None:
        return FORMAT_MAX_GIB.get(self.format)


class Adapter:
    type_name: ClassVar[str] = "local"
    platform: ClassVar[str] = "Local folder"
    capabilities: ClassVar[Capability] = Capability.RESUMABLE_UPLOAD

    def __init__(self, config: Config) -> None:
        self.config = config

    @classmethod
    def format_for(cls, config: Config) -> DiskFormat:
        """The format from the connector's configuration alone (readiness: no adapter made)."""
        return config.format

    def disk_format(self) -> DiskFormat:
        return self.format_for(self.config)

    def destination(self, ctx: PublishContext) -> Path:
        ext = FORMAT_EXTENSIONS[self.config.format]
        try:
            return join_inside(self.config.path, ctx.template, f"{ctx.task_id}.{ext}")
        except UnsafePath as exc:
            raise PlatformError(f"refusing to publish template {ctx.template!r}: {exc}") from None

    def steps(self, ctx: PublishContext) -> list[Step[PublishContext]]:
        return [PlatformStep("copy", self, self._copy_step)]

    async def _copy_step(self, ctx: PublishContext) -> None:
        dest = self.destination(ctx)
        partial = dest.with_name(f"{dest.name}.partial")
        mine = latest(ctx.resources, LocalFile)
        if dest.exists() and (mine is None or not _is(dest, mine.identity)):
            raise PlatformError(f"{dest} already exists and was not written by task "
                                f"{ctx.task_id}; it was left untouched")
        upload = latest(ctx.resources, LocalUpload)
        if upload is None or upload.path != partial:
            if partial.exists():
                raise PlatformError(f"{partial} already exists and was not written by task "
                                    f"{ctx.task_id}; it was left untouched")
            upload = LocalUpload(path=partial)
            await ctx.record(upload)
        else:  # taken over: this step's own from now on, so its cleanup after success removes it
            adopted = LocalUpload(path=partial)
            await ctx.replace(upload, adopted)
            upload = adopted
        try:
            offset = await self.uploaded_bytes(upload, ctx.artifact)
        except OSError as exc:  # e.g. a file where the template's folder goes
            raise PlatformError(f"cannot write to the folder {dest.parent}: {exc.strerror}") from exc
        if offset:
            await ctx.progress(offset / max(ctx.artifact.stat().st_size, 1),
                               f"resuming the copy at byte {offset}")
        loop = asyncio.get_running_loop()

        def report(fraction: float) -> None:
            asyncio.run_coroutine_threadsafe(ctx.progress(fraction, "copying"), loop)

        stop = threading.Event()
        locked = _LockedPartial(partial)
        try:
            if mine is None or not _is(dest, mine.identity):
                await in_thread(stop, locked.lock, stop)
                await in_thread(stop, _copy, ctx.artifact, locked, dest, offset, report, stop)
                mine = LocalFile(path=dest, identity=_fd_identity(locked.fd))
                await ctx.record(mine)
                # waited for even when cancelled: the cleanup must see the link, and the
                # lock (released by close() below) must cover it
                await in_thread(stop, _link_into_place, locked, dest)
        except FileExistsError:
            raise PlatformError(f"{dest} appeared while copying and was not written by task "
                                f"{ctx.task_id}; it was left untouched") from None
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise InsufficientSpaceError(f"no space left in {self.config.path}") from exc
            raise PlatformError(f"cannot write {dest}: {exc.strerror}") from exc
        finally:
            locked.close()
        size = dest.stat().st_size
        ctx.published = Published(
            link=dest.resolve().as_uri(),
            summary=f"{dest.name} ({self.config.format}, {human_bytes(size)})",
            resource=mine,
        )

    async def uploaded_bytes(self, upload: Resource, artifact: Path) -> int:
        """The length of the partial copy if its content matches the artifact's prefix."""
        assert isinstance(upload, LocalUpload)
        return await asyncio.to_thread(_verified_prefix, upload.path, artifact)

    def next_steps(self, published: Published) -> str:
        path = published.resource.path if isinstance(published.resource, LocalFile) \
            else published.link
        return (
            f"The layered image is in {path}. Copy it to your platform and create a VM from "
            "it; on first boot the guest runs the connector's scripts and shuts down."
        )

    async def remove(self, resource: Resource) -> list[str]:
        assert isinstance(resource, LocalFile | LocalUpload), resource
        if isinstance(resource, LocalFile) and resource.identity is not None \
                and not _is(resource.path, resource.identity):
            return []  # gone, or another file now: not this task's to remove
        try:
            resource.path.unlink()
        except (FileNotFoundError, NotADirectoryError):  # a file where a folder goes: none there
            return []
        return [resource.describe()]

    @staticmethod
    def legacy_resources(old: Mapping[str, Any]) -> list[Resource]:
        """The dict a task recorded before resources were typed."""
        out: list[Resource] = []
        if old.get("file"):
            out.append(LocalFile(path=old["file"]))
        if old.get("partial"):
            out.append(LocalUpload(path=old["partial"]))
        return out

    @staticmethod
    def legacy_published(old: Mapping[str, Any]) -> Resource | None:
        return LocalFile(path=old["file"]) if old.get("file") else None

    async def close(self) -> None:
        """Nothing to release."""


def _identity(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


def _fd_identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_ino, st.st_mtime_ns


def _names(fd: int, path: Path) -> bool:
    """True if ``path`` names the open file ``fd``."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


class _LockedPartial:
    """The partial copy, open and flock'ed by this runner from ``lock()`` until ``close()``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = -1
        #: another runner held the lock first: what the file holds must be checked again
        self.waited = False

    def lock(self, stop: threading.Event) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                self.waited = _lock(fd, stop) or self.waited
                if _names(fd, self.path):
                    self.fd = fd
                    return
            except BaseException:
                os.close(fd)
                raise
            # the runner we waited for removed or replaced the file: lock the one there now
            os.close(fd)
            self.waited = True

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _link_into_place(locked: _LockedPartial, dest: Path) -> None:
    """Hard-link the finished copy (locked, fsynced) to ``dest``, never over another file
    (FileExistsError), and make the new name durable."""
    if _names(locked.fd, dest):
        return  # a runner that lost the task linked this very copy
    os.link(locked.path, dest)
    folder = os.open(dest.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def _is(path: Path, identity: tuple[int, int] | None) -> bool:
    try:
        return identity is not None and _identity(path) == identity
    except FileNotFoundError:
        return False


def _verified_prefix(partial: Path, artifact: Path) -> int:
    try:
        length = partial.stat().st_size
    except FileNotFoundError:
        return 0
    if length == 0 or length > artifact.stat().st_size:
        return 0
    with open(partial, "rb") as have, open(artifact, "rb") as want:
        if _digest(have, length) != _digest(want, length):
            return 0
    return length


def _digest(fh: BinaryIO, length: int) -> bytes:
    h = hashlib.blake2b()
    left = length
    while left > 0:
        block = fh.read(min(_CHUNK, left))
        if not block:
            break
        h.update(block)
        left -= len(block)
    return h.digest()


def _lock(fd: int, stop: threading.Event) -> bool:
    """Wait for a runner that lost the task but still writes this file to stop; True if
    it had to wait."""
    waited = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return waited
        except BlockingIOError:
            waited = True
            if stop.wait(_LOCK_POLL):
                raise _Stopped from None


def _copy(src: Path, locked: _LockedPartial, dest: Path, offset: int,
          report: Callable[[float], None], stop: threading.Event) -> None:
    """Copy src's data extents to the locked partial file from ``offset`` on (what it already
    holds stays), then fsync it."""
    size = src.stat().st_size
    fd = locked.fd
    st = os.fstat(fd)
    if st.st_nlink > 1:
        if _names(fd, dest):
            return  # finished and linked into place by a runner that lost the task
        raise PlatformError(f"{locked.path} has other names than {dest.name}; it was left untouched")
    if offset and (locked.waited or st.st_size < offset) \
            and _verified_prefix(locked.path, src) != offset:
        offset = 0  # the other writer changed it meanwhile
    os.truncate(fd, offset)
    with open(src, "rb") as fin:
        extents = data_extents(fin.fileno(), size)
        total = sum(e - s for s, e in extents) or 1
        done = sum(min(e, offset) - s for s, e in extents if s < offset)
        for start, end in extents:
            pos = max(start, offset)
            while pos < end:
                if stop.is_set():
                    raise _Stopped
                n = _copy_range(fin.fileno(), fd, min(_CHUNK, end - pos), pos)
                if n == 0:
                    raise OSError(errno.EIO, f"unexpected end of {src}")
                pos += n
                done += n
                report(done / total)
    os.ftruncate(fd, size)
    os.fsync(fd)  # the data is on disk before a name makes it the published image


#: copy_file_range refuses these where the kernel or the filesystems cannot copy between the
#: two files: across filesystems (EXDEV, e.g. a cache on local disk and the folder on NFS)
_NO_COPY_RANGE = frozenset({errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL})


def _copy_range(src: int, dst: int, count: int, pos: int) -> int:
    """Copy up to ``count`` bytes at ``pos`` of src to the same offset of dst; the bytes copied."""
    try:
        return os.copy_file_range(src, dst, count, pos, pos)
    except OSError as exc:
        if exc.errno not in _NO_COPY_RANGE:
            raise
    os.lseek(dst, pos, os.SEEK_SET)
    return os.sendfile(dst, src, pos, count)
