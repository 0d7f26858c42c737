"""Turn the raw disk into the platform's format with qemu-img (or tar for GCE), then verify it."""

from __future__ import annotations

import asyncio
import errno
import gzip
import json
import os
import re
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from . import tool_runner
from .errors import CompositorError, HostSpaceError, ToolFailedError
from .format_identity import pin_identity
from .identity import CONVERTED_TIME, KeyIdentity
from .sparse import punch_zero_blocks
from .tools import tool_path

GIB = 1 << 30
MIB = 1 << 20

#: format -> (qemu-img -O name, -o options)
_QEMU: dict[str, tuple[str, str | None]] = {
    "qcow2": ("qcow2", None),
    "vmdk": ("vmdk", "subformat=streamOptimized,adapter_type=lsilogic"),
    "vhd": ("vpc", "subformat=fixed,force_size"),
    #: XenServer's import_raw_vdi takes a dynamic VHD and writes only its allocated blocks
    "vhd-dynamic": ("vpc", "subformat=dynamic,force_size"),
    "vhdx": ("vhdx", "subformat=dynamic"),
}
#: formats qemu-img check supports (vpc does not)
_CHECKABLE = frozenset({"vmdk", "vhdx"})
_PROGRESS = re.compile(r"\((\d+(?:\.\d+)?)/100%\)")
_OLDGNU_MAGIC = b"ustar  \0"
#: ISA-L's levels are 0-3; its default 2 is within 1 % of gzip -6's size on disk data
GZIP_LEVEL = 2
GZIP_BLOCK = 1 << 20

Fraction = Callable[[float], None]


async def convert(raw: Path, fmt: str, out: Path, on_fraction: Fraction, ids: KeyIdentity) -> int:
    """Write raw as fmt to out; return the virtual size the guest sees.

    The values qemu-img or tar would take from a random source or the clock derive from ``ids``
    (the raw disk's key) instead, so one raw disk always gives the same bytes.
    """
    size = raw.stat().st_size
    if fmt == "raw":
        await asyncio.to_thread(os.link, raw, out)
        return await _verify_qemu(out, "raw", size, fmt)
    if fmt == "gce-tar":
        return await _gce_tar(raw, out, size, on_fraction)
    if fmt in ("vhd", "vhd-dynamic") and size % MIB:
        raise CompositorError(f"{fmt}: the raw disk is {size} bytes, not a whole number of MiB")
    qemu_fmt, options = _QEMU[fmt]

    def on_line(line: str) -> None:
        if match := _PROGRESS.search(line):
            on_fraction(float(match.group(1)) / 100)

    argv: list[str | Path] = [tool_path("qemu-img"), "convert", "-p", "-f", "raw", "-O", qemu_fmt]
    if options:
        argv += ["-o", options]
    await _qemu_convert([*argv, raw, out], out, fmt, on_line)
    await asyncio.to_thread(pin_identity, fmt, out, ids)
    if fmt in _CHECKABLE:
        await _check_qemu(out, qemu_fmt, fmt)
    return await _verify_qemu(out, qemu_fmt, size, fmt)


async def reformat(source: Path, source_fmt: str, fmt: str, out: Path, on_fraction: Fraction) -> int:
    """Write a disk already converted (``source_fmt``) as ``fmt`` (a target that composes
    another one wanting its own format); verified like :func:`convert`. Returns the virtual size."""
    if fmt == source_fmt or fmt not in (*_QEMU, "raw") or source_fmt not in _QEMU:
        raise CompositorError(f"cannot rewrite a {source_fmt} disk as {fmt}")
    src_qemu = _QEMU[source_fmt][0]
    info = json.loads((await tool_runner.run(
        [tool_path("qemu-img"), "info", "--output=json", "-f", src_qemu, source])).stdout)
    size = int(info["virtual-size"])
    qemu_fmt, options = _QEMU.get(fmt, ("raw", None))

    def on_line(line: str) -> None:
        if match := _PROGRESS.search(line):
            on_fraction(float(match.group(1)) / 100)

    argv: list[str | Path] = [tool_path("qemu-img"), "convert", "-p", "-f", src_qemu, "-O", qemu_fmt]
    if options:
        argv += ["-o", options]
    await _qemu_convert([*argv, source, out], out, fmt, on_line)
    if fmt in _CHECKABLE:
        await _check_qemu(out, qemu_fmt, fmt)
    return await _verify_qemu(out, qemu_fmt, size, fmt)


async def _qemu_convert(argv: list[str | Path], out: Path, fmt: str, on_line: Callable[[str], None]) -> None:
    """qemu-img convert; ENOSPC is the folder of ``out`` being full (qemu-img names no file)."""
    try:
        await tool_runner.run(argv, on_output=on_line)
    except ToolFailedError as exc:
        if "No space left on device" in exc.stderr:
            raise HostSpaceError(out.parent, f"converting the disk to {fmt}") from exc
        raise


async def _check_qemu(out: Path, qemu_fmt: str, fmt: str) -> None:
    """qemu-img check of the rewritten metadata (reads tables only, not the data)."""
    try:
        await tool_runner.run([tool_path("qemu-img"), "check", "-f", qemu_fmt, out])
    except ToolFailedError as exc:
        raise CompositorError(f"{fmt}: qemu-img check found errors in {out.name}: {exc}") from exc


