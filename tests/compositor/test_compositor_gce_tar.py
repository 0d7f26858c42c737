"""gce-tar: disk.raw in a gzip-compressed oldgnu tar, built without reading the disk's holes."""

from __future__ import annotations

import asyncio
import gzip
import io
import os
import re
import subprocess
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from compositor import tool_runner
from compositor.convert import GZIP_BLOCK, convert, gce_tar_command, gzip_blocks
from compositor.errors import CompositorError
from compositor.identity import KeyIdentity

GIB = 1 << 30
MIB = 1 << 20


def sparse_disk(path: Path, size: int, extents: list[tuple[int, int]]) -> int:
    """A sparse file of ``size`` bytes with random data at (offset, length); the data's bytes."""
    with open(path, "wb") as fh:
        fh.truncate(size)
        for offset, length in extents:
            fh.seek(offset)
            fh.write(os.urandom(length))
    return sum(length for _, length in extents)


def bytes_read_by(argv: list[str | Path], stdout: Path) -> int:
    """What ``argv`` read with read() calls (/proc/PID/io rchar), taken once it has exited but
    before it is reaped. Its output goes to a file: GNU tar reads nothing when it is /dev/null."""
    with open(stdout, "wb") as out:
        proc = subprocess.Popen([os.fspath(a) for a in argv], stdout=out, stderr=subprocess.PIPE)
    try:
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        io = Path(f"/proc/{proc.pid}/io").read_text()
    finally:
        _, err = proc.communicate()
    assert proc.returncode == 0, err
    match = re.search(r"^rchar: (\d+)$", io, re.MULTILINE)
    assert match, io
    return int(match.group(1))


def test_tar_reads_the_data_and_not_the_holes(tmp_path: Path) -> None:
    """A 2 GiB disk holding 3 MiB: tar reads about 3 MiB (seek hole detection), not 2 GiB."""
    folder = tmp_path / "d"
    folder.mkdir()
    data = sparse_disk(folder / "disk.raw", 2 * GIB,
                       [(MIB, MIB), (700 * MIB, MIB), (2 * GIB - MIB, MIB)])
    read = bytes_read_by(gce_tar_command(folder), tmp_path / "out.tar")
    assert read <= 1.1 * data + 64 * 1024, f"tar read {read} bytes for {data} bytes of data"
    assert (tmp_path / "out.tar").stat().st_size < data + MIB


class Trickle(io.RawIOBase):
    """A pipe that hands out at most ``piece`` bytes per read."""

    def __init__(self, data: bytes, piece: int) -> None:
        self.data, self.piece, self.pos = data, piece, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(self.piece, len(buffer), len(self.data) - self.pos)
        buffer[:n] = self.data[self.pos:self.pos + n]
        self.pos += n
        return n


def test_the_gzip_depends_only_on_the_bytes(tmp_path: Path) -> None:
    """Not on the thread count (a runner's cores) nor on how the pipe delivers the stream."""
    data = os.urandom(3 * GZIP_BLOCK) + b"disk.raw " * GZIP_BLOCK
    outputs = set()
    for threads, piece in ((1, 65536), (2, 777_777), (4, 3 * GZIP_BLOCK + 5)):
        out = tmp_path / f"{threads}.gz"
        gzip_blocks(io.BufferedReader(Trickle(data, piece)), out, threads)
        outputs.add(out.read_bytes())
    [only] = outputs
    assert gzip.decompress(only) == data
    assert only[4:8] == bytes(4) and only[3] & 0x08 == 0  # no time stamp, no file name


