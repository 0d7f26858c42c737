"""Where a build works: a RAM-backed folder (tmpfs) when the image fits, else work_dir.

A build writes its layers out as a staging tree, then mke2fs copies that tree into the raw
disk: two full writes that never need to reach a disk, since both are deleted once the disk is
converted. On a tmpfs they are memory copies. Measured on the bench machine (1 GiB, 9,342
files): extracting the five layers took 6.9 s into ext4 and 1.5 s into tmpfs, mke2fs -d 2.2-2.6 s
writing to ext4 and 1.3-1.6 s writing to tmpfs (it writes 4 KiB at a time: 273,000 pwrite64 per
GiB).

RAM is only used when it is plentiful: a build reserves twice the bytes its layers can unpack
to (staging tree + raw disk, which overlap while mke2fs runs; NTFS builds three times, the WIM
too) and goes to RAM only when that is at most half of both the memory available and the
tmpfs' free space, less what other live builds reserved. Reservations are files
``<root>/reserve-<host>-<pid>-<random>`` holding the byte count, taken under an flock so two
builds cannot both take the last of it; a dead build's reservation and work folder are removed
then (and by :func:`compositor.sweep_stale`).

The bound is an estimate for compressed layers whose unpacked size their header does not say
(4 times their size); the build's SpaceBudget stops the extraction with ScratchFull
when the layers unpack to more than was reserved, and the build starts again in work_dir.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import zstandard

from .budget import entry_cost
from .errors import CompositorError, HostSpaceError
from .spec import LayerSource
from .sweep import BUILD_PREFIX, RESERVE_PREFIX, owner_prefix, reserved_by_live_builds, sweep_ram_root

#: the folder tried when none is configured
DEFAULT_RAM_DIRS = (Path("/dev/shm"),)
#: "off", or the tmpfs folder to use instead of DEFAULT_RAM_DIRS (for the compositor's child
#: processes and tests; a runner passes its settings explicitly)
ENV_VAR = "LAYERBOT_RAM_SCRATCH"
#: a compressed layer whose unpacked size is unknown is assumed to unpack to this many times
#: its size (zstd and gzip of an OS layer: 2.5-3.5x)
UNKNOWN_RATIO = 4
#: the copies of the layers' data a build has in its work folder at once: ext4, the staging
#: tree and the raw disk; NTFS, also the WIM wimlib captures (then the volume file)
EXT4_COPIES, NTFS_COPIES = 2, 3
#: the share of free memory (and of the tmpfs' free space) builds may reserve together
RAM_SHARE = 0.5
#: see _tar_cost
TAR_SLACK = 16 << 20
#: the raw disk holds the files plus its own metadata (measured: +4.5 MiB for 1 GiB, 9,342 files)
_FS_SLACK = 64 << 20


@dataclass(frozen=True)
class Scratch:
    """The build's work folder; ``ram_limit`` is the bytes its staging tree may take in RAM
    (None: on disk)."""

    work: Path
    ram_limit: int | None = None
    reservation: Path | None = None

    @property
    def in_ram(self) -> bool:
        return self.ram_limit is not None

    def release(self) -> None:
        if self.reservation is not None:
            with contextlib.suppress(FileNotFoundError):
                self.reservation.unlink()


def ram_root(configured: Path | None = None) -> Path | None:
    """This user's folder on a writable tmpfs (created 0700), or None when there is none (or
    $LAYERBOT_RAM_SCRATCH is "off")."""
    setting = os.environ.get(ENV_VAR, "")
    if configured is None and setting == "off":
        return None
    if configured is None and setting:
        configured = Path(setting)
    for base in (configured,) if configured is not None else DEFAULT_RAM_DIRS:
        try:
            if not _is_tmpfs(base) or not os.access(base, os.W_OK | os.X_OK):
                continue
            root = base / f"layerbot-{os.getuid()}"
            root.mkdir(mode=0o700, exist_ok=True)
            if root.is_symlink() or root.stat().st_uid != os.getuid():
                continue  # someone else's: never work in it
            return root
        except OSError:
            continue
    return None


def choose(work_dir: Path, layers: Sequence[LayerSource], disk_bytes: int, *,
           ram_dir: Path | None = None, use_ram: bool = True, copies: int = EXT4_COPIES) -> Scratch:
    """A fresh work folder: in RAM when ``copies`` times what the layers unpack to fits (see
    the module doc), else in work_dir. Anything that goes wrong on the way to RAM (a layer that
    cannot be read, a tmpfs out of inodes) means work_dir: the build then says what it is."""
    with _work_dir_errors(Path(work_dir)):
        Path(work_dir).mkdir(parents=True, exist_ok=True)
    root = ram_root(ram_dir) if use_ram else None
    if root is not None:
        reservation: Path | None = None
        try:
            bound = min(unpacked_bound(layers, disk_bytes), disk_bytes)
            reservation = _reserve(root, copies * bound + _FS_SLACK)
            if reservation is not None:
                work = Path(tempfile.mkdtemp(prefix=owner_prefix(BUILD_PREFIX), dir=root))
                return Scratch(work, ram_limit=bound, reservation=reservation)
        except OSError:
            if reservation is not None:
                reservation.unlink(missing_ok=True)
    with _work_dir_errors(Path(work_dir)):
        return Scratch(Path(tempfile.mkdtemp(prefix=owner_prefix(BUILD_PREFIX), dir=work_dir)))


@contextlib.contextmanager
def _work_dir_errors(work_dir: Path) -> Iterator[None]:
    """An OSError making the work dir or a folder in it is a CompositorError naming it."""
    try:
        yield
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise HostSpaceError(work_dir, "creating a build folder") from exc
        raise CompositorError(
            f"cannot create a build folder in the work dir {work_dir}: {exc.strerror}; make it "
            "writable by the user layerbot runs as, or set runner.work_dir in the catalog") from exc


def unpacked_bound(layers: Sequence[LayerSource], cap: int) -> int:
    """What the layers unpack to, at most (an estimate for some compressed ones); counting
    stops at ``cap``."""
    total = 0
    for layer in layers:
        total += _layer_bound(Path(layer.source), cap - total)
        if total >= cap:
            return cap
    return total


def _layer_bound(source: Path, cap: int) -> int:
    if source.is_dir():
        return _tree_cost(source, cap)
    size = source.stat().st_size
    with open(source, "rb") as fh:
        head = fh.read(18)
        if head[:2] == b"\x1f\x8b":
            if size < 1 << 32:  # ISIZE is the last member's size mod 2^32
                fh.seek(-4, os.SEEK_END)
                isize = int.from_bytes(fh.read(4), "little")
                if isize >= size:  # else a multi-member file, or larger than 4 GiB
                    return _tar_cost(isize)
            return size * UNKNOWN_RATIO
        if head[:4] == b"\x28\xb5\x2f\xfd":
            with contextlib.suppress(zstandard.ZstdError):
                known = zstandard.frame_content_size(head)
                if known >= 0:
                    return _tar_cost(int(known))
            return size * UNKNOWN_RATIO
    return _tar_cost(size)


def _tar_cost(size: int) -> int:
    """What a tar of ``size`` bytes takes unpacked, as the SpaceBudget counts (whole blocks and
    an inode per entry): a quarter more for files that do not fill their last block, and room
    for a few thousand entries smaller than a block."""
    return size + size // 4 + TAR_SLACK


def _tree_cost(root: Path, cap: int) -> int:
    total = 0
    stack = [str(root)]
    while stack and total < cap:
        with contextlib.suppress(OSError), os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                    total += entry_cost(0)
                elif entry.is_file(follow_symlinks=False):
                    total += entry_cost(entry.stat(follow_symlinks=False).st_size)
                else:
                    total += entry_cost(0)
    return total


def _reserve(root: Path, need: int) -> Path | None:
    with _locked(root):
        sweep_ram_root(root)  # a build killed since (its runner may not restart for days)
        free = min(_mem_available(), _free_bytes(root))
        taken = reserved_by_live_builds(root, RESERVE_PREFIX)
        if need > RAM_SHARE * free - taken:
            return None
        fd, name = tempfile.mkstemp(dir=root, prefix=owner_prefix(RESERVE_PREFIX))
        with os.fdopen(fd, "w") as fh:
            fh.write(str(need))
        return Path(name)


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _is_tmpfs(path: Path) -> bool:
    # os.statvfs has no f_type; /proc/self/mountinfo names the filesystem of the mount point
    try:
        real = os.path.realpath(path)
        best, fstype = "", ""
        with open("/proc/self/mountinfo") as fh:
            for line in fh:
                fields = line.split()
                mount = fields[4].replace("\\040", " ")
                sep = fields.index("-")
                if (real == mount or real.startswith(mount.rstrip("/") + "/")) \
                        and len(mount) >= len(best):
                    best, fstype = mount, fields[sep + 1]
        return fstype == "tmpfs"
    except (OSError, ValueError, IndexError):
        return False


def _mem_available() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


