"""Staging tree -> partitioned raw disk with an NTFS filesystem (the "ntfs" filesystem builder).

Rootless and FUSE-free: wimlib captures the merged tree into an uncompressed WIM, mkntfs
formats a volume in its own file, ``wimlib-imagex apply`` writes the tree into that
unmounted volume through libntfs-3g, and the volume's data ranges are copied into the GPT
disk at 1 MiB (Microsoft basic data partition).

The same cache key gives the same volume: libntfs-3g stamps what it writes with the clock
(MFT change times, mkntfs's system files) and has no setting for it, so mkntfs, wimlib and
ntfslabel run under faketime, frozen at the build epoch; the serial number derives from the
key (ntfslabel --new-serial); the staging tree's access times, which wimlib captures, are set
to the entries' mtimes first.

Layers carry no Windows ACLs, so files get libntfs-3g's default security descriptor: owner
and group BUILTIN\\Administrators, an inheritable DACL giving Everyone full control. Ownership
and UNIX modes in the layers' metadata do not apply to NTFS.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import threading
import time
import uuid
from pathlib import Path

from . import disk, stage, tool_runner
from .errors import DiskTooSmallError, HostSpaceError, ToolFailedError, host_full
from .gpt import write_gpt
from .identity import DiskIdentity
from .meta import Meta
from .progress import Reporter
from .sparse import data_extents
from .threads import in_thread
from .tools import tool_path

MICROSOFT_BASIC_DATA = uuid.UUID("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7")
_MFT_RECORD = 1024
_LOGFILE_MAX = 64 << 20
_PERCENT = re.compile(r"\((\d+)%\)")
_COPY_CHUNK = 64 << 20
_UTC = {"TZ": "UTC"}


def _frozen_clock(epoch: int) -> list[str]:
    """A command prefix: the program sees the clock stopped at epoch (threads, monotonic clock
    left alone)."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch))
    return [tool_path("faketime"), "-m", "--exclude-monotonic", "-f", stamp]


def _pin_access_times(staging: Path, meta: dict[str, Meta], epoch: int,
                      cancel: threading.Event) -> None:
    """atime := mtime on every staged entry (the root: epoch), as wimlib records both.

    Entries of directory layers are hard links to the user's files, whose atime this sets too;
    their content, mtime and digest signature are unchanged.
    """
    from .layertree import check_cancel

    for count, (rel, entry) in enumerate(meta.items()):
        if count % 4096 == 0:
            check_cancel(cancel)
        os.utime(staging / rel, ns=(entry.mtime_ns, entry.mtime_ns), follow_symlinks=False)
    os.utime(staging, (epoch, epoch))


def ntfs_capacity(layout: disk.Layout, entries: int) -> int:
    """Bytes left for file data after NTFS's own metadata (MFT records, $LogFile, bitmaps)."""
    size = (layout.last_sector - layout.first_sector + 1) * disk.SECTOR
    return size - _LOGFILE_MAX - entries * _MFT_RECORD - size // 100


async def build_ntfs_disk(
    staging: Path, meta: dict[str, Meta], raw: Path, work: Path, size_gib: int,
    identity: DiskIdentity, cancel: threading.Event, report: Reporter,
) -> None:
    summary = await in_thread(cancel, stage.summarize, staging, meta, cancel)
    layout = disk.layout_for(size_gib)
    capacity = ntfs_capacity(layout, summary.entries)
    if summary.content_bytes > capacity:
        raise DiskTooSmallError(summary.content_bytes, capacity, size_gib)
    wim = work / "tree.wim"
    await in_thread(cancel, _pin_access_times, staging, meta, identity.epoch, cancel)
    report.stage(f"capturing {summary.entries} entries for NTFS (wimlib)", 0.55)
    await tool_runner.run([tool_path("wimlib-imagex"), "capture", staging, wim, "layerbot",
                      "--compress=none", f"--threads={max(1, os.cpu_count() or 1)}"])
    volume = work / "ntfs.img"
    sectors = layout.last_sector - layout.first_sector + 1

    def make_volume_file() -> None:
        with open(volume, "wb") as fh:
            fh.truncate(sectors * disk.SECTOR)

    await asyncio.to_thread(make_volume_file)
    report.stage("creating NTFS (mkntfs)", 0.62)
    frozen = _frozen_clock(identity.epoch)
    await tool_runner.run([*frozen, tool_path("mkntfs"), "-F", "-Q", "-q", "-s", str(disk.SECTOR),
                      "-p", str(layout.first_sector), "-H", "255", "-S", "63", "-L", "Windows",
                      volume, str(sectors)], env=_UTC)
    span = report.span("writing files into NTFS (wimlib apply)", 0.64, 0.74)

    def on_output(line: str) -> None:
        if match := _PERCENT.search(line):
            span(int(match.group(1)) / 100)

    try:
        await tool_runner.run([*frozen, tool_path("wimlib-imagex"), "apply", wim, "1", volume],
                         on_output=on_output, env=_UTC)
    except ToolFailedError as exc:
        if "space" in exc.stderr.lower():
            if host_full(wim.parent):
                raise HostSpaceError(wim.parent, "writing the NTFS volume") from exc
            raise DiskTooSmallError(summary.content_bytes, capacity, size_gib) from exc
        raise
    await asyncio.to_thread(wim.unlink)
    serial = identity.token("ntfs serial", 16)
    await tool_runner.run([*frozen, tool_path("ntfslabel"), "-q", f"--new-serial={serial}", volume],
                     env=_UTC)
    report.stage("partitioning the disk", 0.75)
    await asyncio.to_thread(_assemble, raw, layout, identity.seed, volume, cancel)


def _assemble(raw: Path, layout: disk.Layout, seed: str, volume: Path,
              cancel: threading.Event) -> None:
    with open(raw, "wb") as fh:
        fh.truncate(layout.disk_bytes)
    write_gpt(raw, total_sectors=layout.disk_bytes // disk.SECTOR, first=layout.first_sector,
              last=layout.last_sector, name="Windows", seed=seed, type_guid=MICROSOFT_BASIC_DATA)
    copy_sparse(volume, raw, layout.offset, cancel)


def copy_sparse(src: Path, dest: Path, offset: int, cancel: threading.Event) -> None:
    """Copy src's data ranges (holes skipped) into dest starting at byte offset."""
    from .layertree import check_cancel

    in_kernel = True  # copy_file_range, until it refuses (two filesystems: RAM and disk)
    with open(src, "rb") as fin, open(dest, "r+b") as fout:
        for start, end in data_extents(fin.fileno(), os.fstat(fin.fileno()).st_size):
            pos = start
            while pos < end:
                check_cancel(cancel)
                count = min(_COPY_CHUNK, end - pos)
                if in_kernel:
                    try:
                        n = os.copy_file_range(fin.fileno(), fout.fileno(), count, pos,
                                               offset + pos)
                    except OSError as exc:
                        if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS,
                                             errno.EOPNOTSUPP):
                            raise
                        in_kernel = False
                        continue
                else:
                    n = os.pwrite(fout.fileno(), os.pread(fin.fileno(), count, pos), offset + pos)
                if n == 0:
                    raise OSError(5, f"unexpected end of {src}")
                pos += n