async def _verify_qemu(out: Path, qemu_fmt: str, size: int, fmt: str) -> int:
    """qemu-img reads the written file back as ``qemu_fmt`` and reports the expected size."""
    done = await tool_runner.run(
        [tool_path("qemu-img"), "info", "--output=json", "-f", qemu_fmt, out]
    )
    info = json.loads(done.stdout)
    virtual = int(info["virtual-size"])
    if virtual != size:
        raise CompositorError(f"{fmt}: qemu-img wrote a {virtual} byte disk, expected {size}")
    if fmt == "vmdk":
        data = info.get("format-specific", {}).get("data", {})
        if data.get("create-type") != "streamOptimized":
            raise CompositorError(f"vmdk: create-type is {data.get('create-type')!r}")
    return virtual


async def _gce_tar(raw: Path, out: Path, size: int, on_fraction: Fraction) -> int:
    """disk.raw, sparse, in an oldgnu tar, gzip-compressed; its size a whole number of GiB.
    Progress: the tar stream's bytes compressed so far against the disk's data bytes (tar reads
    only the data: its stream is the data plus a few headers and the sparse map)."""
    if size % GIB:
        raise CompositorError(f"gce-tar: disk.raw must be a whole number of GiB, not {size} B")
    await asyncio.to_thread(punch_zero_blocks, raw)  # tar's sparse map: from the bytes alone
    data = await asyncio.to_thread(data_bytes, raw)
    loop = asyncio.get_running_loop()
    reported = [0]  # whole percent, only written by the consumer thread

    def on_bytes(done: int) -> None:
        percent = min(99, done * 100 // max(data, 1))
        if percent > reported[0]:
            reported[0] = percent
            loop.call_soon_threadsafe(on_fraction, percent / 100)

    # tar names the member after the file it reads: a link named disk.raw, next to out, or
    # next to the raw disk when that is on another filesystem (a work folder in RAM)
    same_fs = os.stat(raw.parent).st_dev == os.stat(out.parent).st_dev
    folder = (out.parent if same_fs else raw.parent) / (out.name + ".d")
    folder.mkdir()
    try:
        await asyncio.to_thread(os.link, raw, folder / "disk.raw")
        threads = len(os.sched_getaffinity(0))
        await tool_runner.read_output(gce_tar_command(folder),
                                      lambda tar: gzip_blocks(tar, out, threads, on_bytes))
    finally:
        await asyncio.to_thread(_remove_tree, folder)
    await asyncio.to_thread(_verify_gce_tar, out, size)
    on_fraction(1.0)
    return size


def data_bytes(path: Path) -> int:
    """The bytes of ``path`` that are data, not holes (SEEK_DATA/SEEK_HOLE; a filesystem
    without them reports the whole file as data)."""
    total = 0
    with open(path, "rb") as fh:
        fd, end, where = fh.fileno(), os.fstat(fh.fileno()).st_size, 0
        while where < end:
            try:
                start = os.lseek(fd, where, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # only a hole from here to the end
                    break
                raise
            where = os.lseek(fd, start, os.SEEK_HOLE)
            total += where - start
    return total


def gce_tar_command(folder: Path) -> list[str | Path]:
    """``tar`` of ``folder/disk.raw`` to stdout.

    Only the disk's data is read: ``--hole-detection=seek`` finds it with SEEK_DATA/SEEK_HOLE
    (where the filesystem cannot, tar falls back to reading). The holes are then neither read
    nor compressed: the sparse member holds only the data and its map. The map is the
    filesystem's; ``punch_zero_blocks`` first makes it follow from the disk's bytes alone, so
    the same disk gives the same tar wherever and however it was written."""
    return [
        tool_path("tar"), "--format=oldgnu", "--sparse", "--hole-detection=seek",
        "--numeric-owner", "--owner=0", "--group=0", "--mode=0644", f"--mtime=@{CONVERTED_TIME}",
        "-C", folder, "-cf", "-", "disk.raw",
    ]


def gzip_blocks(source: BinaryIO, out: Path, threads: int,
                on_bytes: Callable[[int], None] | None = None) -> None:
    """Compress ``source`` to ``out`` with ISA-L's gzip on ``threads`` threads (bench/gce_tar.py:
    about 6 times pigz -6's speed for 1 % more bytes). Every write is one whole block, the
    last excepted: the output then depends on the bytes only, not on how the pipe delivered
    them nor on the thread count; the header carries no time or name. ``on_bytes`` gets the
    bytes read so far after each block."""
    from isal import igzip_threaded

    done = 0
    with open(out, "wb") as fh, igzip_threaded.open(
            fh, "wb", compresslevel=GZIP_LEVEL, threads=max(1, threads),
            block_size=GZIP_BLOCK) as sink:
        while block := _read_block(source, GZIP_BLOCK):
            sink.write(block)
            done += len(block)
            if on_bytes is not None:
                on_bytes(done)


def _read_block(source: BinaryIO, size: int) -> bytes:
    """``size`` bytes, fewer only at the end (a pipe's read may return less)."""
    block = source.read(size)
    while block and len(block) < size and (more := source.read(size - len(block))):
        block += more
    return block


def _verify_gce_tar(out: Path, size: int) -> None:
    with tarfile.open(out, "r|gz") as tar:
        member = tar.next()
        if member is None or member.name != "disk.raw" or member.size != size:
            raise CompositorError("gce-tar: the archive's first member is not disk.raw")
    with gzip.open(out, "rb") as fh:
        header = fh.read(512)
    if header[257:265] != _OLDGNU_MAGIC:
        raise CompositorError("gce-tar: disk.raw is not stored in oldgnu format")


def _remove_tree(folder: Path) -> None:
    for child in folder.iterdir():
        child.unlink()
    folder.rmdir()