async def test_the_tarball_lists_disk_raw_of_the_disk_size(tmp_path: Path) -> None:
    raw = tmp_path / "composited.img"
    sparse_disk(raw, GIB, [(0, MIB), (GIB // 2 + 4096, 3 * 4096)])
    out = tmp_path / "disk.tar.gz"
    assert await convert(raw, "gce-tar", out, lambda _: None, KeyIdentity("k")) == GIB
    listing = subprocess.run(["tar", "-tvzf", out], capture_output=True, text=True, check=True)
    [line] = listing.stdout.splitlines()
    fields = line.split()
    assert (fields[0], fields[1], fields[2], fields[-1]) == ("-rw-r--r--", "0/0", str(GIB),
                                                            "disk.raw")
    extracted = tmp_path / "x"
    extracted.mkdir()
    subprocess.run(["tar", "-xzf", out, "-C", extracted], check=True)
    assert subprocess.run(["cmp", raw, extracted / "disk.raw"]).returncode == 0
    assert not list(tmp_path.glob("*.d")), "the hard-link folder is removed"


async def test_converting_reports_progress_as_the_data_is_archived(tmp_path: Path) -> None:
    """gce-tar's progress: the tar stream compressed so far against the disk's data bytes."""
    raw = tmp_path / "composited.img"
    sparse_disk(raw, GIB, [(i * 100 * MIB, MIB) for i in range(8)])
    fractions: list[float] = []
    await convert(raw, "gce-tar", tmp_path / "disk.tar.gz", fractions.append, KeyIdentity("k"))
    assert fractions[-1] == 1.0 and fractions == sorted(fractions)
    assert len([f for f in fractions if 0 < f < 1]) >= 4, fractions  # one a block, 8 blocks


def test_data_bytes_counts_the_extents_not_the_holes(tmp_path: Path) -> None:
    from compositor.convert import data_bytes

    raw = tmp_path / "disk.raw"
    data = sparse_disk(raw, GIB, [(MIB, MIB), (GIB - 2 * MIB, 2 * MIB)])
    assert data_bytes(raw) == data


async def test_a_disk_that_is_not_whole_gib_is_refused(tmp_path: Path) -> None:
    raw = tmp_path / "composited.img"
    sparse_disk(raw, GIB + MIB, [(0, 4096)])
    with pytest.raises(CompositorError, match=r"gce-tar: disk.raw must be a whole number of GiB, "
                                              r"not 1074790400 B"):
        await convert(raw, "gce-tar", tmp_path / "disk.tar.gz", lambda _: None, KeyIdentity("k"))


class ConsumerFailed(Exception):
    pass


async def test_a_failing_consumer_stops_the_tool() -> None:
    """`yes` writes forever: a consumer that fails must not leave it blocked on a full pipe."""
    def consume(source: BinaryIO) -> None:
        source.read(65536)
        raise ConsumerFailed("disk full")

    with pytest.raises(ConsumerFailed):
        await asyncio.wait_for(tool_runner.read_output(["yes"], consume), 20)


async def test_cancelling_stops_the_tool_and_the_consumer() -> None:
    read: list[int] = []

    def consume(source: BinaryIO) -> None:
        while block := source.read(65536):
            read.append(len(block))

    task = asyncio.create_task(tool_runner.read_output(["yes"], consume))
    while not read:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 20)
    count = len(read)
    await asyncio.sleep(0.1)
    assert len(read) == count, "the consumer stopped: it reached the end of the killed tool's output"


async def test_zeros_written_out_or_left_as_holes_give_the_same_archive(tmp_path: Path) -> None:
    """The sparse map follows the disk's bytes, not how they were written: a disk whose zero
    blocks were written out (as ext4 reports an unwritten extent whose pages are cached) gives
    the archive a disk with holes there gives. The bytes of the raw disk do not change."""
    data = os.urandom(64 * 1024)
    holes, written = tmp_path / "holes.raw", tmp_path / "written.raw"
    with open(holes, "wb") as fh:
        fh.truncate(GIB)
        fh.seek(MIB)
        fh.write(data)
    with open(written, "wb") as fh:
        fh.truncate(GIB)
        fh.write(bytes(MIB))
        fh.write(data)
        fh.write(bytes(3 * MIB + 100))
    before = written.read_bytes()[: 5 * MIB]
    archives = []
    for raw in (holes, written):
        out = tmp_path / f"{raw.stem}.tar.gz"
        await convert(raw, "gce-tar", out, lambda _: None, KeyIdentity("k"))
        archives.append(out.read_bytes())
    assert archives[0] == archives[1]
    assert written.read_bytes()[: 5 * MIB] == before
    assert os.stat(written).st_blocks * 512 < 2 * MIB  # the zeros became holes
